"""The Redis store's batches (key layout beside the jobs', in `redis.py`'s terms):

    {P:jobs}:batch:<id>              string  the batch record JSON
    {P:jobs}:batch-idem:<team>       hash    Idempotency-Key -> batch id
    {P:jobs}:batch-created:<team>    zset    the team's batch ids by created_at (unix s), for retention;
                                             a batch stored before it has no entry and never expires

A batch's record is written first (one script, idempotent on its key), then each of its jobs with the
jobs' own create: the job keys share the `{P:jobs}` tag but a thousand jobs' indexes are too many for
one script to declare comfortably, and a record without some of its jobs is completed by a replay of
the same key (`broker.jobs.batches`). The batch reservation is one script under `{P:budget}`.

Expiry (`lua/expire_batch.lua`) is one script over the batch's keys and all its job keys (up to 1,000,
all under `{P:jobs}`): it deletes the record, its Idempotency-Key and its index entry only when none
of the job keys exists, so a job that is still stored always keeps its batch.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from broker.store.base import BudgetWindow, JobRecord, Reservation, VersionConflict
from broker.store.batches import BatchExpiry, BatchRecord, check_same_body, readable_batches
from broker.store.redis_base import (
    RedisConnection,
    float_arg,
    job_from_row,
    opt_arg,
    outage_as_unavailable,
    write_token,
)


class RedisBatches(RedisConnection):
    if TYPE_CHECKING:  # the jobs' own create, in `redis.py`

        async def create_job(self, record: JobRecord) -> tuple[JobRecord, bool]: ...

    async def reserve_budgets(self, amounts: Mapping[str, int], windows: list[BudgetWindow]) -> Reservation:
        if any(amount < 0 for amount in amounts.values()):
            raise ValueError("a reservation cannot be negative")
        keys = self._keys
        ids = list(amounts)
        reply = await self._run(
            "reserve_many",
            [keys.open_reservations, *(keys.window(w.key) for w in windows), *map(keys.reservation, ids)],
            [
                len(windows),
                sum(amounts.values()),
                write_token(),
                float_arg(time.time()),
                *(w.limit_micros for w in windows),
                *(w.key for w in windows),
                *ids,
                *(amounts[job_id] for job_id in ids),
            ],
        )
        remaining = {w.key: int(left) for w, left in zip(windows, reply[1:], strict=True)}
        return Reservation(ok=reply[0] == 1, remaining_micros=remaining)

    async def create_batch(self, batch: BatchRecord, jobs: Sequence[JobRecord]) -> tuple[BatchRecord, bool]:
        outcome, batch_id = await self._run(
            "create_batch",
            [self._idem_key(batch.team), self._batch_key(batch.id), self._created_key(batch.team)],
            [
                batch.idempotency_key or "",
                batch.id,
                batch.model_dump_json(),
                float_arg(batch.created_at.timestamp()),
            ],
        )
        if outcome == "duplicate":
            raise VersionConflict(f"a batch with id {batch.id} already exists")
        if outcome == "existing" and str(batch_id) != batch.id:
            existing = await self.get_batch(str(batch_id))
            if existing is None:  # the key names a batch whose record is gone: not this body's batch
                raise VersionConflict(f"the batch {batch_id} of this Idempotency-Key cannot be read")
            check_same_body(existing, batch)
            return existing, False
        for job in jobs:  # this batch's record is stored (or was, by a call whose reply was lost)
            with contextlib.suppress(VersionConflict):  # created by that first call already
                await self.create_job(job)
        return batch, True

    async def get_batch(self, batch_id: str) -> BatchRecord | None:
        with outage_as_unavailable():
            raw = await self._redis.get(self._batch_key(batch_id))
        return None if raw is None else BatchRecord.model_validate_json(raw)

    async def find_idempotent_batch(self, team: str, key: str) -> BatchRecord | None:
        with outage_as_unavailable():
            batch_id = await self._redis.hget(self._idem_key(team), key)
        return None if batch_id is None else await self.get_batch(str(batch_id))

    async def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        with outage_as_unavailable():
            async with self._redis.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.hmget(self._keys.job(job_id), ["r", "v", "o", "l"])
                rows = await pipe.execute()
        records: list[JobRecord | None] = []
        for job_id, row in zip(job_ids, rows, strict=True):
            try:
                records.append(None if row[0] is None else job_from_row(row, job_id))
            except ValueError:
                records.append(None)
        return records

    # Retention ----------------------------------------------------------------------------------
    async def batch_teams(self) -> list[str]:
        return await self.key_suffixes(self._created_key(""))

    async def old_batches(
        self, team: str, created_before: datetime, *, limit: int, skip: int = 0
    ) -> list[BatchRecord]:
        with outage_as_unavailable():
            ids = await self._redis.zrangebyscore(
                self._created_key(team), "-inf", f"({created_before.timestamp()!r}", start=skip, num=limit
            )
            async with self._redis.pipeline(transaction=False) as pipe:
                for batch_id in ids:
                    pipe.get(self._batch_key(str(batch_id)))
                raws = await pipe.execute()
        return readable_batches(raw for raw in raws if raw is not None)

    async def expire_batch(self, batch: BatchRecord) -> BatchExpiry:
        outcome = await self._run(
            "expire_batch",
            [
                self._batch_key(batch.id),
                self._idem_key(batch.team),
                self._created_key(batch.team),
                *map(self._keys.job, batch.job_ids),
            ],
            [batch.id, opt_arg(batch.idempotency_key)],
        )
        return BatchExpiry(str(outcome))

    def _batch_key(self, batch_id: str) -> str:
        return self._keys.jobs_index("batch", batch_id)

    def _idem_key(self, team: str) -> str:
        return self._keys.jobs_index("batch-idem", team)

    def _created_key(self, team: str) -> str:
        return self._keys.jobs_index("batch-created", team)
