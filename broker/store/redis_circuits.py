"""Circuit breakers in Redis, shared by every replica (see `broker.jobs.provider_health`).

    {P:cap}:circuit:<provider>    hash  opened (unix s, while open or half-open), failures, calls (when
                                        it opened), probe (when the half-open probe went out)
    {P:cap}:outcomes:<provider>   zset  "<token>:<1|0>" -> when an attempt's outcome was recorded

The same rules as the in-process `CircuitBreaker`, in scripts, so every replica's attempts count toward
one window and one verdict, and the half-open probe is taken by one replica only.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Collection

from broker.jobs.provider_health import BreakerSettings
from broker.store.redis import RedisStore

# KEYS: circuit, outcomes. ARGV: now, ok (1/0), token, window_s, min_calls, failure ratio, cooldown_s.
_RECORD = """
local now, cooldown = tonumber(ARGV[1]), tonumber(ARGV[7])
local opened = redis.call('HGET', KEYS[1], 'opened')
if opened then
  if now - tonumber(opened) < cooldown then return 0 end  -- from before it opened: already decided
  redis.call('HDEL', KEYS[1], 'probe')
  if ARGV[2] == '1' then
    redis.call('DEL', KEYS[1], KEYS[2])
  else
    redis.call('HSET', KEYS[1], 'opened', ARGV[1])
  end
  return 1
end
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[3] .. ':' .. ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. tostring(now - tonumber(ARGV[4])))
local all = redis.call('ZRANGE', KEYS[2], 0, -1)
local failures = 0
for _, member in ipairs(all) do
  if string.sub(member, -2) == ':0' then failures = failures + 1 end
end
if #all >= tonumber(ARGV[5]) and failures >= tonumber(ARGV[6]) * #all then
  redis.call('HSET', KEYS[1], 'opened', ARGV[1], 'failures', failures, 'calls', #all)
  redis.call('DEL', KEYS[2])
end
return 1
"""

# KEYS: circuit. ARGV: now, cooldown_s, probe_timeout_s. Returns {"ok"} or {"open", wait, failures, calls}
# or {"probing"}; half-open, the first caller takes the probe.
_ADMIT = """
local now = tonumber(ARGV[1])
local c = redis.call('HMGET', KEYS[1], 'opened', 'failures', 'calls', 'probe')
if not c[1] then return {'ok'} end
local since = now - tonumber(c[1])
if since < tonumber(ARGV[2]) then
  return {'open', tostring(tonumber(ARGV[2]) - since), c[2] or '0', c[3] or '0'}
end
if c[4] and now - tonumber(c[4]) < tonumber(ARGV[3]) then return {'probing'} end
if ARGV[4] == '1' then redis.call('HSET', KEYS[1], 'probe', ARGV[1]) end
return {'ok'}
"""


class RedisCircuits:
    """`SharedCircuits` in Redis under the store's prefix."""

    def __init__(
        self, store: RedisStore, providers: Collection[str], settings: BreakerSettings | None = None
    ):
        self._store = store
        self._providers = list(providers)
        self.settings = settings or BreakerSettings()

    def _keys(self, provider: str) -> list[str]:
        keys = self._store.keys
        return [keys.cap("circuit", provider), keys.cap("outcomes", provider)]

    async def _check(self, provider: str, now: float, *, take_probe: bool) -> str | None:
        s = self.settings
        reply = await self._store.run_script(
            _ADMIT,
            self._keys(provider)[:1],
            [repr(now), repr(s.cooldown_s), repr(s.probe_timeout_s), "1" if take_probe else "0"],
        )
        if reply[0] == "ok":
            return None
        if reply[0] == "probing":
            return "circuit half-open: a probe attempt is in flight"
        wait = math.ceil(float(reply[1]))
        return f"circuit open: {reply[2]} of the last {reply[3]} attempts failed; retried in {wait} s"

    async def admit(self, provider: str, now: float) -> str | None:
        return await self._check(provider, now, take_probe=True)

    async def record(self, provider: str, ok: bool, now: float) -> None:
        s = self.settings
        await self._store.run_script(
            _RECORD,
            self._keys(provider),
            [
                repr(now),
                "1" if ok else "0",
                uuid.uuid4().hex,
                repr(s.window_s),
                str(s.min_calls),
                repr(s.failure_ratio),
                repr(s.cooldown_s),
            ],
        )

    async def abandon(self, provider: str) -> None:
        async with self._store.client() as redis:
            await redis.hdel(self._keys(provider)[0], "probe")

    async def unavailable(self, now: float) -> dict[str, str]:
        reasons: dict[str, str] = {}
        for provider in self._providers:
            reason = await self._check(provider, now, take_probe=False)
            if reason is not None:
                reasons[provider] = reason
        return reasons
