"""How attempts and jobs end: an attempt failed (with a fallback or not), a job cancelled or failed.

Every end gives the attempt's capacity slot back, tells provider health, and settles the job's budget
reservation to what it really cost once the job is over. The settlement is repeated through a store
outage until it lands; if this runner dies between the job's end and its settlement, the budget
sweeper (`broker.jobs.reconcile`) settles it from the ended job's record.
"""

from __future__ import annotations

import structlog

from adapters.base import TaskHandle
from adapters.errors import ProviderError
from adapters.failures import classify
from broker.jobs.booking import Booking, follow_up, stop_task
from broker.jobs.context import StepContext
from broker.jobs.queues import record_seat
from broker.jobs.work import JobWork, end_job, finish_attempt, with_attempt
from broker.schema import Attempt, AttemptStatus, BrokerError, JobError, JobStatus
from broker.store import JobRecord
from pricing.money import Money

log = structlog.get_logger("broker.jobs")


async def settle(ctx: StepContext, work: JobWork) -> None:
    """Replace the ended job's reservation by what it cost (repeated through a store outage)."""
    spent = work.job.cost_usd.micros
    await work.through_outage(lambda: ctx.store.settle_budget(work.job.id, spent))


async def fail_attempt(
    ctx: StepContext,
    work: JobWork,
    attempt: Attempt,
    exc: BrokerError,
    spent: Money,
    *,
    fallback: bool | None = None,
    refunded: Money | None = None,
    booking: Booking | None = None,
) -> None:
    """Fail the attempt; the job falls back to its next route (due now) or fails with the same error."""
    error = JobError(code=exc.code, message=ctx.scrub(exc.message))
    booked = booking or Booking(spent, refunded)
    failed = finish_attempt(
        attempt,
        AttemptStatus.FAILED,
        work.now(),
        booked.spent,
        error,
        booked.refunded,
        reported=booked.reported,
        unconfirmed=booked.unconfirmed,
    )
    can_fall_back = falls_back(exc) if fallback is None else fallback
    await ctx.provider_slots.release(attempt.provider, attempt.id)
    await ctx.provider_health.report_failure(attempt.provider, exc)
    log.warning("attempt_failed", provider=attempt.provider, code=exc.code.value, error=exc.message)
    if can_fall_back and len(work.job.attempts) < await ctx.attempt_limit(work.record):
        await work.park(
            0.0,
            lambda r: with_attempt(r, failed, work.now()).model_copy(
                update={"poll": None, "download": None, "submit": None}
            ),
        )
        return
    await work.save(
        lambda r: end_job(with_attempt(r, failed, work.now()), JobStatus.FAILED, work.now(), error),
        release=True,
    )
    await settle(ctx, work)


def falls_back(exc: BrokerError) -> bool:
    """Whether another route may serve the job after `exc` (the rule is `adapters.failures.classify`);
    a request the provider refused as invalid is logged as a catalog or adapter defect."""
    if not isinstance(exc, ProviderError):
        return bool(getattr(exc, "fallback", False))
    rule = classify(exc)
    if rule.defect:
        log.error("catalog_or_adapter_defect", provider=exc.provider, code=exc.code.value, error=exc.message)
    return rule.falls_back


async def cancel(ctx: StepContext, work: JobWork, attempt: Attempt | None) -> None:
    """The owner asked to cancel: cancel at the provider where it can, book what it charged, end."""
    booking = Booking(Money.zero())
    await leave_queue(ctx, work)
    if attempt is not None and (stored := work.record.handles.get(attempt.id)) is not None:
        booking = await stop_task(ctx, attempt, TaskHandle(stored.provider_job_id, stored.model, stored.data))
        await follow_up(ctx, work.job.id, booking)
    if attempt is not None:
        await ctx.provider_slots.release(attempt.provider, attempt.id)
        await ctx.provider_health.report_abandoned(attempt.provider)

    def cancelled(record: JobRecord) -> JobRecord:
        if attempt is not None:
            ended = finish_attempt(
                attempt,
                AttemptStatus.CANCELLED,
                work.now(),
                booking.spent,
                refunded=booking.refunded,
                reported=booking.reported,
                unconfirmed=booking.unconfirmed,
            )
            record = with_attempt(record, ended, work.now())
        return end_job(record, JobStatus.CANCELLED, work.now())

    await work.save(cancelled, release=True)
    await settle(ctx, work)
    log.info("job_cancelled", cost_usd=str(work.job.cost_usd))


async def leave_queue(ctx: StepContext, work: JobWork) -> None:
    """A job that ends while waiting in a provider's queue gives up its place (and any slot granted)."""
    if work.record.queued is not None:
        await ctx.provider_slots.leave(work.record.queued, record_seat(work.record))


async def fail_job(ctx: StepContext, work: JobWork, error: JobError) -> None:
    """End the job as failed with `error` (no attempt of it is active)."""
    await leave_queue(ctx, work)
    await work.save(lambda r: end_job(r, JobStatus.FAILED, work.now(), error), release=True)
    await settle(ctx, work)
    log.warning("job_failed", code=error.code.value, error=error.message)
