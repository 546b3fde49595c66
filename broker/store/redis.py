"""The shared store: Redis, so several stateless broker replicas can serve one deployment.

Key layout (`P` is the configurable prefix). Every multi-key change is one Lua script, and every key a
script touches carries the same hash tag, so each script runs inside one Redis Cluster slot:

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
    {P:budget}:w:<window key>          hash  spent, reserved (integer micro-USD)
    {P:budget}:res:<job id>            hash  "w:<window key>" -> reserved amount (0 once settled), token ->
                                             write token, spent -> what the job put in the windows' spend;
                                             kept for a week after settling, for reconciled corrections
    {P:budget}:open                    zset  ids of jobs with an unsettled reservation, by when it was made
    {P:jobs}:reconcile                 zset  ids of jobs with charges to confirm, by when to ask next
    {P:policy:<team>}:history          list  every policy version as JSON, oldest first
    {P:policy:<team>}:write            string token of the last policy write

Why these tags: a claim must find the oldest claimable job among all teams and lease it atomically, and
a listing must page one consistent index, so all job keys share `{P:jobs}`; on a cluster they live on
one shard, which is far more than video jobs (minutes each) need. A reservation spans arbitrary window
keys, so budgets share `{P:budget}`. A policy write only touches its own team, so policies are tagged
per team. Scripts derive per-job and per-index key names from the tag they were given, so no script
ever leaves its slot.

Scheduling is one sorted set, `due`, as arq and saq do it: a job waiting for its provider is a score in
it, not a coroutine. A claim (one script) takes the lowest scores up to the caller's clock and sets each
one's score to its lease's end; a step's last write puts the job back at its next due time with no
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
with a corrected amount books the difference. Durability is Redis's:
run it with `appendonly yes` so an acknowledged write survives a Redis restart. `cluster=True` uses
redis-py's cluster client; the layout above needs nothing else from it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ClusterError, OutOfMemoryError, ReadOnlyError, SlotNotCoveredError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from broker.schema import JobStatus
from broker.store.base import (
    BudgetWindow,
    IdempotencyConflict,
    JobRecord,
    PolicyVersion,
    RecordUnreadable,
    Reservation,
    Store,
    StoreUnavailable,
    VersionConflict,
    next_policy_version,
    unreadable,
)

log = structlog.get_logger("broker.store")

# The record fields a claim changes live in their own hash fields, so a script never rewrites JSON.
_LEASE_FIELDS = {"version", "lease_owner", "lease_until"}
_FETCH_CHUNK = 500
SETTLED_KEEP_S = 7 * 24 * 3600  # a settled reservation is kept this long for corrections
_POOL_SIZE = 64  # connections per replica; commands take milliseconds, so waiting for one is short
_POOL_WAIT_S = 5.0  # then the store counts as unavailable
# Redis is down, failing over, or full: callers may retry later (HTTP 503). Anything else is a bug.
_OUTAGES = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    ClusterError,
    SlotNotCoveredError,
    OutOfMemoryError,
)

# Shared by every job script: ARGV[1] is the `{P:jobs}:` base every derived key starts with.
_JOB_LUA = """
local base = ARGV[1]
local function key(...) return base .. table.concat({...}, ':') end
local function fields(jk) return redis.call('HMGET', jk, 'r', 'v', 'o', 'l') end
local function index(op, id, team, status)
  redis.call(op, key('status', status), id)
  redis.call(op, key('team-status', team, status), id)
end
local function set_lease(jk, owner, lease)
  if owner == '' then redis.call('HDEL', jk, 'o') else redis.call('HSET', jk, 'o', owner) end
  if lease == '' then redis.call('HDEL', jk, 'l') else redis.call('HSET', jk, 'l', lease) end
end
-- An unfinished job sits in `due` scored by when a claim may take it; an ended one leaves it.
local function place(id, ready)
  if ready == '' then redis.call('ZREM', key('due'), id) else redis.call('ZADD', key('due'), ready, id) end
