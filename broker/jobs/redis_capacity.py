"""Provider capacity in Redis, shared by every replica (see `broker.jobs.slots`).

    {P:cap}:slots:<provider>     zset  attempt id -> when its slot lapses unless renewed (unix s)
    {P:cap}:submits:<provider>   zset  attempt id -> when it was submitted (the rolling minute)

One script checks and takes a slot, so two replicas never both take the last one. Times come from the
caller's clock, like leases. A slot lapses `ttl_s` after its last renewal: the scheduler renews it at
every poll, so only a slot whose attempt nobody polls any more (its job ended between two writes, or
every replica is gone) lapses.
"""

from __future__ import annotations

from collections.abc import Mapping

from adapters.base import Clock
from broker.config import ProviderConfig
from broker.jobs.capacity import RATE_WINDOW_S, Limits
from broker.store.redis import RedisStore

# KEYS: slots, submits. ARGV: now, attempt id, slot lapses at, max concurrency ("" none), rpm ("" none).
# Returns {1} when taken (or already held), {0, "c", held} at capacity, {0, "r", oldest submit} at rate.
_ACQUIRE = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
  return {1}
end
local held = redis.call('ZCARD', KEYS[1])
if ARGV[4] ~= '' and held >= tonumber(ARGV[4]) then return {0, 'c', held} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tostring(now - 60))
if ARGV[5] ~= '' and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return {0, 'r', oldest[2]}
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
return {1}
"""


class RedisSlots:
    """`Slots` in Redis under the store's prefix."""

    def __init__(self, store: RedisStore, clock: Clock) -> None:
        self._store, self._clock = store, clock
        self._limits: dict[str, Limits] = {}
        self._source: object = None

    def follow(self, providers: Mapping[str, ProviderConfig]) -> None:
        if providers is self._source:
            return
        self._source = providers
        self._limits = {
            name: Limits(config.max_concurrency, config.requests_per_minute)
            for name, config in providers.items()
        }

    def _keys(self, provider: str) -> list[str]:
        keys = self._store.keys
        return [keys.cap("slots", provider), keys.cap("submits", provider)]

    async def try_acquire(self, provider: str, attempt_id: str, job_id: str, ttl_s: float) -> bool:
        limits = self._limits.get(provider, Limits())
        now = self._clock()
        reply = await self._store.run_script(
            _ACQUIRE,
            self._keys(provider),
            [
                repr(now),
                attempt_id,
                repr(now + ttl_s),
                "" if limits.max_concurrency is None else str(limits.max_concurrency),
                "" if limits.requests_per_minute is None else str(limits.requests_per_minute),
            ],
        )
        return int(reply[0]) == 1

    async def hold(self, provider: str, attempt_id: str, job_id: str, ttl_s: float) -> None:
        async with self._store.client() as redis:
            await redis.zadd(self._keys(provider)[0], {attempt_id: self._clock() + ttl_s})

    async def release(self, provider: str, attempt_id: str) -> None:
        async with self._store.client() as redis:
            await redis.zrem(self._keys(provider)[0], attempt_id)

    async def in_flight(self, provider: str) -> int:
        async with self._store.client() as redis:
            held: int = await redis.zcount(self._keys(provider)[0], repr(self._clock()), "+inf")
        return held

    async def _counts(self) -> dict[str, tuple[int, int, float | None]]:
        """Per limited provider: slots held, submits in the last minute, the oldest of those."""
        now = self._clock()
        limited = [name for name, limits in self._limits.items() if limits != Limits()]
        if not limited:
            return {}
        async with self._store.client() as redis, redis.pipeline(transaction=False) as pipe:
            for name in limited:
                slots, submits = self._keys(name)
                pipe.zcount(slots, repr(now), "+inf")
                pipe.zrangebyscore(submits, f"({now - RATE_WINDOW_S!r}", "+inf", withscores=True)
            rows = await pipe.execute()
        counts: dict[str, tuple[int, int, float | None]] = {}
        for index, name in enumerate(limited):
            held, recent = rows[2 * index], rows[2 * index + 1]
            counts[name] = (int(held), len(recent), float(recent[0][1]) if recent else None)
        return counts

    async def saturated(self) -> dict[str, str]:
        reasons: dict[str, str] = {}
        for name, (held, submits, _) in (await self._counts()).items():
            limits = self._limits[name]
            if limits.max_concurrency is not None and held >= limits.max_concurrency:
                reasons[name] = f"provider {name} at capacity ({held} of {limits.max_concurrency} running)"
            elif limits.requests_per_minute is not None and submits >= limits.requests_per_minute:
                rpm = limits.requests_per_minute
                reasons[name] = f"provider {name} at its rate limit ({rpm} submits a minute)"
        return reasons

    async def free_in(self, provider: str) -> float | None:
        limits = self._limits.get(provider)
        if limits is None or limits.requests_per_minute is None:
            return None
        _, submits, oldest = (await self._counts()).get(provider, (0, 0, None))
        if submits < limits.requests_per_minute or oldest is None:
            return None
        return max(0.0, oldest + RATE_WINDOW_S - self._clock())
