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

# KEYS: one circuit per provider. ARGV: now, cooldown_s, probe_timeout_s, take the probe (1/0). Returns
# four values per key: "ok", "open" (with wait, failures, calls) or "probing"; a half-open circuit's first
# caller that takes the probe gets "ok". One call answers for every provider (quotes ask about all).
_ADMIT = """
local now = tonumber(ARGV[1])
local out = {}
for _, key in ipairs(KEYS) do
  local c = redis.call('HMGET', key, 'opened', 'failures', 'calls', 'probe')
  local verdict = {'ok', '', '', ''}
  if c[1] then
    local since = now - tonumber(c[1])
    if since < tonumber(ARGV[2]) then
      verdict = {'open', tostring(tonumber(ARGV[2]) - since), c[2] or '0', c[3] or '0'}
    elseif c[4] and now - tonumber(c[4]) < tonumber(ARGV[3]) then
      verdict = {'probing', '', '', ''}
    elseif ARGV[4] == '1' then
      redis.call('HSET', key, 'probe', ARGV[1])
    end
  end
  for _, v in ipairs(verdict) do table.insert(out, v) end
end
return out
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

    async def _check(self, providers: list[str], now: float, *, take_probe: bool) -> dict[str, str]:
        """Provider -> why its circuit keeps attempts out now, for those it does (one round trip)."""
        s = self.settings
        reply = await self._store.run_script(
            _ADMIT,
            [self._keys(provider)[0] for provider in providers],
            [repr(now), repr(s.cooldown_s), repr(s.probe_timeout_s), "1" if take_probe else "0"],
        )
        reasons: dict[str, str] = {}
        for provider, at in zip(providers, range(0, len(reply), 4), strict=True):
            verdict, wait, failures, calls = reply[at : at + 4]
            if verdict == "probing":
                reasons[provider] = "circuit half-open: a probe attempt is in flight"
            elif verdict == "open":
                retry = math.ceil(float(wait))
                reasons[provider] = (
                    f"circuit open: {failures} of the last {calls} attempts failed; retried in {retry} s"
                )
        return reasons

    async def admit(self, provider: str, now: float) -> str | None:
        return (await self._check([provider], now, take_probe=True)).get(provider)

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
        return await self._check(self._providers, now, take_probe=False) if self._providers else {}
