"""What an attempt costs: the estimate before it, the provider's word after it, and refunds."""

from __future__ import annotations

import contextlib

from adapters.base import TaskStatus
from broker.schema import Attempt, JobRequest
from pricing.catalog import RouteSpec
from pricing.money import Money, UnknownPrice


def route_key(attempt: Attempt) -> str:
    """The catalog key (`provider/model`) of the route an attempt went to."""
    return f"{attempt.provider}/{attempt.model}"


def estimate(route: RouteSpec, request: JobRequest) -> Money | None:
    """The route's price for the request; None when it is unpriced or the price does not cover it."""
    if route.price is None:
        return None
    try:
        return route.price.usd(request.duration_s, request.resolution, request.audio)
    except UnknownPrice:
        return None


def refund(route: RouteSpec | None, status: TaskStatus, attempt: Attempt) -> Money | None:
    """What the provider gave back (its reported charge, else the estimate); None without a refund."""
    if not status.refunded:
        return None
    if status.reported_cost is not None and route is not None and route.price is not None:
        with contextlib.suppress(UnknownPrice):
            refunded = route.price.reported_to_money(status.reported_cost)
            if refunded.micros > 0:
                return refunded
    return Money.parse(attempt.estimated_cost_usd) if attempt.estimated_cost_usd else Money.zero()


def cost(route: RouteSpec | None, status: TaskStatus, attempt: Attempt, *, succeeded: bool) -> Money:
    """What the attempt really cost: the provider's report if it can be converted, else the estimate
    for a delivered video and nothing for a failed one (failed renders are refunded or unbilled)."""
    if status.refunded:
        return Money.zero()
    if status.reported_cost is not None and route is not None and route.price is not None:
        try:
            return route.price.reported_to_money(status.reported_cost)
        except UnknownPrice:
            pass
    if succeeded and attempt.estimated_cost_usd is not None:
        return Money.parse(attempt.estimated_cost_usd)
    return Money.zero()
