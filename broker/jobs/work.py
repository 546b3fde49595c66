"""A job one step holds under a lease, and the pure changes the steps make to it.

Every save is compare-and-set on the record's version, and every claim bumps the version: the version
is the step's fencing token, so a step whose lease another runner took can change nothing. When
another writer (a cancel through the API) got there first, the change is applied again to the fresh
record, as long as this step still holds the lease. A step ends with `park` (the job is saved with its
next due time and no lease) or with the job's end.

I/O that can outlast a lease (a download, an upload, an image fetch, a submit's request) runs under
`keep_lease`, which renews the lease while the call runs and cancels the call as soon as the lease is
lost, or would lapse before the store can be told.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import structlog

from adapters.base import Clock, Sleep
from broker.jobs import team_webhooks
from broker.observability.events import JobObserver, notify
from broker.schema import Attempt, AttemptStatus, Job, JobError, JobStatus
from broker.store import JobRecord, Store
from broker.store.base import StoreUnavailable
from pricing.money import Money

log = structlog.get_logger("broker.jobwork")
T = TypeVar("T")
STORE_RETRY_MAX_S = 5.0
RENEWALS_PER_LEASE = 3  # how often `keep_lease` renews within one lease


class LeaseLost(Exception):
    """Another worker owns the job now (this one was too slow to renew); stop working on it."""


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


@dataclass
class JobWork:
    store: Store
    record: JobRecord
    owner: str
    clock: Clock
    lease_s: float
    observers: list[JobObserver] = field(default_factory=list)
    sleep: Sleep = asyncio.sleep
    # The clock of leases and due times, where it differs from `clock` (see `Scheduler.now`).
    schedule_clock: Clock | None = None

    def schedule_now(self) -> float:
        return (self.schedule_clock or self.clock)()

    @property
    def job(self) -> Job:
        return self.record.job

    def now(self) -> datetime:
        return utc(self.clock())

    @property
    def held(self) -> bool:
        """This step still holds the job (it has neither parked nor ended it)."""
        return self.record.lease_owner == self.owner and not self.record.status.terminal

    async def save(self, change: Callable[[JobRecord], JobRecord], *, release: bool = False) -> JobRecord:
        """Apply `change` and write it with a renewed lease (or none, with `release`)."""
        while True:
            lease = (None, None) if release else (self.owner, self.schedule_now() + self.lease_s)
            candidate = change(self.record).model_copy(
                update={"lease_owner": lease[0], "lease_until": lease[1]}
            )
            if candidate.status.terminal:
                candidate = candidate.model_copy(
                    update={"due_at": None, "poll": None, "download": None, "submit": None}
                )
                if not self.record.status.terminal:  # its webhook is in the outbox before its end is stored
                    await self.through_outage(functools.partial(team_webhooks.enqueue, self.store, candidate))
            stored = await self.through_outage(functools.partial(self.store.replace_job, candidate))
            if stored is not None:
                before, self.record = self.record, stored
                notify(self.observers, before, stored)
                return stored
            fresh = await self.through_outage(lambda: self.store.get_job(self.record.id))
            if fresh is None or fresh.lease_owner != self.owner:
                raise LeaseLost(self.record.id)
            self.record = fresh

    async def through_outage(self, call: Callable[[], Awaitable[T]]) -> T:
        """Repeat a store call until the store answers, keeping the job through an outage.

        A save records a side effect that already happened (a provider accepted a submit); giving up
        would leave the attempt looking uncertain. Repeating is safe: the write is compare-and-set, so
        a job another runner took meanwhile ends here as `LeaseLost`, and a write whose reply was lost
        is found in the re-read record, to which the change is applied once more.
        """
        delay = 0.2
        while True:
            try:
                return await call()
            except StoreUnavailable as exc:
                log.warning("store_unavailable_retrying", job_id=self.record.id, error=exc.message)
                await self.sleep(delay)
                delay = min(delay * 2, STORE_RETRY_MAX_S)

    async def refresh(self) -> JobRecord:
        """Re-read the record (to see a cancel request); `LeaseLost` if it is no longer ours."""
        fresh = await self.through_outage(lambda: self.store.get_job(self.record.id))
        if fresh is None or fresh.lease_owner != self.owner:
            raise LeaseLost(self.record.id)
        self.record = fresh
        return fresh

    async def park(self, due_in: float, change: Callable[[JobRecord], JobRecord] = lambda r: r) -> JobRecord:
        """End the step: save `change` with the job due again in `due_in` seconds, and let it go."""
        due_at = self.schedule_now() + max(0.0, due_in)
        return await self.save(lambda r: change(r).model_copy(update={"due_at": due_at}), release=True)

    async def keep_lease(self, call: Callable[[], Awaitable[T]], *, stop_in_outage: bool = True) -> T:
        """Run `call` while renewing the lease every third of it; `LeaseLost` (with `call` cancelled)
        once another runner holds the job, or, with `stop_in_outage`, once the lease lapses while the
        store cannot be reached. A submit runs without it: a request that may be at the provider is
        not abandoned for an outage, since its answer is what makes the attempt certain (the save
        after it is compare-and-set, so a runner that took the job over meanwhile still wins)."""
        task = asyncio.ensure_future(call())
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.lease_s / RENEWALS_PER_LEASE)
                if done:
                    return task.result()
                await self._renew(stop_in_outage)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def _renew(self, stop_in_outage: bool) -> None:
        """Renew the lease once; a store outage is waited out only until the lease would lapse."""
        if not stop_in_outage:
            await self.save(lambda r: r)
            return
        left = (self.record.lease_until or 0.0) - self.schedule_now()
        try:
            await asyncio.wait_for(self.save(lambda r: r), timeout=max(0.0, left))
        except TimeoutError:
            log.warning("lease_lapsed_in_outage", job_id=self.record.id)
            raise LeaseLost(self.record.id) from None

    def adopt(self, claimed: JobRecord) -> None:
        """This process claimed the job again while stepping it (its lease had lapsed): the running
        step carries on under the new claim instead of a second step starting beside it."""
        assert claimed.lease_owner is not None
        self.owner, self.record = claimed.lease_owner, claimed

    def active_attempt(self) -> Attempt | None:
        attempts = self.job.attempts
        return attempts[-1] if attempts and not attempts[-1].status.terminal else None


def with_attempt(record: JobRecord, attempt: Attempt, at: datetime) -> JobRecord:
    """The record with `attempt` replacing the attempt of the same id (or appended)."""
    attempts = [a for a in record.job.attempts if a.id != attempt.id]
    index = next((i for i, a in enumerate(record.job.attempts) if a.id == attempt.id), len(attempts))
    attempts.insert(index, attempt)
    total = sum((a.cost_usd for a in attempts if a.cost_usd is not None), Money.zero())
    return record.evolve(attempts=attempts, cost_usd=total, updated_at=at)


def finish_attempt(
    attempt: Attempt,
    status: AttemptStatus,
    at: datetime,
    cost: Money,
    error: JobError | None = None,
    refunded: Money | None = None,
    *,
    reported: str | None = None,
    unconfirmed: bool = False,
) -> Attempt:
    """The attempt ended: `cost` is booked; `unconfirmed` marks it as believed, not yet reported."""
    return attempt.model_copy(
        update={
            "status": status,
            "finished_at": at,
            "cost_usd": cost,
            "error": error,
            "refunded_usd": refunded,
            "reported_cost": reported or attempt.reported_cost,
            "unconfirmed_usd": cost if unconfirmed else None,
        }
    )


def end_job(record: JobRecord, status: JobStatus, at: datetime, error: JobError | None = None) -> JobRecord:
    return record.evolve(status=status, error=error, updated_at=at, completed_at=at)
