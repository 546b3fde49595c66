"""What an attempt costs: the estimate before it, the provider's word after it, and refunds.

The local route is charged per second of output (its estimate: the configured compute speed per
resolution at the compute rate), not by metered compute: its compute time varies with the machine's
load (0.2-0.9 s per output second measured), so a metered charge ran over the estimate the budget held.
The metered compute stays on the attempt as `reported_cost`, for the reconciliation report.
"""

from __future__ import annotations

import contextlib

from adapters.base import TaskStatus
from broker.schema import Attempt
from pricing.catalog import RouteSpec
from pricing.money import Money, UnknownPrice
from pricing.rules import PriceUnit
from pricing.unpriced import book_unpriced


def route_key(attempt: Attempt) -> str:
    """The catalog key (`provider/model`) of the route an attempt went to."""
    return f"{attempt.provider}/{attempt.model}"


def refund(route: RouteSpec | None, status: TaskStatus, attempt: Attempt) -> Money | None:
    """What the provider gave back (its reported charge, else the estimate); None without a refund."""
    if not status.refunded:
        return None
    if attempt.unpriced:  # no price to convert the provider's amount with: the bound that was booked
        return attempt.estimated_cost_usd or Money.zero()
    if status.reported_cost is not None and route is not None and route.price is not None:
        with contextlib.suppress(UnknownPrice):
            refunded = route.price.reported_to_money(status.reported_cost)
            if refunded.micros > 0:
                return refunded
    return attempt.estimated_cost_usd or Money.zero()


def cost(route: RouteSpec | None, status: TaskStatus, attempt: Attempt, *, succeeded: bool) -> Money:
    """What the attempt really cost: the provider's report if it can be converted, else the estimate
    for a delivered video and nothing for a failed one (failed renders are refunded or unbilled). An
    unpriced route books the policy's ceiling (`pricing.unpriced`), never 0 for a charged render."""
    if attempt.unpriced and attempt.estimated_cost_usd is not None:
        ceiling = attempt.estimated_cost_usd
        booked = book_unpriced(ceiling, status.reported_cost, succeeded=succeeded, refunded=status.refunded)
        return booked.cost
    if status.refunded:
        return Money.zero()
    if route is not None and route.price is not None and route.price.unit is PriceUnit.USD_PER_COMPUTE_HOUR:
        tariff = attempt.estimated_cost_usd or Money.zero()
        return tariff if succeeded else Money.zero()
    if status.reported_cost is not None and route is not None and route.price is not None:
        try:
            return route.price.reported_to_money(status.reported_cost)
        except UnknownPrice:
            pass
    if succeeded and attempt.estimated_cost_usd is not None:
        return attempt.estimated_cost_usd
    return Money.zero()


def reported_text(status: TaskStatus | None) -> str | None:
    """The provider's own cost figure with its unit ("25 credits"), as the attempt keeps it."""
    if status is None or status.reported_cost is None:
        return None
    return f"{status.reported_cost.amount.normalize():f} {status.reported_cost.unit.value}"
