"""Retention: ended jobs, and their artifacts, are deleted `retention_days` after they end (the
team's own, else the global one); their costs stay in the daily ledger the reports read.

Every replica runs the sweep (`Expiry`) beside the scheduler, every `EVERY_S`, again at once while it
finds a backlog. Per team it reads the ended jobs created before its cutoff (a job ends after it
starts, so none after it can be due), oldest first, at most `BATCH` a round. For each one ended before
the cutoff it deletes the artifacts first (an output, its poster, and the upload unless another job
still names it), so no file ever outlives the record that names it, then has the store fold the job
into the ledger and delete it in one atomic write, compare-and-set on the version the figures were
taken from. Two replicas sweeping one job: both delete the same files (deleting a missing file is no
error), one write wins, the other finds the job gone. Jobs not ended are never read, let alone expired;
a charge still being reconciled keeps its job until the provider answered or was given up on.

Batches go after their jobs, in the same round: per team, the batches created before the cutoff,
oldest first, at most `BATCH` looked at a round (the store's per-team index by creation time). One
none of whose jobs is left in the store has nothing left to show, and the store deletes it with its
Idempotency-Key in one atomic write that checks the jobs itself (a job still stored keeps its batch);
a second replica finds it gone. Batches stored before that index existed are not in it and are kept
for good. A batch kept for its jobs stays at the head of the index until they expire; a round that
looked only at such batches is not followed at once, since the next would see the same.

Known limit: uploads are shared by content. A job accepted with the same image in the instant between
the check that no job names an upload and its deletion finds its image gone and fails its submit.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

import structlog

from adapters.base import Clock
from broker.config import BrokerConfig
from broker.jobs.booking import RECONCILE_FOR_S
from broker.observability.ledger_figures import ledger_rows
from broker.schema import BrokerError
from broker.store import JobRecord, Store
from broker.store.artifacts import ArtifactStore, output_key, poster_key, upload_key
from broker.store.batches import BatchExpiry
from broker.store.retention import Expiry as Outcome
from pricing.catalog import RouteSpec

log = structlog.get_logger("broker.retention")
DAY_S = 86_400.0
EVERY_S = 600.0  # between rounds; a round that found a backlog is followed at once
BATCH = 500  # jobs, and batches, looked at per team and round (bounds one round's work)
_PAGE = 100
_ID_TIME = re.compile(r"^[a-z]+_([0-9a-f]{12})[0-9a-f]+$")


def _expired_day(record_id: str, retention_days: int, now: float) -> str | None:
    """The day an id was made (its creation time is in it), if that is longer ago than the retention."""
    found = _ID_TIME.match(record_id)
    if found is None:
        return None
    created = int(found.group(1), 16) / 1000
    if created > now - retention_days * DAY_S:
        return None
    return datetime.fromtimestamp(created, UTC).date().isoformat()


def expired_message(job_id: str, retention_days: int, now: float) -> str | None:
    """Why an id no longer names a job, when its creation time (in the id) is older than the retention:
    a clear 404 for an expired job, worded alike whoever's it was (it says nothing of who owned it)."""
    day = _expired_day(job_id, retention_days, now)
    if day is None:
        return None
    return (
        f"no job {job_id}: it was created on {day}, and ended jobs are deleted {retention_days} days"
        " after they end (their costs stay in the cost reports)"
    )


def expired_batch_message(batch_id: str, retention_days: int, now: float) -> str | None:
    """Why an id no longer names a batch, when it was made longer ago than the retention: the batch's
    `expired_message`, worded alike whoever's it was."""
    day = _expired_day(batch_id, retention_days, now)
    if day is None:
        return None
    return (
        f"no batch {batch_id}: it was created on {day}, and a batch is deleted once all its jobs have"
        f" expired (ended jobs are deleted {retention_days} days after they end; their costs stay in the"
        " cost reports)"
    )


def _ended_before(record: JobRecord, cutoff: float, now: float) -> bool:
    """Whether the job ended before `cutoff` and has no charge the reconciliation still asks about."""
    job = record.job
    ended = job.completed_at or job.updated_at
    if ended.timestamp() > cutoff:
        return False
    return not any(
        a.unconfirmed_usd is not None and now < (a.finished_at or ended).timestamp() + RECONCILE_FOR_S
        for a in job.attempts
    )


