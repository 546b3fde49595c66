"""The shared store: Redis, so several stateless broker replicas can serve one deployment.

Key layout (`P` is the configurable prefix). Every multi-key change is one Lua script (in `lua/`,
registered by `redis_base.py`), and every key a script touches carries the same hash tag, so each
script runs inside one Redis Cluster slot:

    {P:jobs}:job:<id>                  hash  r=record JSON (without the three fields below), v=version,
                                             o="=" + lease owner, l=lease until (unix s), s=status,
                                             t=team, h=request hash, w=token of the last write
    {P:jobs}:idem:<team>               hash  idempotency key -> job id
    {P:jobs}:ids                       zset  every job id (score 0: ordered by id, i.e. by time)
    {P:jobs}:team:<team>               zset  the team's job ids
    {P:jobs}:status:<status>           zset  job ids per status (ZCARD counts them)
    {P:jobs}:team-status:<team>:<st>   zset  job ids per team and status
    {P:jobs}:created                   zset  job ids scored by created_at (unix s)
    {P:jobs}:created-team:<team>       zset  the same, per team
    {P:jobs}:due                       zset  unfinished jobs, scored by when a claim may take them: their
                                             next step's due time, or the end of the lease a step holds
    {P:jobs}:tasks                     hash  "<provider>:<task id>" -> job id (provider webhooks find jobs)
    {P:jobs}:claim:<token>             string the jobs a claim took, for 60 s (see replays below)
    {P:jobs}:unreadable                zset  ids of records that could not be decoded, set aside
    {P:jobs}:upload:<digest>, ledger:<day>, ledger-days   retention's (`redis_retention.py`)
    {P:budget}:w:<window key>          hash  spent, reserved (integer micro-USD)
    {P:budget}:res:<job id>            hash  "w:<window key>" -> reserved amount (0 once settled), token ->
                                             write token, spent -> what the job put in the windows' spend;
                                             kept for a week after settling, for reconciled corrections
    {P:budget}:open                    zset  ids of jobs with an unsettled reservation, by when it was made
    {P:jobs}:reconcile, webhooks, ...  the small indexes beside the jobs (`redis_indexes.py`)
    {P:policy:<team>}:history          list  every policy version as JSON, oldest first
    {P:policy:<team>}:write            string token of the last policy write

Why these tags: a claim must find the oldest claimable job among all teams and lease it atomically, and
a listing must page one consistent index, so all job keys share `{P:jobs}`; on a cluster they live on
one shard, which is far more than video jobs (minutes each) need. A reservation spans arbitrary window
keys, so budgets share `{P:budget}`. A policy write only touches its own team, so policies are tagged
per team. Every key a script reads or writes is passed to it in KEYS, as Redis Cluster requires (a
script never builds a key name from its arguments; `tests/test_store_redis_keys.py` holds them to it):
the caller names them when it knows them (a create's indexes, a replace's, a reservation's windows),
and reads first when only the data knows them (a claim's candidates, a settlement's windows); the
script re-checks what it was given and answers "not these keys" rather than step outside them.

Scheduling is one sorted set, `due`, as arq and saq do it: a job waiting for its provider is a score in
it, not a coroutine. A claim reads the lowest scores up to the caller's clock, then (one script) leases
those still due, setting each one's score to its lease's end (one another claim took in between is
skipped, and the claim reads again); a step's last write puts the job back at its next due time with no
lease, and an ended job leaves the set. A replica that dies mid-step leaves its jobs scored at their
leases' ends, so any replica takes them once the leases lapse; one that stops cleanly releases them.

Why no Redis Stream (the first version dispatched through a consumer group): a stream hands each job to
one consumer once, which suits a job that one worker carries to its end. Here a job is claimed again
for every step, at a time only its own record knows; the stream would need an entry per step and a
second index for due times anyway. The lease in the job hash stays the lock, judged by the claimer's
clock (the runner's injected clock, the contract suite's fixed times), and the lease owner is readable
there (`HGET ... o`) for whoever wants to see which replica holds a job.

redis-py retries a command after a dropped connection, which could run a script twice when only the
reply was lost. Each write therefore carries a random token, stored with what it wrote: a replay finds
its own token and reports the first run's result instead of acting again. Connection errors, timeouts,
failovers and a full Redis become `StoreUnavailable` (HTTP 503 `store_unavailable`); the client
reconnects by itself when Redis is back. A timed-out write may still have happened: the caller learns
which by reading the job again (or by repeating a create with its idempotency key).

A second reservation for a job adds to its first; settling releases all of it, and settling again
with a corrected amount books the difference (`redis_budgets.py`). Durability is Redis's: run it with
`appendonly yes` so an acknowledged write survives a Redis restart. `cluster=True` uses redis-py's
cluster client; the layout above needs nothing else from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import structlog

from broker.schema import JobStatus
from broker.store.base import (
    IdempotencyConflict,
    JobRecord,
    PolicyVersion,
    RecordUnreadable,
    Store,
    StoreUnavailable,
    VersionConflict,
    next_policy_version,
)
from broker.store.redis_base import float_arg, opt_arg, outage_as_unavailable, write_token
from broker.store.redis_base import job_from_row as _decode
from broker.store.redis_batches import RedisBatches
from broker.store.redis_budgets import RedisBudgets
from broker.store.redis_retention import RedisRetention

log = structlog.get_logger("broker.store")

# The record fields a claim changes live in their own hash fields, so a script never rewrites JSON.
_LEASE_FIELDS = {"version", "lease_owner", "lease_until"}
_FETCH_CHUNK = 500
_REPLACE_TRIES = 3  # the second always declares the stored job's indexes; a third covers a quarantine
# Claims read again while others took what they saw; reading extra spreads rival claims over `due`.
_CLAIM_ROUNDS, _CLAIM_SLACK = 64, 16


def _encode(record: JobRecord) -> str:
    return record.model_dump_json(exclude=_LEASE_FIELDS)


def _readable_rows(rows: Iterable[Sequence[Any]]) -> list[JobRecord]:
    """The rows that decode; one that does not is logged and left out (see `readable`)."""
    records: list[JobRecord] = []
    for row in rows:
        try:
            records.append(_decode(row))
        except RecordUnreadable as exc:
            log.error("job_record_unreadable", error=exc.message)
    return records


class RedisStore(RedisRetention, RedisBudgets, RedisBatches, Store):
    """`redis://host:port/db` (or `rediss://`, `unix://`); several replicas may share one. With
    `cluster=True` the URL names any node of a Redis Cluster and the cluster client routes by slot."""

    # Jobs ---------------------------------------------------------------------------------------
    async def create_job(self, record: JobRecord) -> tuple[JobRecord, bool]:
        keys = self._keys
        team, status = record.job.team, record.status.value
        reply = await self._run(
            "create",
            [
                keys.job(record.id),
                keys.jobs_index("idem", team),
                keys.jobs_index("ids"),
                keys.jobs_index("team", team),
                keys.jobs_index("created"),
                keys.jobs_index("created-team", team),
                keys.jobs_index("status", status),
                keys.jobs_index("team-status", team, status),
                keys.jobs_index("due"),
                *self.upload_index(record),
            ],
            [
                record.id,
                team,
                status,
                float_arg(record.ready_at),
                str(record.version),
                _encode(record),
                opt_arg(record.lease_owner),
                float_arg(record.lease_until),
                repr(record.job.created_at.timestamp()),
                opt_arg(record.idempotency_key),
                record.request_hash,
                write_token(),
            ],
        )
        outcome = reply[0]
        if outcome == "existing":
            # The key names another job: read it here, outside the script, which was not given its key.
            job_id = str(reply[1])
            with outage_as_unavailable():
                row = await self._redis.hmget(keys.job(job_id), ["h", "r", "v", "o", "l"])
            if row[1] is None:  # expired since (with its key, in one script): the key is free again
                return await self.create_job(record)
            if row[0] != record.request_hash:
                raise IdempotencyConflict(
                    "this Idempotency-Key was used with a different request body", details={"job_id": job_id}
                )
            return _decode(row[1:], job_id), False
        if outcome == "duplicate":
            raise VersionConflict(f"a job with id {record.id} already exists")
        return record, True

    async def get_job(self, job_id: str) -> JobRecord | None:
        with outage_as_unavailable():
            row = await self._redis.hmget(self._keys.job(job_id), ["r", "v", "o", "l"])
        return None if row[0] is None else _decode(row, job_id)

    async def find_idempotent_job(self, team: str, key: str) -> JobRecord | None:
        with outage_as_unavailable():
            job_id = await self._redis.hget(self._keys.jobs_index("idem", team), key)
        if job_id is None:
            return None
        return await self.get_job(job_id.decode() if isinstance(job_id, bytes) else str(job_id))

    async def list_jobs(
        self,
        *,
        team: str | None = None,
        status: JobStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[JobRecord], str | None]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if team is not None and status is not None:
            index = self._keys.jobs_index("team-status", team, status.value)
        elif team is not None:
            index = self._keys.jobs_index("team", team)
        elif status is not None:
            index = self._keys.jobs_index("status", status.value)
        else:
            index = self._keys.jobs_index("ids")
        upper = "+" if cursor is None else f"({cursor}"
        client = self._redis
        with outage_as_unavailable():
            found = await client.zrevrangebylex(index, upper, "-", start=0, num=limit + 1)
            ids = [str(job_id) for job_id in found]
            async with client.pipeline(transaction=False) as pipe:
                for job_id in ids[:limit]:
                    pipe.hmget(self._keys.job(job_id), ["r", "v", "o", "l"])
                rows = await pipe.execute()
        found_rows = (row for row in rows if row[0] is not None)
        # Two reads, not one snapshot: a job that left `status` in between is left out.
        records = [r for r in _readable_rows(found_rows) if status in (None, r.status)]
        next_cursor = ids[limit - 1] if len(ids) > limit else None
        return records, next_cursor

    async def jobs_created_between(
        self, start: datetime, end: datetime, *, team: str | None = None
    ) -> list[JobRecord]:
        keys = self._keys
        index = keys.jobs_index("created") if team is None else keys.jobs_index("created-team", team)
        client = self._redis
        with outage_as_unavailable():
            found = await client.zrangebyscore(index, repr(start.timestamp()), f"({end.timestamp()!r}")
            ids = [str(job_id) for job_id in found]
            records: list[JobRecord] = []
            # Fetched in chunks, not one long script: a job that expires meanwhile (into the ledger) is
            # left out, as it would be a moment later.
            for at in range(0, len(ids), _FETCH_CHUNK):
                async with client.pipeline(transaction=False) as pipe:
                    for job_id in ids[at : at + _FETCH_CHUNK]:
                        pipe.hmget(keys.job(job_id), ["r", "v", "o", "l"])
                    rows = await pipe.execute()
                records.extend(_readable_rows(row for row in rows if row[0] is not None))
        return sorted(records, key=lambda record: record.id)

    async def replace_job(self, record: JobRecord) -> JobRecord | None:
        stored = record.model_copy(update={"version": record.version + 1})
        keys = self._keys
        # The job's old status is not in `record`: declare the indexes of every status of its team. The
        # script answers with the stored team and status if those are not among them (a record
        # quarantined as unreadable, a team renamed by hand), and the call is made again with them.
        team, statuses = record.job.team, [status.value for status in JobStatus]
        for _ in range(_REPLACE_TRIES):
            written = await self._run(
                "replace",
                [keys.job(record.id), keys.jobs_index("due"), *self._status_indexes(team, statuses)],
                [
                    str(record.version),
                    str(stored.version),
                    _encode(stored),
                    stored.status.value,
                    float_arg(stored.ready_at),
                    opt_arg(stored.lease_owner),
                    float_arg(stored.lease_until),
                    stored.request_hash,
                    write_token(),
                    record.id,
                    team,
                    *statuses,
                ],
            )
            if not isinstance(written, list):
                return stored if written == 1 else None
            team, statuses = str(written[1]), [*statuses, str(written[2])]
        return None

    def _status_indexes(self, team: str, statuses: list[str]) -> list[str]:
        """status:<s> and team-status:<team>:<s> of each status, in that order."""
        index = self._keys.jobs_index
        return [key for s in statuses for key in (index("status", s), index("team-status", team, s))]

    async def claim_due(self, owner: str, now: float, lease_s: float, *, limit: int) -> list[JobRecord]:
        claimed: list[JobRecord] = []
        for _ in range(_CLAIM_ROUNDS):
            wanted = limit - len(claimed)
            if wanted < 1:
                break
            try:
                taken, skipped = await self._claim_round(owner, now, lease_s, wanted)
            except StoreUnavailable:
                if not claimed:
                    raise
                break  # what earlier rounds leased is the caller's to run, not left to lapse
            claimed.extend(taken)
            if skipped == 0:  # every candidate taken, or none beyond them due: another read finds no more
                break
        return claimed

    async def _claim_round(
        self, owner: str, now: float, lease_s: float, wanted: int
    ) -> tuple[list[JobRecord], int]:
        """Lease up to `wanted` of the jobs due now; also says how many candidates others took first."""
        keys, due, token = self._keys, self._keys.jobs_index("due"), write_token()
        # The candidates are read first, so the script can be given their keys; it takes only those
        # still due, and reading a few more than wanted leaves concurrent claimers something to take.
        with outage_as_unavailable():
            found = await self._redis.zrangebyscore(due, "-inf", now, start=0, num=wanted + _CLAIM_SLACK)
        ids = [str(job_id) for job_id in found]
        if not ids:
            return [], 0
        reply = await self._run(
            "claim",
            [due, keys.jobs_index("claim", token), *(keys.job(job_id) for job_id in ids)],
            [float_arg(now), float_arg(now + lease_s), token, opt_arg(owner), wanted, *ids],
        )
        return await self._claimed(reply[1:], now), int(reply[0])

    async def _claimed(self, flat: Sequence[Any], now: float) -> list[JobRecord]:
        """The records of a claim's answer; one that cannot be decoded is set aside (see `claim_due`)."""
        claimed: list[JobRecord] = []
        for at in range(0, len(flat), 5):
            job_id, row = str(flat[at]), flat[at + 1 : at + 5]
            try:
                claimed.append(_decode(row, job_id))
            except RecordUnreadable:
                # Leased now, so no claim takes it again before the runner has set it aside.
                with outage_as_unavailable():
                    await self._redis.zadd(self._keys.jobs_index("unreadable"), {job_id: now})
        return claimed

    async def next_due_at(self) -> float | None:
        with outage_as_unavailable():
            first = await self._redis.zrange(self._keys.jobs_index("due"), 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    async def unreadable_due(self, now: float, *, limit: int = 10) -> list[str]:
        with outage_as_unavailable():
            found = await self._redis.zrange(self._keys.jobs_index("unreadable"), 0, limit - 1)
        return [str(job_id) for job_id in found]

    async def quarantine_job(self, job_id: str) -> None:
        keys = self._keys
        with outage_as_unavailable():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zrem(keys.jobs_index("due"), job_id)
                pipe.zrem(keys.jobs_index("unreadable"), job_id)
                pipe.hset(keys.job(job_id), "s", "unreadable")
                await pipe.execute()

    async def index_task(self, provider: str, provider_job_id: str, job_id: str) -> None:
        with outage_as_unavailable():
            await self._redis.hset(self._keys.jobs_index("tasks"), f"{provider}:{provider_job_id}", job_id)

    async def find_task(self, provider: str, provider_job_id: str) -> str | None:
        with outage_as_unavailable():
            found = await self._redis.hget(self._keys.jobs_index("tasks"), f"{provider}:{provider_job_id}")
        return None if found is None else str(found)

    async def count_jobs(self, status: JobStatus) -> int:
        with outage_as_unavailable():
            count: int = await self._redis.zcard(self._keys.jobs_index("status", status.value))
        return count

    # Policies -----------------------------------------------------------------------------------
    async def get_policy(self, team: str) -> PolicyVersion | None:
        with outage_as_unavailable():
            raw = await self._redis.lindex(self._keys.policy(team, "history"), -1)
        return None if raw is None else PolicyVersion.model_validate_json(raw)

    async def put_policy(
        self, team: str, policy: dict[str, Any], *, expected_version: int, actor: str, at: datetime
    ) -> PolicyVersion:
        current = await self.get_policy(team)
        new = next_policy_version(
            team, current, policy, expected_version=expected_version, actor=actor, at=at
        )
        # The script re-checks the version, so the diff above is against the version it replaces.
        outcome = await self._run(
            "put_policy",
            [self._keys.policy(team, "history"), self._keys.policy(team, "write")],
            [expected_version, new.model_dump_json(), write_token()],
        )
        if outcome != -1:
            raise VersionConflict(
                f"policy of {team} is at version {outcome}, not {expected_version}",
                details={"current_version": outcome},
            )
        return new

    async def policy_history(self, team: str) -> list[PolicyVersion]:
        with outage_as_unavailable():
            rows = await self._redis.lrange(self._keys.policy(team, "history"), 0, -1)
        return [PolicyVersion.model_validate_json(row) for row in rows]
