"""The Redis store's retention: ended jobs expire into the daily ledger (see `retention.py`).

    {P:jobs}:ledger:<day>        hash  "<team>\\t<provider>\\t<model>\\t<figure>" -> summed integer
    {P:jobs}:ledger-days         zset  the days the ledger holds (score: the day's ordinal)
    {P:jobs}:upload:<digest>     set   ids of the jobs naming an uploaded image (`create_job.lua` adds)

The ledger shares the jobs' hash tag, so one script (`lua/expire_job.lua`) deletes a job with every
index naming it and adds its figures to its day, atomically: two replicas expiring one job, or a
script redis-py resends, find it gone the second time and add nothing. A job's settled budget
reservation (under `{P:budget}`, another slot) is deleted after the script; it would expire by itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime

from broker.schema import JobStatus
from broker.store.base import JobRecord, readable
from broker.store.redis_base import opt_arg
from broker.store.redis_indexes import RedisIndexes
from broker.store.retention import SEPARATOR, Expiry, LedgerRow, merge_rows

_CHUNK = 200  # created-index entries read per round while looking for ended jobs


def _task_fields(record: JobRecord) -> list[str]:
    """The fields of `{P:jobs}:tasks` that may name the job: each attempt's task, by its handle or by
    the task id the attempt shows (the script removes only those that name this job)."""
    attempts = record.job.attempts
    providers = {attempt.id: attempt.provider for attempt in attempts}
    fields = {f"{a.provider}:{a.provider_job_id}" for a in attempts if a.provider_job_id is not None}
    fields.update(
        f"{providers[attempt_id]}:{handle.provider_job_id}"
        for attempt_id, handle in record.handles.items()
        if attempt_id in providers
    )
    return sorted(fields)


class RedisRetention(RedisIndexes):
    """Expiry of ended jobs and the daily ledger, on Redis."""

    def upload_index(self, record: JobRecord) -> list[str]:
        """The set of jobs naming the record's upload, as a one-key list (none without an upload)."""
        digest = record.job.request.image_upload
        return [] if digest is None else [self._keys.jobs_index("upload", digest)]

    async def job_teams(self) -> list[str]:
        # Each team's listing index is a key of its own.
        return await self.key_suffixes(self._keys.jobs_index("team", ""))

    async def ended_jobs(
        self, team: str, created_before: datetime, *, limit: int, skip: int = 0
    ) -> list[JobRecord]:
        index = self._keys.jobs_index("created-team", team)
        ended = {status.value for status in JobStatus if status.terminal}
        found: list[str] = []
        offset, seen = 0, 0
        async with self.client() as client:
            while len(found) < limit:
                ids = await client.zrangebyscore(
                    index, "-inf", f"({created_before.timestamp()!r}", start=offset, num=_CHUNK
                )
                if not ids:
                    break
                offset += len(ids)
                async with client.pipeline(transaction=False) as pipe:
                    for job_id in ids:
                        pipe.hget(self._keys.job(str(job_id)), "s")
                    statuses = await pipe.execute()
                for job_id, status in zip(ids, statuses, strict=True):
                    if status in ended:
                        seen += 1
                        if seen > skip and len(found) < limit:
                            found.append(str(job_id))
            async with client.pipeline(transaction=False) as pipe:
                for job_id in found:
                    pipe.hmget(self._keys.job(job_id), ["r", "v", "o", "l"])
                rows = await pipe.execute()
        # The version lives beside the record JSON (see `redis.py`); an ended job holds no lease.
        versions = {job_id: int(row[1]) for job_id, row in zip(found, rows, strict=True) if row[0]}
        records = readable(row[0] for row in rows if row[0] is not None)
        return [r.model_copy(update={"version": versions[r.id]}) for r in records if r.id in versions]

    async def upload_in_use(self, digest: str, *, besides: str) -> bool:
        async with self.client() as client:
            members = await client.srandmember(self._keys.jobs_index("upload", digest), 2)
        return any(str(member) != besides for member in members or [])

    async def expire_job(self, record: JobRecord, rows: Sequence[LedgerRow]) -> Expiry:
        if not record.status.terminal:
            return Expiry.NOT_ENDED
        day = record.job.created_at.astimezone(UTC).date()
        if any(row.day != day for row in rows):
            raise ValueError("a job's ledger rows are all of the day it was created")
        keys, team, status = self._keys, record.job.team, record.status.value
        index = keys.jobs_index
        tasks = _task_fields(record)
        increments = [
            part
            for row in rows
            for name, amount in row.figures.items()
            if amount
            for part in (SEPARATOR.join((row.team, row.provider, row.model, name)), str(amount))
        ]
        outcome = await self._run(
            "expire",
            [
                keys.job(record.id),
                index("idem", team),
                index("ids"),
                index("team", team),
                index("created"),
                index("created-team", team),
                index("status", status),
                index("team-status", team, status),
                index("due"),
                index("tasks"),
                index("reconcile"),
                index("unreadable"),
                index("ledger-days"),
                index("ledger", day.isoformat()),
                *self.upload_index(record),
            ],
            [
                str(record.version),
                record.id,
                status,
                opt_arg(record.idempotency_key),
                str(day.toordinal()),
                day.isoformat(),
                str(len(tasks)),
                *tasks,
                *increments,
            ],
        )
        expiry = Expiry(str(outcome))
        if expiry is Expiry.EXPIRED:
            async with self.client() as client:
                await client.delete(keys.reservation(record.id))
        return expiry

    async def ledger_rows(self, start: date, end: date, *, team: str | None = None) -> list[LedgerRow]:
        index = self._keys.jobs_index
        async with self.client() as client:
            days = await client.zrangebyscore(
                index("ledger-days"), start.toordinal(), f"({end.toordinal()}"
            )
            async with client.pipeline(transaction=False) as pipe:
                for day in days:
                    pipe.hgetall(index("ledger", str(day)))
                hashes = await pipe.execute()
        rows: list[LedgerRow] = []
        for day, fields in zip(days, hashes, strict=True):
            for field, amount in fields.items():
                row_team, provider, model, name = str(field).split(SEPARATOR)
                if team is None or row_team == team:
                    figure = {name: int(amount)}
                    rows.append(LedgerRow(date.fromisoformat(str(day)), row_team, provider, model, figure))
        return merge_rows(rows)

    async def drop_ledger_before(self, day: date) -> None:
        index = self._keys.jobs_index
        async with self.client() as client:
            old = await client.zrangebyscore(index("ledger-days"), "-inf", f"({day.toordinal()}")
            for stale in map(str, old):
                await client.delete(index("ledger", stale))
                await client.zrem(index("ledger-days"), stale)