class Expiry:
    """The periodic sweep that expires ended jobs into the daily ledger, then the batches with none of
    their jobs left."""

    def __init__(
        self,
        store: Store,
        artifacts: ArtifactStore,
        config: Callable[[], BrokerConfig],
        *,
        clock: Clock,
        every_s: float = EVERY_S,
        batch: int = BATCH,
    ) -> None:
        self.store, self.artifacts = store, artifacts
        self.config = config  # read each round: a reloaded config's retention applies from then on
        self.clock = clock
        self.every_s, self.batch = every_s, batch
        self._task: asyncio.Task[None] | None = None
        self.backlog = False  # the last round stopped at its bound for some team
        self.expired_batches = 0  # by the last round

    async def run_once(self) -> int:
        """One round over every team; returns how many jobs expired (batches: `expired_batches`)."""
        config, now = self.config(), self.clock()
        routes = {route.key: route for route in config.routes}
        expired, self.backlog = 0, False
        for team in await self.store.job_teams():
            cutoff = now - config.retention_for(team) * DAY_S
            expired += await self._sweep_team(team, cutoff, now, routes)
        self.expired_batches = 0
        # After the jobs: a batch goes in the round its last job does.
        for team in await self.store.batch_teams():
            created_before = datetime.fromtimestamp(now - config.retention_for(team) * DAY_S, UTC)
            self.expired_batches += await self._sweep_batches(team, created_before)
        # Last: a job that expires only past the ledger's own retention (a long team retention after
        # the setting was lowered) leaves nothing behind either.
        today = datetime.fromtimestamp(now, UTC).date()
        await self.store.drop_ledger_before(today - timedelta(days=config.ledger_retention_days))
        return expired

    async def _sweep_team(self, team: str, cutoff: float, now: float, routes: Mapping[str, RouteSpec]) -> int:
        expired = skipped = looked = 0
        created_before = datetime.fromtimestamp(cutoff, UTC)
        while looked < self.batch:
            page = await self.store.ended_jobs(
                team, created_before, limit=min(_PAGE, self.batch - looked), skip=skipped
            )
            if not page:
                break
            looked += len(page)
            for record in page:
                outcome = await self.expire(record, routes) if _ended_before(record, cutoff, now) else None
                if outcome is Outcome.EXPIRED:
                    expired += 1
                elif outcome is not Outcome.GONE:  # still in the index: the next page starts past it
                    skipped += 1
        self.backlog = self.backlog or looked >= self.batch
        return expired

    async def _sweep_batches(self, team: str, created_before: datetime) -> int:
        expired = kept = looked = 0
        while looked < self.batch:
            page = await self.store.old_batches(
                team, created_before, limit=min(_PAGE, self.batch - looked), skip=kept
            )
            if not page:
                break
            looked += len(page)
            for batch in page:
                outcome = await self.store.expire_batch(batch)
                if outcome is BatchExpiry.EXPIRED:
                    expired += 1
                    log.info("batch_expired", batch_id=batch.id, team=team)
                elif outcome is BatchExpiry.JOBS_LEFT:  # still in the index: the next page starts past it
                    kept += 1
        # Only a round that deleted some calls for another at once (see the module's docstring).
        self.backlog = self.backlog or (looked >= self.batch and expired > 0)
        return expired

    async def expire(self, record: JobRecord, routes: Mapping[str, RouteSpec]) -> Outcome:
        """Delete the job's artifacts, then fold it into the ledger and delete it."""
        rows = ledger_rows(record, routes)
        await self.artifacts.delete(output_key(record.id))
        await self.artifacts.delete(poster_key(record.id))
        digest = record.job.request.image_upload
        if digest is not None and not await self.store.upload_in_use(digest, besides=record.id):
            await self.artifacts.delete(upload_key(digest))
        outcome = await self.store.expire_job(record, rows)
        event = "job_expired" if outcome is Outcome.EXPIRED else "job_not_expired"
        log.info(event, job_id=record.id, team=record.job.team, outcome=outcome.value)
        return outcome

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="expiry")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        # Cancelled again until it ends: a cancellation that lands inside a Redis call can be
        # swallowed by the client, and the loop would then sleep a whole round.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.1)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except BrokerError as exc:  # the store is down: next round
                log.warning("expiry_failed", code=exc.code.value, error=exc.message)
            except Exception:  # a bug must not end expiry for good; it is logged
                log.exception("expiry_crashed")
            await asyncio.sleep(0 if self.backlog else self.every_s)