end
"""

# KEYS: job hash, the team's idempotency hash. ARGV: base, id, team, status, ready ("" once ended), version,
# record, owner, lease, created score, idempotency key ("" or "=" + key), request hash, token.
_CREATE = (
    _JOB_LUA
    + """
local id, team, status, idem = ARGV[2], ARGV[3], ARGV[4], string.sub(ARGV[11], 2)
local has_idem = ARGV[11] ~= ''
if has_idem then
  local existing = redis.call('HGET', KEYS[2], idem)
  if existing == id then return {'created'} end
  if existing then
    local jk = key('job', existing)
    if redis.call('HGET', jk, 'h') ~= ARGV[12] then return {'conflict', existing} end
    local f = fields(jk)
    return {'existing', f[1], f[2], f[3], f[4]}
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'w') == ARGV[13] then return {'created'} end
  return {'duplicate'}
end
redis.call('HSET', KEYS[1], 'r', ARGV[7], 'v', ARGV[6], 's', status, 't', team, 'h', ARGV[12], 'w', ARGV[13])
set_lease(KEYS[1], ARGV[8], ARGV[9])
if has_idem then redis.call('HSET', KEYS[2], idem, id) end
redis.call('ZADD', key('ids'), 0, id)
redis.call('ZADD', key('team', team), 0, id)
redis.call('ZADD', key('created'), ARGV[10], id)
redis.call('ZADD', key('created-team', team), ARGV[10], id)
redis.call('ZADD', key('status', status), 0, id)
redis.call('ZADD', key('team-status', team, status), 0, id)
place(id, ARGV[5])
return {'created'}
"""
)

# KEYS: job hash. ARGV: base, expected version, new version, record, status, ready ("" once ended), owner,
# lease, request hash, token, job id. Returns 1 when written (now or by this token's first run), else 0.
_REPLACE = (
    _JOB_LUA
    + """
local jk = KEYS[1]
local cur = redis.call('HMGET', jk, 'v', 's', 't', 'w')
if not cur[1] then return 0 end
if cur[1] ~= ARGV[2] then
  if cur[1] == ARGV[3] and cur[4] == ARGV[10] then return 1 end
  return 0
end
local id = ARGV[11]
redis.call('HSET', jk, 'r', ARGV[4], 'v', ARGV[3], 's', ARGV[5], 'h', ARGV[9], 'w', ARGV[10])
set_lease(jk, ARGV[7], ARGV[8])
if cur[2] ~= ARGV[5] then
  index('ZREM', id, cur[3], cur[2])
  redis.call('ZADD', key('status', ARGV[5]), 0, id)
  redis.call('ZADD', key('team-status', cur[3], ARGV[5]), 0, id)
end
place(id, ARGV[6])
return 1
"""
)

# KEYS: due, this claim's token key. ARGV: base, now, lease until, token, encoded owner, limit.
# Leases up to `limit` jobs due at `now`, longest due first; each one's score becomes its lease's end,
# so a job whose runner dies is due again the moment its lease lapses.
_CLAIM = (
    _JOB_LUA
    + """
local replayed = redis.call('GET', KEYS[2])
local out = {}
local function emit(id)
  local f = fields(key('job', id))
  table.insert(out, id)
  table.insert(out, f[1])
  table.insert(out, f[2])
  table.insert(out, f[3])
  table.insert(out, f[4])
end
if replayed then
  for id in string.gmatch(replayed, '[^,]+') do emit(id) end
  return out
end
local now, owner, limit = tonumber(ARGV[2]), ARGV[5], tonumber(ARGV[6])
local taken = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, limit)) do
  local jk = key('job', id)
  if redis.call('EXISTS', jk) == 0 then
    redis.call('ZREM', KEYS[1], id)
  else
    redis.call('HINCRBY', jk, 'v', 1)
    redis.call('HSET', jk, 'o', owner, 'l', ARGV[3], 'w', ARGV[4])
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    table.insert(taken, id)
    emit(id)
  end
