"""Booking an attempt on an unpriced route, used under a team's `allow_unpriced_max_usd` ceiling.

The ceiling is what the quote showed, what the budget reserved, and what is booked for a delivered
video: an upper bound, never 0, marked `unpriced` wherever it appears, until an operator prices the
route. The provider's own figure (e.g. doitong's `creditCost`) is kept beside it, in its own unit,
because without a USD rate it cannot be converted.
"""

from __future__ import annotations

from dataclasses import dataclass

from pricing.money import Money
from pricing.units import ReportedCost


@dataclass(frozen=True, slots=True)
class UnpricedBooking:
    """What to book for an unpriced attempt, and what the provider said it charged."""

    cost: Money
    reported: str | None  # "42 credits": the provider's amount in its unit, shown beside the bound


def book_unpriced(
    ceiling: Money, reported: ReportedCost | None, *, succeeded: bool, refunded: bool
) -> UnpricedBooking:
    """The cost of an attempt on an unpriced route: the ceiling for a delivered video, or for a failure
    the provider says it charged for; 0 only for a refunded or unbilled failure (as for priced routes)."""
    shown = None if reported is None else f"{reported.amount.normalize():f} {reported.unit.value}"
    if refunded:
        return UnpricedBooking(Money.zero(), shown)
    charged = reported is not None and reported.amount > 0
    return UnpricedBooking(ceiling if succeeded or charged else Money.zero(), shown)
