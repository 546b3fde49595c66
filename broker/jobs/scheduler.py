"""The scheduler: takes due jobs from the store, runs one short step of each, and lets them go.

A job is a record with a next due time (`JobRecord.due_at`). The scheduler claims due jobs in batches
(each under a lease that lasts one step), runs at most `workers` steps at once, and each step ends by
saving its job with the next due time and no lease — so a job waiting for its provider holds no
worker, no lease, no task and no memory here, and one process carries as many jobs in flight as the
providers accept. A killed runner's jobs are due again when their leases lapse; a stopped one lets
its steps finish first.

No job can stop the runner: a step that raises is retried a bounded number of times (the count lives
in the record) and then fails its job with `internal`; a record the store cannot decode is set aside
with a log line naming it; the loop itself is restarted (and logged) if it ever dies.

When a job is due, and when a deadline passes, is judged on the scheduler's clock: the injected clock
plus whatever the injected sleep skipped (at most MAX_PACE times real time's pace), so a test's
instant sleep brings the next poll and a deadline forward while a real one leaves the clock as it is.
Timestamps written by the steps use the same clock, so a job's times agree with its deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time

import structlog

from adapters.base import Clock
from broker.jobs.capacity import Capacity
from broker.jobs.context import StepContext
from broker.jobs.ending import fail_job
from broker.jobs.grants import make_due
from broker.jobs.provider_health import ProviderHealth
from broker.jobs.queues import record_seat
from broker.jobs.slots import LocalSlots, Slots
from broker.jobs.steps import run_step
from broker.jobs.waiting import sleep_or_event
from broker.jobs.work import JobWork, LeaseLost
from broker.schema import AttemptStatus, BrokerError, ErrorCode, JobError, JobStatus
from broker.store import JobRecord
from pricing.catalog import RouteSpec

log = structlog.get_logger("broker.scheduler")
STOP_GRACE_S = 10.0  # how long a stopping runner lets its steps finish before cancelling them
CRASH_BACKOFF_S = 2.0
MAX_PACE = 100.0  # how much faster than real time skipped sleeps may move the schedule
CLAIM_GAP_S = 0.05  # after a claim that found fewer due jobs than it could take (a wake-up cuts it short)


class Scheduler:
    def __init__(self, ctx: StepContext, *, name: str | None = None) -> None:
        self.ctx = ctx
        self.options = ctx.options
        self._clock: Clock = ctx.clock
        self._started_at = time.monotonic()
        self._unreadable_checked = 0.0
        ctx.clock = self.now  # the steps' deadlines and timestamps run on the scheduler's clock too
        self.name = name or f"runner-{secrets.token_hex(6)}"
        self._skipped = 0.0
        self._claims = 0
        self._wakeup = asyncio.Event()
        self._step_done = asyncio.Event()
        self._steps: set[asyncio.Task[None]] = set()
        self._stepping: dict[str, JobWork] = {}  # job id -> the step this process runs on it
        self._loop: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0
        ctx.provider_slots.on_grant(self._granted)
        ctx.wake_jobs = self._wake_jobs

    async def _granted(self, provider: str, job_ids: list[str]) -> None:
        """Slots of `provider` were granted to these queued jobs: make them due now."""
        await make_due(self.ctx.store, self.ctx.provider_slots, self.now, job_ids, provider)
        self.wake()

    async def _wake_jobs(self, job_ids: list[str]) -> None:
        await make_due(self.ctx.store, self.ctx.provider_slots, self.now, job_ids, None)
        self.wake()

    # What the app and the handlers see ----------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._loop is not None and not self._loop.done()

    @property
    def health(self) -> ProviderHealth:
        return self.ctx.provider_health

    @property
    def slots(self) -> Slots:
        return self.ctx.provider_slots

    @property
    def capacity(self) -> Capacity:
        """The in-process slot counts (the ones in use with a SQLite store)."""
        assert self.ctx.capacity is not None  # set by StepContext
        return self.ctx.capacity

    @property
    def routes(self) -> dict[str, RouteSpec]:
        return self.ctx.routes

    @routes.setter
    def routes(self, value: dict[str, RouteSpec]) -> None:
        self.ctx.routes = value

    def now(self) -> float:
        return self._clock() + self._skipped

    def wake(self) -> None:
        """A job was queued or changed: look at the store now."""
        self._wakeup.set()

    async def notify(self, provider: str, provider_job_id: str) -> None:
        """A provider webhook arrived for this task: make its job due now rather than at its next poll."""
        job_id = await self.ctx.store.find_task(provider, provider_job_id)
        record = None if job_id is None else await self.ctx.store.get_job(job_id)
        if record is None or record.status.terminal or record.lease_owner is not None:
            return  # unknown, ended, or a step holds it and will look anyway
        if (record.due_at or 0.0) > self.now():
            await self.ctx.store.replace_job(record.model_copy(update={"due_at": None}))
            self.wake()

    async def start(self) -> None:
        if isinstance(self.ctx.slots, LocalSlots):
            await self._restore_local_slots(self.ctx.slots.capacity)
        self._stopping = False
        self._spawn_loop()

    async def stop(self) -> None:
        """Stop taking jobs, let running steps finish (for a while), then cancel what is left."""
        self._stopping = True
        if self._loop is not None:
            # Not cancelled mid-claim: a claim the store completed would leave its jobs leased to no one.
            self._wakeup.set()
            self._step_done.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._loop), STOP_GRACE_S)
            except TimeoutError:
                self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
            self._loop = None
        if self._steps:
            _, late = await asyncio.wait(set(self._steps), timeout=STOP_GRACE_S)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    # The loop -----------------------------------------------------------------------------------
    def _spawn_loop(self) -> None:
        self._loop = asyncio.create_task(self._run(), name=f"scheduler-{self.name}")
        self._loop.add_done_callback(self._loop_ended)

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._stopping:
            return
        self.restarts += 1
        log.error("scheduler_loop_died", restarts=self.restarts, error=repr(task.exception()))
        self._spawn_loop()

    async def _run(self) -> None:
        while not self._stopping:
            free = self.options.workers - len(self._steps)
            if free <= 0:
                self._step_done.clear()
                await self._step_done.wait()
                continue
            try:
                await self._set_aside_unreadable()
                self._claims += 1
                owner = f"{self.name}-{self._claims}"
                claimed = await self.ctx.store.claim_due(
                    owner, self.now(), self.options.lease_s, limit=min(free, self.options.claim_batch)
                )
            except BrokerError as exc:  # the store is down: wait, it recovers by itself
                log.warning("claim_failed", code=exc.code.value, error=exc.message)
                await self._idle(self.options.idle_wait_s)
                continue
            for record in claimed:
                if (running := self._stepping.get(record.id)) is not None:
                    # Its lease lapsed while this process stepped it: one step, under the new claim.
                    running.adopt(record)
                    continue
                task = asyncio.create_task(self._step(record), name=f"step-{record.id}")
                self._steps.add(task)
                task.add_done_callback(self._step_finished)
            if not claimed and not self._stopping:
                await self._wait_for_due()
            elif len(claimed) < min(free, self.options.claim_batch) and not self._stopping:
                # Jobs coming due one by one are taken a few at a time, not in a store call each.
                await self._sleep(CLAIM_GAP_S)

    def _step_finished(self, task: asyncio.Task[None]) -> None:
        self._steps.discard(task)
        self._step_done.set()

    async def _wait_for_due(self) -> None:
        try:
            due = await self.ctx.store.next_due_at()
        except BrokerError:
            due = None
        if due is None:
            await self._idle(self.options.idle_wait_s)
            return
        delay = due - self.now()
        if delay > 0:
            await self._sleep(min(delay, self.options.idle_wait_s))

    async def _idle(self, seconds: float) -> None:
        """Wait in real time for a wake-up (nothing is due, or the store is down)."""
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the cancel that stops the
        # runner when the wake-up lands at the same moment, and stop() then hangs.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wakeup.wait()
        if not self._stopping:
            self._wakeup.clear()

    async def _sleep(self, seconds: float) -> None:
        """Wait on the injected sleep until a job is due, or until woken."""
        before = self._clock()
        if not await sleep_or_event(self.ctx.sleep, seconds, self._wakeup):
            skipped = self._skipped + max(0.0, seconds - (self._clock() - before))
            # Never more than MAX_PACE times real time's pace: providers (and emulators) keep real
            # time, and a schedule far ahead of them would see deadlines pass mid-render.
            self._skipped = min(skipped, (MAX_PACE - 1) * (time.monotonic() - self._started_at))
        elif not self._stopping:
            self._wakeup.clear()

    # One step -----------------------------------------------------------------------------------
    async def _step(self, record: JobRecord) -> None:
        owner = record.lease_owner or self.name
        work = JobWork(
            self.ctx.store,
            record,
            owner,
            self.now,
            self.options.lease_s,
            self.ctx.observers,
            self.ctx.sleep,
            schedule_clock=self.now,
        )
        self._stepping[record.id] = work
        with structlog.contextvars.bound_contextvars(job_id=record.id, team=record.job.team):
            try:
                await run_step(self.ctx, work)
                if work.held:  # every step parks or ends its job; this one did neither
                    await work.park(self.options.capacity_check_s)
            except LeaseLost:
                log.info("lease_lost")
            except BrokerError as exc:  # the store failed mid-step: the lease lapses, the job is retried
                log.warning("job_step_failed", code=exc.code.value, error=exc.message)
            except Exception:
                log.exception("job_step_crashed")
                await self._after_crash(work)
            finally:
                del self._stepping[record.id]

    async def _after_crash(self, work: JobWork) -> None:
        """A bug, not a provider's failure: retry the step a few times, then fail the job."""
        try:
            record = await work.refresh()
            failures = record.step_failures + 1
            if failures < self.options.max_crashes:
                await work.park(
                    CRASH_BACKOFF_S * failures, lambda r: r.model_copy(update={"step_failures": failures})
                )
                return
            message = "the broker failed on this job repeatedly; it is logged"
            attempt = work.active_attempt()
            if attempt is not None:
                await self.ctx.provider_slots.release(attempt.provider, attempt.id)
            await fail_job(self.ctx, work, JobError(code=ErrorCode.INTERNAL, message=message))
        except (LeaseLost, BrokerError) as exc:
            log.warning("job_crash_not_recorded", error=repr(exc))

    # Records the store cannot read, and slots after a restart -----------------------------------
    async def _set_aside_unreadable(self) -> None:
        # Looked for about once per idle wait, not on every claim: the loop is the hot path.
        now = time.monotonic()
        if now - self._unreadable_checked < self.options.idle_wait_s:
            return
        self._unreadable_checked = now
        for job_id in await self.ctx.store.unreadable_due(self.now()):
            log.error("job_record_unreadable", job_id=job_id, action="failed and set aside")
            await self.ctx.store.quarantine_job(job_id)
            # What it spent is unknown; its hold is released so the team's budget is not blocked.
            await self.ctx.store.settle_budget(job_id, 0)

    async def _restore_local_slots(self, capacity: Capacity) -> None:
        """Jobs at their providers hold slots, and queued jobs their places: this process's counts and
        queues start from the store's jobs; then the free slots are granted."""
        for status in (JobStatus.RUNNING, JobStatus.QUEUED):
            cursor: str | None = None
            while True:
                page, cursor = await self.ctx.store.list_jobs(status=status, limit=200, cursor=cursor)
                for record in page:
                    self._restore_one(capacity, record)
                if cursor is None:
                    break
        for provider, woken in capacity.grant_all().items():
            await self._granted(provider, woken)

    def _restore_one(self, capacity: Capacity, record: JobRecord) -> None:
        seat = record_seat(record)
        if record.queued is not None:
            capacity.restore_place(record.queued, seat)
        attempt = record.job.attempts[-1] if record.job.attempts else None
        if attempt is not None and attempt.status in (
            AttemptStatus.SUBMITTING,
            AttemptStatus.SUBMITTED,
            AttemptStatus.RUNNING,
        ):
            capacity.hold(attempt.provider, attempt.id, seat, new_submit=False)