end
-- Kept only as long as redis-py may resend this call.
if #taken > 0 then redis.call('SET', KEYS[2], table.concat(taken, ','), 'EX', 60) end
return out
"""
)

# KEYS: an index zset. ARGV: base, upper bound ('+' or '(<cursor>'), count. Newest first, one snapshot:
# id, then the fields r, v, o, l of each job.
_LIST = (
    _JOB_LUA
    + """
local out = {}
for _, id in ipairs(redis.call('ZREVRANGEBYLEX', KEYS[1], ARGV[2], '-', 'LIMIT', 0, tonumber(ARGV[3]))) do
  local f = fields(key('job', id))
  table.insert(out, id)
  table.insert(out, f[1])
  table.insert(out, f[2])
  table.insert(out, f[3])
  table.insert(out, f[4])
end
return out
"""
)

# KEYS: the job's reservation, then one hash per window, then the open-reservations set. ARGV: amount,
# token, the windows' limits, then their keys, then the job id and the time. Returns {ok, remaining...}.
_RESERVE = """
local n = #KEYS - 2
local amount = tonumber(ARGV[1])
local replay = redis.call('HGET', KEYS[1], 'token') == ARGV[2]
local remaining, fits = {}, true
for i = 1, n do
  local w = redis.call('HMGET', KEYS[i + 1], 'spent', 'reserved')
  remaining[i] = tonumber(ARGV[2 + i]) - (tonumber(w[1]) or 0) - (tonumber(w[2]) or 0)
  if remaining[i] < amount then fits = false end
end
if replay then return {1, unpack(remaining)} end
if not fits then return {0, unpack(remaining)} end
for i = 1, n do
  redis.call('HINCRBY', KEYS[i + 1], 'reserved', ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'w:' .. ARGV[2 + n + i], ARGV[1])
  remaining[i] = remaining[i] - amount
