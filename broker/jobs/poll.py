"""The poll step: ask the provider once how the task is going, then park the job until the next poll.

When to look next is the adapter's schedule (first near the provider's estimate, then backing off,
never faster than its minimum interval) refined by the provider's estimate or the task's progress
rate (`adapters.polling.next_poll_delay`); a provider webhook makes the job due at once. The whole
wait is bounded by the schedule's deadline (`providers.<name>.task_deadline_s` overrides the
adapter's), measured from the submit. A poll that fails for a while (rate limited, unavailable) is
retried on the back-off: status polls are never billed.

At the deadline the task is not just dropped: a task that finished meanwhile is used, any other is
cancelled at the provider and booked at what the provider says it charged, or at the estimate as
unconfirmed where it cannot say (`booking.py`), and the job falls back to its next route.
"""

from __future__ import annotations

from adapters.base import TaskHandle, TaskState, TaskStatus
from adapters.errors import ProviderError, ProviderUnavailable, RateLimited
from adapters.polling import TaskTimedOut, next_poll_delay
from broker.jobs.booking import book, follow_up, stop_task
from broker.jobs.context import StepContext
from broker.jobs.costs import route_key
from broker.jobs.download import download
from broker.jobs.ending import fail_attempt
from broker.jobs.queues import record_seat
from broker.jobs.work import JobWork, with_attempt
from broker.schema import Attempt, AttemptStatus
from broker.store import JobRecord
from broker.store.base import PollState
from pricing.money import Money

FIRST_POLL_SHARE = (
    0.8  # of the expected latency: where a task's end becomes likely (PollSchedule.first_delay)
)


async def poll(ctx: StepContext, work: JobWork, attempt: Attempt) -> None:
    adapter = ctx.adapters.get(attempt.provider)
    stored = work.record.handles.get(attempt.id)
    if adapter is None or stored is None:
        error = ProviderUnavailable(
            f"cannot poll {attempt.provider}: not configured", provider=attempt.provider
        )
        await fail_attempt(ctx, work, attempt, error, Money.zero())
        return
    # Keeps the slot while the task is at the provider (and takes it back after a restart).
    seat, slot_ttl = record_seat(work.record), ctx.slot_ttl(attempt.provider)
    await ctx.provider_slots.hold(attempt.provider, attempt.id, seat, slot_ttl)
    schedule = adapter.spec.poll_schedule
    state = work.record.poll or PollState(delay_s=schedule.min_interval_s)
    handle = TaskHandle(stored.provider_job_id, stored.model, stored.data)
    try:
        status = await adapter.status(handle)
    except RateLimited as exc:
        await _again(
            ctx, work, attempt, max(schedule.next_delay(state.delay_s), exc.retry_after_s or 0.0), state
        )
        return
    except ProviderUnavailable:
        await _again(ctx, work, attempt, schedule.next_delay(state.delay_s), state)
        return
    except ProviderError as exc:  # a poll error that cannot be waited out
        await fail_attempt(ctx, work, attempt, exc, Money.zero())
        return
    if status.state.terminal:
        await finish(ctx, work, attempt, status)
        return
    now = ctx.clock()
    last = (state.progress, state.at) if state.progress is not None and state.at is not None else None
    delay = await _prompt(
        ctx, attempt, next_poll_delay(schedule, state.delay_s, status, now=now, last_progress=last)
    )
    seen = PollState(delay_s=delay, progress=status.progress, at=now) if status.progress else state
    if status.state is TaskState.RUNNING and attempt.status is not AttemptStatus.RUNNING:
        attempt = attempt.model_copy(update={"status": AttemptStatus.RUNNING})
    await _again(ctx, work, attempt, delay, seen.model_copy(update={"delay_s": delay}))


async def _prompt(ctx: StepContext, attempt: Attempt, delay: float) -> float:
    """While jobs wait for the provider's slots, a task near its expected end (from the first poll's
    point, 0.8 of the route's latency, on) is polled at the provider's minimum interval, so its slot is
    freed within seconds of the render's end; without waiters, the schedule's few polls."""
    schedule = ctx.adapters[attempt.provider].spec.poll_schedule
    if delay <= schedule.min_interval_s or not await ctx.provider_slots.waiting(attempt.provider):
        return delay
    expected = ctx.expected_latency_s(attempt.provider, attempt.model)
    if expected is None:
        return schedule.min_interval_s
    until_window = FIRST_POLL_SHARE * expected - (ctx.clock() - attempt.started_at.timestamp())
    return max(schedule.min_interval_s, min(delay, until_window))


async def _again(ctx: StepContext, work: JobWork, attempt: Attempt, delay: float, state: PollState) -> None:
    """Park the job until its next poll, or fail the attempt when the deadline leaves no room for one."""
    adapter = ctx.adapters[attempt.provider]
    schedule = adapter.spec.poll_schedule
    remaining = schedule.deadline_s - (ctx.clock() - attempt.started_at.timestamp())
    if remaining < schedule.min_interval_s:
        await _overdue(ctx, work, attempt)
        return

    def polled(record: JobRecord) -> JobRecord:
        return with_attempt(record, attempt, work.now()).model_copy(update={"poll": state})

    await work.park(min(delay, remaining), polled)


async def _overdue(ctx: StepContext, work: JobWork, attempt: Attempt) -> None:
    """The task passed its deadline: use it if it just finished, else cancel it, book, fall back."""
    stored = work.record.handles[attempt.id]
    booking = await stop_task(ctx, attempt, TaskHandle(stored.provider_job_id, stored.model, stored.data))
    ended = booking.status
    if ended is not None and (
        ended.state is TaskState.SUCCEEDED or (ended.state.terminal and not booking.cancel_sent)
    ):
        await finish(ctx, work, attempt, ended)  # it ended by itself just now: use it as it ended
        return
    deadline = ctx.adapters[attempt.provider].spec.poll_schedule.deadline_s
    error = TaskTimedOut(
        f"{attempt.provider} task {attempt.provider_job_id} not done after {deadline:g} s; cancelled",
        provider=attempt.provider,
    )
    await follow_up(ctx, work.job.id, booking)
    await fail_attempt(ctx, work, attempt, error, booking.spent, booking=booking)


async def finish(ctx: StepContext, work: JobWork, attempt: Attempt, status: TaskStatus) -> None:
    """The task ended at its provider: fetch its output, or fail the attempt with what it cost."""
    if status.state is TaskState.SUCCEEDED:
        await download(ctx, work, attempt, status)
        return
    booking = book(ctx.routes.get(route_key(attempt)), attempt, status)
    error = status.error or ProviderUnavailable(
        f"{attempt.provider} ended the task as {status.state.value}", provider=attempt.provider
    )
    await fail_attempt(ctx, work, attempt, error, booking.spent, booking=booking)
