"""Billing units as providers report them, before conversion to USD."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum


class CostUnit(StrEnum):
    CREDITS = "credits"  # Runway cost.credits, PixelAPI credits_used, doitong creditCost
    MICRO_CENTS = "micro_cents"  # muvi costMicroCents: worth $0.000001 each (see providers.md)
    USD = "usd"
    COMPUTE_SECONDS = "compute_seconds"  # the local backend's metered render time


@dataclass(frozen=True, slots=True)
class ReportedCost:
    """A cost in the provider's own unit, as the provider (or the local meter) reported it."""

    amount: Decimal
    unit: CostUnit
