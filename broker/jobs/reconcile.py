"""The books after the steps: charges the providers have yet to confirm, and budgets left unsettled.

Reconciliation. An attempt abandoned while its task may still run (at its deadline, or cancelled by
its owner, at a provider that could not cancel it) is booked at what the broker believes it will be
charged, marked `unconfirmed_usd`, and its job goes on a small store index of jobs to reconcile, due
every `RECONCILE_EVERY_S`. The job itself is not held back: it falls back and ends as usual, while the
index keeps asking the provider about the old task; when the provider reports the task's end, the
attempt is booked at what it says (and the job's cost with it, and its settled budget by the
difference). After `RECONCILE_FOR_S` without an
answer the provider is no longer asked and the charge stays booked as unconfirmed, which the
reconciliation report lists. A separate index rather than a step of the job: a job's steps end with
the job, and an ended job must neither wait for a slow provider nor be claimed again by the scheduler.

Budget sweeper. A job's end and its budget settlement are two writes; `ending.settle` repeats the
second through a store outage, but a runner that dies in between leaves the reservation held. The
sweeper settles every reservation older than a grace period whose job has ended (at the job's cost),
or whose job was never created (to 0): a submit whose create timed out may or may not have made its
job, so the handler leaves the reservation to this sweep rather than release it blind.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from adapters.base import Clock, TaskHandle
from broker.jobs import team_webhooks
from broker.jobs.booking import RECONCILE_EVERY_S, RECONCILE_FOR_S, book, read_status
from broker.jobs.context import StepContext
from broker.jobs.costs import route_key
from broker.jobs.work import with_attempt
from broker.observability.events import notify
from broker.schema import Attempt, BrokerError
from broker.store import JobRecord

log = structlog.get_logger("broker.reconcile")
SWEEP_GRACE_S = 120.0  # a reservation younger than this may belong to a submit still creating its job
CAS_TRIES = 5


async def reconcile_job(ctx: StepContext, job_id: str) -> int:
    """Ask the providers about the job's unconfirmed charges; returns how many were confirmed."""
    record = await ctx.store.get_job(job_id)
    pending = [] if record is None else _unconfirmed(record)
    if record is None or not pending:
        if record is not None and record.status.terminal:
            # A correction booked in an earlier round whose budget settlement a store outage cut off
            # lands now (settling converges: an already settled job's budget does not move).
            await ctx.store.settle_budget(job_id, record.job.cost_usd.micros)
        await ctx.store.drop_reconcile(job_id)
        return 0
    confirmed: dict[str, Attempt] = {}
    for attempt in pending:
        stored = record.handles.get(attempt.id)
        if stored is None:
            continue
        status = await read_status(
            ctx, attempt, TaskHandle(stored.provider_job_id, stored.model, stored.data)
        )
        if status is None or not status.state.terminal:
            continue
        booking = book(ctx.routes.get(route_key(attempt)), attempt, status)
        confirmed[attempt.id] = attempt.model_copy(
            update={
                "cost_usd": booking.spent,
                "unconfirmed_usd": None,
                "refunded_usd": booking.refunded,
                "reported_cost": booking.reported or attempt.reported_cost,
            }
        )
        log.info(
            "charge_confirmed",
            job_id=job_id,
            provider=attempt.provider,
            believed_usd=str(attempt.unconfirmed_usd),
            charged_usd=str(booking.spent),
        )
    if confirmed:
        record = await _write(ctx, job_id, confirmed)
        if record is not None and record.status.terminal:  # its budget was settled: book the difference
            await ctx.store.settle_budget(job_id, record.job.cost_usd.micros)
    now = ctx.clock()
    left = [] if record is None else _unconfirmed(record)
    if any(_still_asking(a, now) for a in left):
        await ctx.store.schedule_reconcile(job_id, now + RECONCILE_EVERY_S)
    else:
        await ctx.store.drop_reconcile(job_id)
    return len(confirmed)


def _unconfirmed(record: JobRecord) -> list[Attempt]:
    return [a for a in record.job.attempts if a.unconfirmed_usd is not None and a.status.terminal]


def _still_asking(attempt: Attempt, now: float) -> bool:
    ended = attempt.finished_at.timestamp() if attempt.finished_at else now
    return now < ended + RECONCILE_FOR_S


async def _write(ctx: StepContext, job_id: str, confirmed: dict[str, Attempt]) -> JobRecord | None:
    """Put the confirmed attempts into the job (compare-and-set; a step's concurrent write is kept)."""
    for _ in range(CAS_TRIES):
        record = await ctx.store.get_job(job_id)
        if record is None:
            return None
        changed = record
        for attempt_id, attempt in confirmed.items():
            current = next((a for a in changed.job.attempts if a.id == attempt_id), None)
            if current is not None and current.unconfirmed_usd is not None:
                changed = with_attempt(changed, attempt, changed.job.updated_at)
        if changed is record:
            return record
        if changed.status.terminal and changed.job.cost_usd != record.job.cost_usd:
            await team_webhooks.enqueue(ctx.store, changed, team_webhooks.COST_CORRECTED)
        stored = await ctx.store.replace_job(changed)
        if stored is not None:
            notify(ctx.observers, record, stored)  # metrics count a raised charge (a counter never falls)
            return stored
    return None  # busy: the next round tries again


async def sweep_budgets(ctx: StepContext, wall_now: float, grace_s: float = SWEEP_GRACE_S) -> int:
    """Settle reservations whose job has ended (or was never created); returns how many."""
    settled = 0
    for job_id in await ctx.store.open_reservations(wall_now - grace_s):
        try:
            record = await ctx.store.get_job(job_id)
        except BrokerError as exc:  # an unreadable record: the scheduler sets it aside and settles it
            log.warning("sweep_skipped", job_id=job_id, error=exc.message)
            continue
        if record is not None and not record.status.terminal:
            continue
        spent = 0 if record is None else record.job.cost_usd.micros
        await ctx.store.settle_budget(job_id, spent)
        log.warning("reservation_swept", job_id=job_id, job_found=record is not None, spent_micros=spent)
        settled += 1
    return settled


class Bookkeeper:
    """Runs reconciliation and the budget sweep every `every_s` seconds beside the scheduler."""

    def __init__(self, ctx: StepContext, *, every_s: float = 30.0, wall_clock: Clock = time.time) -> None:
        self.ctx = ctx
        self.every_s = every_s
        self.wall_clock = wall_clock  # reservations are stamped with wall time, whatever the runner's clock
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> tuple[int, int]:
        """One round: (charges confirmed, reservations settled)."""
        confirmed = 0
        for job_id in await self.ctx.store.due_reconciles(self.ctx.clock()):
            confirmed += await reconcile_job(self.ctx, job_id)
        return confirmed, await sweep_budgets(self.ctx, self.wall_clock())

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="bookkeeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except BrokerError as exc:  # the store is down: next round
                log.warning("bookkeeping_failed", code=exc.code.value, error=exc.message)
            except Exception:  # a bug must not end the books for good; it is logged
                log.exception("bookkeeping_crashed")
            await asyncio.sleep(self.every_s)
