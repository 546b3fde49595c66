"""Stopping a task at its provider and booking what it cost: after a user's cancel or at its deadline.

The provider's word decides: the task is cancelled where the provider can cancel it, then read again.
A task that has ended is booked at what the provider reports it charged (Runway keeps a task cancelled
while RUNNING at its full price; one cancelled while PENDING or THROTTLED is refunded). A task still
going (muvi cancels only pending jobs; PixelAPI cannot cancel at all) or one the provider would not
describe is booked at what the broker believes it will be charged, marked `unconfirmed_usd`, and the
job is put on the reconciliation index (`broker.jobs.reconcile`) to ask again at a slow cadence.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import structlog

from adapters.base import TaskHandle, TaskState, TaskStatus
from adapters.errors import ProviderError
from broker.jobs.context import StepContext
from broker.jobs.costs import cost, refund, reported_text, route_key
from broker.schema import Attempt
from pricing.catalog import RouteSpec
from pricing.money import Money, UnknownPrice

log = structlog.get_logger("broker.jobs")
RECONCILE_EVERY_S = 600.0  # how often an unconfirmed charge is asked about again
RECONCILE_FOR_S = 48 * 3600.0  # and for how long: Runway keeps tasks 24-48 h; then it stays unconfirmed


@dataclass(frozen=True, slots=True)
class Booking:
    """What an attempt is booked at when it is stopped, and on whose word."""

    spent: Money
    refunded: Money | None = None
    reported: str | None = None
    unconfirmed: bool = False
    status: TaskStatus | None = None
    cancel_sent: bool = False  # the task was still going, so the broker asked the provider to cancel it


def book(route: RouteSpec | None, attempt: Attempt, status: TaskStatus | None) -> Booking:
    """The booking of an attempt whose task is in `status` (None: the provider would not say)."""
    if status is not None and status.state.terminal:
        succeeded = status.state is TaskState.SUCCEEDED
        return Booking(
            cost(route, status, attempt, succeeded=succeeded),
            refund(route, status, attempt),
            reported_text(status),
            status=status,
        )
    return Booking(believed(route, attempt, status), None, reported_text(status), True, status)


def believed(route: RouteSpec | None, attempt: Attempt, status: TaskStatus | None) -> Money:
    """What a task still going will most likely be charged: the provider's running figure where it
    gives one (muvi's costMicroCents, PixelAPI's credits_used), else the attempt's estimate."""
    if status is not None and status.reported_cost is not None and route is not None and route.price:
        with contextlib.suppress(UnknownPrice):
            return route.price.reported_to_money(status.reported_cost)
    return attempt.estimated_cost_usd or Money.zero()


async def read_status(ctx: StepContext, attempt: Attempt, handle: TaskHandle) -> TaskStatus | None:
    """The task's status, or None when the provider cannot be asked now."""
    adapter = ctx.adapters.get(attempt.provider)
    if adapter is None:
        return None
    try:
        return await adapter.status(handle)
    except ProviderError as exc:
        log.warning("provider_status_failed", provider=attempt.provider, code=exc.code.value)
        return None


async def stop_task(ctx: StepContext, attempt: Attempt, handle: TaskHandle) -> Booking:
    """Cancel the attempt's task at its provider (where it can) and book what the provider says.

    A task that has already ended is not cancelled, only booked: Runway's DELETE on a finished task
    deletes it, and with it the output and the word on what it cost."""
    status = await read_status(ctx, attempt, handle)
    adapter = ctx.adapters.get(attempt.provider)
    if adapter is not None and (status is None or not status.state.terminal):
        try:
            await adapter.cancel(handle)
        except ProviderError as exc:  # e.g. muvi: "only pending jobs can be cancelled"
            log.warning("provider_cancel_failed", provider=attempt.provider, code=exc.code.value)
        status = await read_status(ctx, attempt, handle)
        booking = book(ctx.routes.get(route_key(attempt)), attempt, status)
        return replace(booking, cancel_sent=True)
    return book(ctx.routes.get(route_key(attempt)), attempt, status)


async def follow_up(ctx: StepContext, job_id: str, booking: Booking) -> None:
    """Put the job on the reconciliation index when its booking awaits the provider's word.

    Called before the booking is saved: an index entry for a booking that never got saved finds
    nothing to confirm and is dropped, while the other order could lose the follow-up in a crash."""
    if booking.unconfirmed:
        await ctx.store.schedule_reconcile(job_id, ctx.clock() + RECONCILE_EVERY_S)
