"""Polling a provider task to its end on the adapter's `PollSchedule`, with injected clock and sleep.

The first poll waits near the provider's own estimate, later polls back off, no two polls are closer
than the schedule's minimum interval (Runway asks for at least 5 s), and the whole wait is bounded by
the schedule's deadline, measured from when the task was submitted. Status polls are never billed, so
a transient failure of one poll (rate limit, unavailability) is waited out rather than raised.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from adapters.base import Adapter, Clock, PollSchedule, Sleep, TaskHandle, TaskStatus
from adapters.errors import ProviderUnavailable, RateLimited
from broker.schema import ErrorCode

OnStatus = Callable[[TaskStatus], Awaitable[None]]


class TaskTimedOut(ProviderUnavailable):
    """The task did not finish before the poll deadline; it may still be running at the provider."""

    code = ErrorCode.TIMED_OUT


async def poll_until_done(
    adapter: Adapter,
    handle: TaskHandle,
    *,
    clock: Clock,
    sleep: Sleep,
    estimated_seconds: float | None = None,
    submitted_at: float | None = None,
    on_status: OnStatus | None = None,
) -> TaskStatus:
    """Poll `adapter.status(handle)` until the task is terminal; `TaskTimedOut` at the deadline."""
    schedule = adapter.spec.poll_schedule
    started = clock() if submitted_at is None else submitted_at
    delay = schedule.first_delay(estimated_seconds)
    while True:
        remaining = schedule.deadline_s - (clock() - started)
        # Every delay is at least the minimum interval, so a shorter remainder means no more polls.
        if remaining < schedule.min_interval_s:
            raise TaskTimedOut(
                f"{adapter.provider} task {handle.provider_job_id} not done after {schedule.deadline_s:g} s",
                provider=adapter.provider,
            )
        await sleep(min(delay, remaining))
        try:
            status = await adapter.status(handle)
        except RateLimited as exc:
            delay = max(schedule.next_delay(delay), exc.retry_after_s or 0.0)
            continue
        except ProviderUnavailable:
            delay = schedule.next_delay(delay)
            continue
        if on_status is not None:
            await on_status(status)
        if status.state.terminal:
            return status
        delay = _next_delay(schedule, delay, status)


def _next_delay(schedule: PollSchedule, previous: float, status: TaskStatus) -> float:
    backed_off = schedule.next_delay(previous)
    if status.estimated_seconds is None:
        return backed_off
    # A fresh estimate from the provider says when to look next, within the schedule's bounds.
    return min(backed_off, max(schedule.min_interval_s, status.estimated_seconds))


def next_poll_delay(
    schedule: PollSchedule,
    previous: float,
    status: TaskStatus,
    *,
    now: float,
    last_progress: tuple[float, float] | None = None,
) -> float:
    """Seconds until the next poll of a task still going after `status`, seen at `now`.

    The provider's own estimate wins; else, with two readings of progress (`last_progress` is the
    earlier one: progress, when), the rate between them says when the task should end, plus a tenth for
    margin: a 120 s render is seen done in about six polls instead of twelve. Without either, the
    schedule backs off. Never closer than the schedule's minimum, never further than four of its
    maximum intervals.
    """
    backed_off = schedule.next_delay(previous)
    remaining = status.estimated_seconds
    progress = status.progress
    if remaining is None and progress is not None and last_progress is not None:
        earlier, at = last_progress
        if 0 <= earlier < progress < 1 and now > at:
            remaining = (1 - progress) * (now - at) / (progress - earlier) * 1.1
    if remaining is None:
        return backed_off
    return min(max(schedule.min_interval_s, remaining), schedule.max_interval_s * 4)
