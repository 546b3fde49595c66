"""Price rules: a provider's price, in its own unit, as data; each computes the price of one request.

A rule's `amount` is in the rule's unit (credits, USD, muvi micro-cents, USD per compute hour).
Variations replace or add to it: `by_resolution` replaces the amount for a resolution, `audio_amount`
replaces it when audio is on, `audio_surcharge` adds to it, `by_duration` replaces it for a duration.
Conversion to USD happens in `Decimal` and is rounded once, by `Money.from_decimal`.
"""

from __future__ import annotations

import weakref
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from broker.schema import Resolution
from pricing.money import Money, UnknownPrice
from pricing.units import CostUnit, ReportedCost

MICRO_CENT_USD = Decimal("0.000001")
SECONDS_PER_HOUR = Decimal(3600)

# Prices already worked out, per live rule. A rule is frozen, so its price for one request never changes;
# quoting prices every route for every request, and Decimal arithmetic is most of that cost. Keyed by
# id() because a rule holds dicts and can't be hashed; an entry is dropped when its rule is collected.
_USD_MEMO: dict[int, dict[tuple[int, Resolution, bool], Money]] = {}


class PriceUnit(StrEnum):
    """A provider's billing unit, as written in `config.yaml`."""

    CREDITS_PER_SECOND = "credits_per_second"
    CREDITS_PER_VIDEO = "credits_per_video"
    USD_PER_SECOND = "usd_per_second"
    USD_PER_VIDEO = "usd_per_video"
    MICRO_CENTS_PER_SECOND = "micro_cents_per_second"
    MICRO_CENTS_PER_VIDEO = "micro_cents_per_video"
    USD_PER_COMPUTE_HOUR = "usd_per_compute_hour"

    @property
    def per_second(self) -> bool:
        """Whether the amount is per second of output (else per video, or per compute hour)."""
        return self in (
            PriceUnit.CREDITS_PER_SECOND,
            PriceUnit.USD_PER_SECOND,
            PriceUnit.MICRO_CENTS_PER_SECOND,
        )

    @property
    def in_credits(self) -> bool:
        """Whether the amount is in the provider's credits (and needs `usd_per_credit`)."""
        return self in (PriceUnit.CREDITS_PER_SECOND, PriceUnit.CREDITS_PER_VIDEO)

    @property
    def billed_in(self) -> CostUnit:
        """The unit a provider bills (and reports) one render in."""
        if self.in_credits:
            return CostUnit.CREDITS
        if self in (PriceUnit.MICRO_CENTS_PER_SECOND, PriceUnit.MICRO_CENTS_PER_VIDEO):
            return CostUnit.MICRO_CENTS
        if self is PriceUnit.USD_PER_COMPUTE_HOUR:
            return CostUnit.COMPUTE_SECONDS
        return CostUnit.USD


class PriceRule(BaseModel):
    """How one route is billed. See the module docstring for the variation fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unit: PriceUnit
    amount: Decimal = Field(ge=0)
    usd_per_credit: Decimal | None = Field(default=None, gt=0)
    by_resolution: dict[Resolution, Decimal] = Field(default_factory=dict)
    audio_amount: Decimal | None = Field(default=None, ge=0)
    audio_surcharge: Decimal | None = Field(default=None, ge=0)
    by_duration: dict[int, Decimal] = Field(default_factory=dict)
    # Local backend only: measured compute seconds per second of output, by resolution.
    compute_s_per_output_s: dict[Resolution, Decimal] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_unit_fields(self) -> PriceRule:
        if self.unit.in_credits and self.usd_per_credit is None:
            raise ValueError(f"unit {self.unit.value} needs usd_per_credit")
        if self.unit is PriceUnit.USD_PER_COMPUTE_HOUR and not self.compute_s_per_output_s:
            raise ValueError("usd_per_compute_hour needs compute_s_per_output_s to estimate a price")
        return self

    def amount_for(self, duration_s: int, resolution: Resolution, audio: bool) -> Decimal:
        """The amount in the rule's own unit for one request (USD for compute-time rules)."""
        amount = self.by_duration.get(duration_s, self.by_resolution.get(resolution, self.amount))
        if audio and self.audio_amount is not None:
            amount = self.audio_amount
        if audio and self.audio_surcharge is not None:
            amount += self.audio_surcharge
        if self.unit is PriceUnit.USD_PER_COMPUTE_HOUR:
            per_output_s = self.compute_s_per_output_s.get(resolution)
            if per_output_s is None:
                raise UnknownPrice(f"no measured compute speed for {resolution.value}")
            return amount * per_output_s * duration_s / SECONDS_PER_HOUR
        return amount * duration_s if self.unit.per_second else amount

    @property
    def varies_by_resolution(self) -> bool:
        """Whether the price depends on the output resolution."""
        return bool(self.by_resolution) or self.unit is PriceUnit.USD_PER_COMPUTE_HOUR

    @property
    def varies_by_audio(self) -> bool:
        """Whether turning audio on changes the price."""
        return self.audio_amount is not None or self.audio_surcharge is not None

    def billed(self, duration_s: int, resolution: Resolution, audio: bool) -> ReportedCost:
        """What one request is billed in the provider's own unit (compute seconds for compute rules)."""
        if self.unit is PriceUnit.USD_PER_COMPUTE_HOUR:
            per_output_s = self.compute_s_per_output_s.get(resolution)
            if per_output_s is None:
                raise UnknownPrice(f"no measured compute speed for {resolution.value}")
            return ReportedCost(per_output_s * duration_s, CostUnit.COMPUTE_SECONDS)
        return ReportedCost(self.amount_for(duration_s, resolution, audio), self.unit.billed_in)

    def usd(self, duration_s: int, resolution: Resolution, audio: bool) -> Money:
        """The price in USD of one request on this route."""
        memo = _USD_MEMO.get(id(self))
        if memo is None:
            memo = _USD_MEMO[id(self)] = {}
            weakref.finalize(self, _USD_MEMO.pop, id(self), None)
        key = (duration_s, resolution, audio)
        price = memo.get(key)
        if price is None:
            price = memo[key] = self.to_money(self.amount_for(duration_s, resolution, audio))
        return price

    def to_money(self, amount: Decimal) -> Money:
        """Convert an amount in this rule's unit to USD (compute rules already give USD)."""
        if self.unit.in_credits:
            assert self.usd_per_credit is not None
            return Money.from_decimal(amount * self.usd_per_credit)
        if self.unit in (PriceUnit.MICRO_CENTS_PER_SECOND, PriceUnit.MICRO_CENTS_PER_VIDEO):
            return Money.from_decimal(amount * MICRO_CENT_USD)
        return Money.from_decimal(amount)

    def reported_to_money(self, reported: ReportedCost) -> Money:
        """Convert a cost the provider reported in its unit to USD; UnknownPrice if it can't be."""
        if reported.unit is CostUnit.USD:
            return Money.from_decimal(reported.amount)
        if reported.unit is CostUnit.MICRO_CENTS:
            return Money.from_decimal(reported.amount * MICRO_CENT_USD)
        if reported.unit is CostUnit.CREDITS:
            if self.usd_per_credit is None:
                raise UnknownPrice("the provider reported credits but the route has no usd_per_credit")
            return Money.from_decimal(reported.amount * self.usd_per_credit)
        if self.unit is not PriceUnit.USD_PER_COMPUTE_HOUR:
            raise UnknownPrice("compute seconds reported for a route not priced by compute time")
        return Money.from_decimal(reported.amount * self.amount / SECONDS_PER_HOUR)