end
redis.call('HSET', KEYS[1], 'token', ARGV[2])
redis.call('ZADD', KEYS[#KEYS], 'NX', ARGV[#ARGV], ARGV[#ARGV - 1])
return {1, unpack(remaining)}
"""

# KEYS: the job's reservation, the open-reservations set. ARGV: actual spend, the `{P:budget}:w:` base
# of window keys, the job id, how long to keep the settled reservation. The hash keeps each window's
# still-reserved amount (0 once released) and `spent`, what this job has put into the windows' spend:
# settling again with a corrected amount (a reconciled charge) books only the difference.
_SETTLE = """
local all = redis.call('HGETALL', KEYS[1])
local actual = tonumber(ARGV[1])
local before = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
for i = 1, #all, 2 do
  if string.sub(all[i], 1, 2) == 'w:' then
    local wk = ARGV[2] .. string.sub(all[i], 3)
    if tonumber(all[i + 1]) ~= 0 then
      redis.call('HINCRBY', wk, 'reserved', -tonumber(all[i + 1]))
      redis.call('HSET', KEYS[1], all[i], 0)
    end
    if actual ~= before then redis.call('HINCRBY', wk, 'spent', actual - before) end
  end
end
if #all > 0 then
  redis.call('HSET', KEYS[1], 'spent', actual)
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
redis.call('ZREM', KEYS[2], ARGV[3])
return 1
"""

# KEYS: the team's history list, its last-write token. ARGV: expected version, new version JSON, token.
# Returns -1 when written (now or by this token's first run), else the current version.
_PUT_POLICY = """
local n = redis.call('LLEN', KEYS[1])
if n == tonumber(ARGV[1]) then
  redis.call('RPUSH', KEYS[1], ARGV[2])
  redis.call('SET', KEYS[2], ARGV[3])
  return -1
end
if n == tonumber(ARGV[1]) + 1 and redis.call('GET', KEYS[2]) == ARGV[3] then return -1 end
return n
"""


@contextmanager
def _outage_as_unavailable() -> Iterator[None]:
    """Turn Redis being unreachable, failing over or full into `StoreUnavailable`."""
    try:
        yield
    except _OUTAGES as exc:
        # The message stays generic: redis-py's text names hosts, which callers need not see.
        raise StoreUnavailable(
            f"the job store (Redis) is unreachable ({type(exc).__name__}); retry shortly"
        ) from exc


def _token() -> str:
    return uuid.uuid4().hex


def _opt(value: str | None) -> str:
    """An optional string as a script argument: "" for None, else "=" + value (so "" stays a value)."""
    return "" if value is None else f"={value}"


def _float_arg(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _encode(record: JobRecord) -> str:
    return record.model_dump_json(exclude=_LEASE_FIELDS)


def _decode(row: Sequence[Any], job_id: str | None = None) -> JobRecord:
    """A record from its hash fields r, v, o, l (see the key layout)."""
    raw, version, owner, lease = row
    try:
        record = JobRecord.model_validate_json(raw)
    except ValueError as exc:
        raise unreadable(job_id) from exc
    return record.model_copy(
        update={
            "version": int(version),
            "lease_owner": None if owner is None else owner[1:],
            "lease_until": None if lease is None else float(lease),
        }
    )


def _readable_rows(rows: Iterable[Sequence[Any]]) -> list[JobRecord]:
    """The rows that decode; one that does not is logged and left out (see `readable`)."""
    records: list[JobRecord] = []
    for row in rows:
        try:
            records.append(_decode(row))
        except RecordUnreadable as exc:
            log.error("job_record_unreadable", error=exc.message)
    return records


class _Keys:
    """Every key name of one prefix (layout in the module docstring)."""

    def __init__(self, prefix: str) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("the Redis key prefix must not contain '{' or '}' (they delimit hash tags)")
        self.prefix = prefix
        self.jobs = f"{{{prefix}:jobs}}:"
        self.budget = f"{{{prefix}:budget}}:"

    def job(self, job_id: str) -> str:
        return f"{self.jobs}job:{job_id}"

    def cap(self, *parts: str) -> str:
        """Capacity keys (slots and submit windows) share the `{P:cap}` tag."""
        return f"{{{self.prefix}:cap}}:" + ":".join(parts)

    def jobs_index(self, *parts: str) -> str:
        return self.jobs + ":".join(parts)

    def window(self, key: str) -> str:
        return f"{self.budget}w:{key}"

    def reservation(self, job_id: str) -> str:
        return f"{self.budget}res:{job_id}"

    @property
    def open_reservations(self) -> str:
        return f"{self.budget}open"

    def policy(self, team: str, what: str) -> str:
        return f"{{{self.prefix}:policy:{team}}}:{what}"

    def pattern(self) -> str:
        """A SCAN pattern matching every key of this prefix."""
        escaped = "".join(f"\\{c}" if c in "*?[]\\" else c for c in self.prefix)
        return f"{{{escaped}:*"


class RedisStore(Store):
    """`redis://host:port/db` (or `rediss://`, `unix://`); several replicas may share one. With
    `cluster=True` the URL names any node of a Redis Cluster and the cluster client routes by slot."""

    def __init__(
        self, url: str, *, prefix: str = "broker", cluster: bool = False, **client_options: Any
    ) -> None:
        self._url = url
        self._keys = _Keys(prefix)
        self._cluster = cluster
        self._options = client_options
        self._client: aioredis.Redis | RedisCluster | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._extra_scripts: dict[str, AsyncScript] = {}

    @classmethod
    def from_url(
        cls, url: str, prefix: str = "broker", *, cluster: bool = False, **client_options: Any
    ) -> RedisStore:
        """A store on `url`; `client_options` go to redis-py (URL query options win over them)."""
        return cls(url, prefix=prefix, cluster=cluster, **client_options)

    async def open(self) -> None:
        """Build the client. A single Redis is connected on first use (a broker may start before it);
        a cluster's nodes are discovered here."""
        options: dict[str, Any] = {
            "decode_responses": True,
            # Short timeouts: a vanished Redis must become a 503 quickly, never a hung request.
            "socket_connect_timeout": 2.0,
            "socket_timeout": 5.0,
            "health_check_interval": 15,
            # Retry only a dropped connection (scripts are replay-safe); a timeout fails fast.
            "retry": Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.2), 2, (RedisConnectionError,)),
        }
        client: aioredis.Redis | RedisCluster
        if self._cluster:
            # Per node; the cluster client fails at once beyond it, so it must cover every worker.
            client = RedisCluster.from_url(self._url, **{"max_connections": 1000, **options, **self._options})
        else:
            # A busy replica (many workers, many requests) queues for a connection instead of failing.
            pool_options = {
                "max_connections": _POOL_SIZE,
                "timeout": _POOL_WAIT_S,
                **options,
                **self._options,
            }
            client = aioredis.Redis.from_pool(
                aioredis.BlockingConnectionPool.from_url(self._url, **pool_options)
            )
        scripts = {
            "create": _CREATE,
            "replace": _REPLACE,
            "claim": _CLAIM,
            "list": _LIST,
            "reserve": _RESERVE,
            "settle": _SETTLE,
            "put_policy": _PUT_POLICY,
        }
        self._scripts = {name: client.register_script(text) for name, text in scripts.items()}
        if isinstance(client, RedisCluster):
            # Discover the nodes now: redis-py 8.1 races when many first commands start the
            # discovery at once (a connection's writer goes missing mid-handshake).
            with _outage_as_unavailable():
                await client.initialize()
        self._client = client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        self._client = None

    @property
    def prefix(self) -> str:
        """The namespace of every key this store writes."""
        return self._keys.prefix

    @property
    def _redis(self) -> aioredis.Redis | RedisCluster:
        if self._client is None:
            raise StoreUnavailable("the store is not open")
        return self._client

    @property
    def keys(self) -> _Keys:
        """Every key name under this store's prefix."""
        return self._keys

    @asynccontextmanager
    async def client(self) -> AsyncIterator[aioredis.Redis | RedisCluster]:
        """The client, with an outage raised as `StoreUnavailable` (for modules beside the store)."""
        with _outage_as_unavailable():
            yield self._redis

    async def run_script(self, text: str, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        """Run a Lua script registered on first use; every key must share one hash tag."""
        if text not in self._extra_scripts:
            self._extra_scripts[text] = self._redis.register_script(text)
        client = self._redis
        with _outage_as_unavailable():
            return await self._extra_scripts[text](keys=list(keys), args=list(args), client=client)

    async def _run(self, script: str, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        client = self._redis
        with _outage_as_unavailable():
            return await self._scripts[script](keys=list(keys), args=list(args), client=client)

    async def ping(self) -> None:
        with _outage_as_unavailable():
            await self._redis.ping()

    async def drop_all_keys(self) -> None:
        """Delete every key under this store's prefix (tests and teardown)."""
        client = self._redis
        with _outage_as_unavailable():
            batch: list[str] = []
            async for key in client.scan_iter(match=self._keys.pattern(), count=500):
                batch.append(key)
                if len(batch) >= 500:
                    await client.unlink(*batch)
                    batch = []
            if batch:
                await client.unlink(*batch)

    # Jobs ---------------------------------------------------------------------------------------
    async def create_job(self, record: JobRecord) -> tuple[JobRecord, bool]:
        keys = self._keys
        team = record.job.team
        reply = await self._run(
            "create",
            [keys.job(record.id), keys.jobs_index("idem", team)],
            [
                keys.jobs,
                record.id,
                team,
                record.status.value,
                _float_arg(record.ready_at),
                str(record.version),
                _encode(record),
                _opt(record.lease_owner),
                _float_arg(record.lease_until),
                repr(record.job.created_at.timestamp()),
                _opt(record.idempotency_key),
                record.request_hash,
                _token(),
            ],
        )
        outcome = reply[0]
        if outcome == "existing":
            return _decode(reply[1:5]), False
        if outcome == "conflict":
            raise IdempotencyConflict(
                "this Idempotency-Key was used with a different request body", details={"job_id": reply[1]}
            )
        if outcome == "duplicate":
            raise VersionConflict(f"a job with id {record.id} already exists")
        return record, True

    async def get_job(self, job_id: str) -> JobRecord | None:
        with _outage_as_unavailable():
            row = await self._redis.hmget(self._keys.job(job_id), ["r", "v", "o", "l"])
        return None if row[0] is None else _decode(row, job_id)

    async def find_idempotent_job(self, team: str, key: str) -> JobRecord | None:
        with _outage_as_unavailable():
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
        flat = await self._run("list", [index], [self._keys.jobs, upper, limit + 1])
        rows = [flat[i : i + 5] for i in range(0, len(flat), 5)]
        records = _readable_rows(row[1:] for row in rows[:limit] if row[1] is not None)
        next_cursor = str(rows[limit - 1][0]) if len(rows) > limit else None
        return records, next_cursor

    async def jobs_created_between(
        self, start: datetime, end: datetime, *, team: str | None = None
    ) -> list[JobRecord]:
        keys = self._keys
        index = keys.jobs_index("created") if team is None else keys.jobs_index("created-team", team)
        client = self._redis
        with _outage_as_unavailable():
            found = await client.zrangebyscore(index, repr(start.timestamp()), f"({end.timestamp()!r}")
            ids = [str(job_id) for job_id in found]
            records: list[JobRecord] = []
            # Jobs are never deleted, so fetching in chunks (not one long script) loses nothing.
            for at in range(0, len(ids), _FETCH_CHUNK):
                async with client.pipeline(transaction=False) as pipe:
                    for job_id in ids[at : at + _FETCH_CHUNK]:
                        pipe.hmget(keys.job(job_id), ["r", "v", "o", "l"])
                    rows = await pipe.execute()
                records.extend(_readable_rows(row for row in rows if row[0] is not None))
        return sorted(records, key=lambda record: record.id)

    async def replace_job(self, record: JobRecord) -> JobRecord | None:
        stored = record.model_copy(update={"version": record.version + 1})
        written = await self._run(
            "replace",
            [self._keys.job(record.id)],
            [
                self._keys.jobs,
                str(record.version),
                str(stored.version),
                _encode(stored),
                stored.status.value,
                _float_arg(stored.ready_at),
                _opt(stored.lease_owner),
                _float_arg(stored.lease_until),
                stored.request_hash,
                _token(),
                record.id,
            ],
        )
        return stored if written == 1 else None

    async def claim_due(self, owner: str, now: float, lease_s: float, *, limit: int) -> list[JobRecord]:
        keys, token = self._keys, _token()
        flat = await self._run(
            "claim",
            [keys.jobs_index("due"), keys.jobs_index("claim", token)],
            [keys.jobs, _float_arg(now), _float_arg(now + lease_s), token, _opt(owner), limit],
        )
        claimed: list[JobRecord] = []
        for at in range(0, len(flat), 5):
            job_id, row = flat[at], flat[at + 1 : at + 5]
            try:
                claimed.append(_decode(row, job_id))
            except RecordUnreadable:
                # Leased now, so no claim takes it again before the runner has set it aside.
                with _outage_as_unavailable():
                    await self._redis.zadd(keys.jobs_index("unreadable"), {job_id: now})
        return claimed

    async def next_due_at(self) -> float | None:
        with _outage_as_unavailable():
            first = await self._redis.zrange(self._keys.jobs_index("due"), 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    async def unreadable_due(self, now: float, *, limit: int = 10) -> list[str]:
        with _outage_as_unavailable():
            found = await self._redis.zrange(self._keys.jobs_index("unreadable"), 0, limit - 1)
        return [str(job_id) for job_id in found]

    async def quarantine_job(self, job_id: str) -> None:
        keys = self._keys
        with _outage_as_unavailable():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zrem(keys.jobs_index("due"), job_id)
                pipe.zrem(keys.jobs_index("unreadable"), job_id)
                pipe.hset(keys.job(job_id), "s", "unreadable")
                await pipe.execute()

    async def index_task(self, provider: str, provider_job_id: str, job_id: str) -> None:
        with _outage_as_unavailable():
            await self._redis.hset(self._keys.jobs_index("tasks"), f"{provider}:{provider_job_id}", job_id)

    async def find_task(self, provider: str, provider_job_id: str) -> str | None:
        with _outage_as_unavailable():
            found = await self._redis.hget(self._keys.jobs_index("tasks"), f"{provider}:{provider_job_id}")
        return None if found is None else str(found)

    async def count_jobs(self, status: JobStatus) -> int:
        with _outage_as_unavailable():
            count: int = await self._redis.zcard(self._keys.jobs_index("status", status.value))
        return count

    # Budgets ------------------------------------------------------------------------------------
    async def reserve_budget(
        self, job_id: str, amount_micros: int, windows: list[BudgetWindow]
    ) -> Reservation:
        if amount_micros < 0:
            raise ValueError("a reservation cannot be negative")
        keys = self._keys
        reply = await self._run(
            "reserve",
            [keys.reservation(job_id), *(keys.window(w.key) for w in windows), keys.open_reservations],
            [
                amount_micros,
                _token(),
                *(w.limit_micros for w in windows),
                *(w.key for w in windows),
                job_id,
                _float_arg(time.time()),
            ],
        )
        remaining = {w.key: int(left) for w, left in zip(windows, reply[1:], strict=True)}
        return Reservation(ok=reply[0] == 1, remaining_micros=remaining)

    async def settle_budget(self, job_id: str, actual_micros: int) -> None:
        if actual_micros < 0:
            raise ValueError("a spend cannot be negative")
        keys = self._keys
        await self._run(
            "settle",
            [keys.reservation(job_id), keys.open_reservations],
            [actual_micros, keys.window(""), job_id, SETTLED_KEEP_S],
        )

    async def open_reservations(self, reserved_before: float, *, limit: int = 100) -> list[str]:
        with _outage_as_unavailable():
            found = await self._redis.zrangebyscore(
                self._keys.open_reservations, "-inf", f"({reserved_before!r}", start=0, num=limit
            )
        return [str(job_id) for job_id in found]

    # Reconciliation -----------------------------------------------------------------------------
    async def schedule_reconcile(self, job_id: str, at: float) -> None:
        with _outage_as_unavailable():
            await self._redis.zadd(self._keys.jobs_index("reconcile"), {job_id: at})

    async def due_reconciles(self, now: float, *, limit: int = 50) -> list[str]:
        with _outage_as_unavailable():
            found = await self._redis.zrangebyscore(
                self._keys.jobs_index("reconcile"), "-inf", now, start=0, num=limit
            )
        return [str(job_id) for job_id in found]

    async def drop_reconcile(self, job_id: str) -> None:
        with _outage_as_unavailable():
            await self._redis.zrem(self._keys.jobs_index("reconcile"), job_id)

    async def budget_usage(self, keys: list[str]) -> dict[str, tuple[int, int]]:
        if not keys:
            return {}
        with _outage_as_unavailable():
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hmget(self._keys.window(key), ["spent", "reserved"])
                rows = await pipe.execute()
        return {
            key: (int(spent or 0), int(reserved or 0))
            for key, (spent, reserved) in zip(keys, rows, strict=True)
        }

    # Policies -----------------------------------------------------------------------------------
    async def get_policy(self, team: str) -> PolicyVersion | None:
        with _outage_as_unavailable():
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
            [expected_version, new.model_dump_json(), _token()],
        )
        if outcome != -1:
            raise VersionConflict(
                f"policy of {team} is at version {outcome}, not {expected_version}",
                details={"current_version": outcome},
            )
        return new

    async def policy_history(self, team: str) -> list[PolicyVersion]:
        with _outage_as_unavailable():
            rows = await self._redis.lrange(self._keys.policy(team, "history"), 0, -1)
        return [PolicyVersion.model_validate_json(row) for row in rows]
