"""Provider capacity and queues in Redis, shared by every replica (see `broker.jobs.slots`).

    {P:cap}:slots:<provider>          zset  attempt id -> when its slot lapses unless renewed (unix s)
    {P:cap}:submits:<provider>        zset  attempt id -> when it was submitted (the rolling minute)
    {P:cap}:owners:<provider>         hash  attempt id (a slot) or job id (a grant) -> team
    {P:cap}:grants:<provider>         zset  job id -> when the slot granted to it lapses untaken
    {P:cap}:shares:<provider>         hash  team -> "weight guaranteed" (from its latest queued job)
    {P:cap}:passes:<provider>         hash  team -> the turn of its last slot ("~turn": the counter): the
                                            round robin that breaks fair-share ties
    {P:cap}:places:<provider>         hash  job id -> team, for the jobs in the queue
    {P:cap}:waiting:<provider>        hash  team -> jobs in the queue
    {P:cap}:inuse:<provider>          hash  team -> slots held or granted
    {P:cap}:starts:<provider>         hash  attempt id (a slot) or job id (a grant) -> when it began
    {P:cap}:served:<provider>         hash  team -> slot-seconds of its slots ended ("~hold": the mean
                                            hold of a render): the fair share's service
    {P:cap}:queue:<provider>:<team>   zset  job id -> priority rank * 1e11 + the job's age (unix s)

One script checks and takes a slot (or queues the job), one gives a slot back, one takes a job out
of a queue; each grants the free slots by `broker.jobs.queues`'s rule (`lua/slots_lib.lua`) and
answers with the jobs granted, which the caller wakes. So two replicas never both take the last slot,
and a freed slot goes to the queue's next job whichever replica frees it. Times come from the
caller's clock, like leases. A slot lapses `ttl_s` after its last renewal (every poll renews it), so
only a slot whose attempt nobody polls any more (every replica gone) lapses. A quote reads a few
counters per capped provider in one round trip: its cost does not grow with the jobs in flight, the
jobs waiting or the submits a minute.

The teams whose queues a script may touch are declared (as Redis Cluster requires): the configured
teams, those with jobs waiting (read just before), and the job's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from adapters.base import Clock
from broker.config import ProviderConfig
from broker.jobs.capacity import RATE_WINDOW_S, Limits
from broker.jobs.queues import GRANT_S, QueueView, Seat
from broker.jobs.slots import Wake, _nobody, wake_soon
from broker.store.redis import RedisStore

_LIB = (Path(__file__).parent / "lua" / "slots_lib.lua").read_text()
_SCRIPTS = {
    name: _LIB + (Path(__file__).parent / "lua" / f"{name}.lua").read_text()
    for name in ("acquire_slot", "release_slot", "leave_queue")
}
_FIXED_KEYS: tuple[str, ...] = ("slots", "submits", "owners", "grants", "shares", "passes", "places")
_FIXED_KEYS += ("waiting", "inuse", "starts", "served")
# A slot kept (or taken back after a restart) outside the queue: counted for its team when new, its
# service from now.
_HOLD = """
if redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2]) == 1 and ARGV[4] == '1' then
  redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
  redis.call('HSET', KEYS[4], ARGV[2], ARGV[5])
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
"""


class RedisSlots:
    """`Slots` in Redis under the store's prefix."""

    def __init__(self, store: RedisStore, clock: Clock) -> None:
        self._store, self._clock = store, clock
        self._limits: dict[str, Limits] = {}
        self._teams: tuple[str, ...] = ()
        self._source: object = None
        self._wake: Wake = _nobody
        self._waking: set[asyncio.Task[None]] = set()

    def follow(self, providers: Mapping[str, ProviderConfig], teams: Collection[str] = ()) -> None:
        self._teams = tuple(sorted(set(teams)))
        if providers is self._source:
            return
        self._source = providers
        before = self._limits
        self._limits = {
            name: Limits(config.max_concurrency, config.requests_per_minute)
            for name, config in providers.items()
        }
        changed = [name for name, limits in self._limits.items() if before and before.get(name) != limits]
        if changed:  # a raised limit's slots go to the queued jobs now, not at the next slot given back
            wake_soon(self._waking, lambda: self._regrant(changed))

    async def _regrant(self, providers: list[str]) -> None:
        for name in providers:
            if self._limited(name):
                await self._woken(name, await self._script("release_slot", name, "", [""]))

    def on_grant(self, wake: Wake) -> None:
        self._wake = wake

    def _key(self, provider: str, part: str) -> str:
        return self._store.keys.cap(part, provider)

    def _queue_key(self, provider: str, team: str) -> str:
        return self._store.keys.cap("queue", provider, team)

    async def _script(
        self, name: str, provider: str, team: str, own: list[str], *, every_queue: bool = True
    ) -> list[Any]:
        """Run one of the slot scripts for `provider` with the queues of the configured teams and `team`,
        and (`every_queue`) of any other team with jobs waiting, read just before."""
        limits = self._limits.get(provider, Limits())
        queued: list[Any] = []
        if every_queue:
            async with self._store.client() as redis:
                queued = await redis.hkeys(self._key(provider, "waiting"))
        teams = sorted({*self._teams, *(_text(name) for name in queued), team} - {""})
        keys = [self._key(provider, part) for part in _FIXED_KEYS]
        keys += [self._queue_key(provider, name) for name in teams]
        args = [
            repr(self._clock()),
            "" if limits.max_concurrency is None else str(limits.max_concurrency),
            "" if limits.requests_per_minute is None else str(limits.requests_per_minute),
            repr(GRANT_S),
            str(len(teams)),
            *teams,
            *own,
        ]
        reply: list[Any] = await self._store.run_script(_SCRIPTS[name], keys, args)
        return reply

    async def _woken(self, provider: str, job_ids: list[Any]) -> None:
        woken = [j.decode() if isinstance(j, bytes) else str(j) for j in job_ids]
        if woken:
            await self._wake(provider, woken)

    def _limited(self, provider: str) -> bool:
        return self._limits.get(provider, Limits()) != Limits()

    async def try_acquire(self, provider: str, attempt_id: str, seat: Seat, ttl_s: float) -> bool:
        if not self._limited(provider):  # nothing to count, nobody queues
            await self.hold(provider, attempt_id, seat, ttl_s)
            return True
        share = f"{seat.weight!r} {seat.guaranteed}"
        own = [attempt_id, repr(self._clock() + ttl_s), seat.job_id, seat.team, repr(seat.score), share]
        # The common case (a free slot, nobody waiting) costs one round trip: the queues of teams not
        # configured are left to the next slot given back, which looks for them.
        reply = await self._script("acquire_slot", provider, seat.team, own, every_queue=False)
        await self._woken(provider, reply[1:])
        return int(reply[0]) == 1

    async def hold(self, provider: str, attempt_id: str, seat: Seat, ttl_s: float) -> None:
        keys = [self._key(provider, part) for part in ("slots", "owners", "inuse", "starts")]
        counted = "1" if self._limited(provider) else "0"
        now = self._clock()
        args = [repr(now + ttl_s), attempt_id, seat.team, counted, repr(now)]
        await self._store.run_script(_HOLD, keys, args)

    async def release(self, provider: str, attempt_id: str) -> None:
        if not self._limited(provider):
            async with self._store.client() as redis, redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self._key(provider, "slots"), attempt_id)
                pipe.hdel(self._key(provider, "owners"), attempt_id)
                pipe.hdel(self._key(provider, "starts"), attempt_id)  # held while it was capped
                await pipe.execute()
            return
        await self._woken(provider, await self._script("release_slot", provider, "", [attempt_id]))

    async def leave(self, provider: str, seat: Seat) -> None:
        reply = await self._script("leave_queue", provider, seat.team, [seat.job_id])
        await self._woken(provider, reply)

    async def granted(self, provider: str, job_id: str) -> bool:
        async with self._store.client() as redis:
            until = await redis.zscore(self._key(provider, "grants"), job_id)
        return until is not None and float(until) > self._clock()

    async def in_flight(self, provider: str) -> int:
        async with self._store.client() as redis:
            held: int = await redis.zcount(self._key(provider, "slots"), repr(self._clock()), "+inf")
        return held

    async def views(self, providers: Collection[str], seat: Seat) -> dict[str, QueueView]:
        limited = [p for p in providers if self._limited(p)]
        if not limited:
            return {}
        now = self._clock()
        since = repr(now - RATE_WINDOW_S)
        async with self._store.client() as redis, redis.pipeline(transaction=False) as pipe:
            for name in limited:
                pipe.zcount(self._key(name, "slots"), repr(now), "+inf")
                pipe.zcount(self._key(name, "grants"), repr(now), "+inf")
                pipe.hgetall(self._key(name, "waiting"))
                pipe.hgetall(self._key(name, "shares"))
                pipe.zcount(self._queue_key(name, seat.team), "-inf", f"({seat.score!r}")
                pipe.zcount(self._key(name, "submits"), f"({since}", "+inf")
                pipe.zrangebyscore(
                    self._key(name, "submits"), f"({since}", "+inf", start=0, num=1, withscores=True
                )
            rows = await pipe.execute()
        views: dict[str, QueueView] = {}
        for index, name in enumerate(limited):
            held, granted, waiting, shares, ahead, submits, oldest = rows[7 * index : 7 * index + 7]
            limits = self._limits[name]
            counts = {_text(team): int(count) for team, count in waiting.items()}
            weights = {_text(team): _weight(share) for team, share in shares.items()}
            others = sum(
                weights.get(team, 1.0) for team, count in counts.items() if count > 0 and team != seat.team
            )
            refill = None
            rpm = limits.requests_per_minute
            if rpm is not None and oldest and int(submits) + int(granted) >= rpm:
                refill = max(0.0, float(oldest[0][1]) + RATE_WINDOW_S - now)
            views[name] = QueueView(
                cap=limits.max_concurrency or 0,
                busy=int(held) + int(granted),
                waiting=max(0, sum(counts.values()) - int(granted)),
                team_ahead=int(ahead),
                team_weight=seat.weight,
                waiting_weight=others,
                refill_s=refill,
            )
        return views

    async def depths(self) -> dict[str, dict[str, int]]:
        names = [name for name, limits in self._limits.items() if limits != Limits()]
        if not names:
            return {}
        async with self._store.client() as redis, redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(self._key(name, "waiting"))
            rows = await pipe.execute()
        depths = {
            name: {_text(t): int(n) for t, n in row.items()} for name, row in zip(names, rows, strict=True)
        }
        return {name: teams for name, teams in depths.items() if teams}

    async def in_use(self) -> dict[str, dict[str, int]]:
        """Two round trips: the live slots of each capped provider, then their owners. A capped provider
        has no more live slots than attempts at it (its cap, plus any a restart took back), so this
        reads no more than `in_flight` counts; uncapped providers are left out (their slots are not
        bounded by the broker)."""
        capped = [name for name, limits in self._limits.items() if limits.max_concurrency is not None]
        if not capped:
            return {}
        async with self._store.client() as redis:
            async with redis.pipeline(transaction=False) as pipe:
                for name in capped:
                    pipe.zrangebyscore(self._key(name, "slots"), repr(self._clock()), "+inf")
                held = dict(zip(capped, await pipe.execute(), strict=True))
            holding = [name for name in capped if held[name]]
            if not holding:
                return {}
            async with redis.pipeline(transaction=False) as pipe:
                for name in holding:
                    pipe.hmget(self._key(name, "owners"), held[name])
                owners = await pipe.execute()
        used: dict[str, dict[str, int]] = {}
        for name, teams in zip(holding, owners, strict=True):
            counts = used.setdefault(name, {})
            for team in teams:
                if team is not None:
                    counts[_text(team)] = counts.get(_text(team), 0) + 1
        return {name: counts for name, counts in used.items() if counts}

    async def waiting(self, provider: str) -> int:
        if not self._limited(provider):
            return 0
        async with self._store.client() as redis:
            counts = await redis.hvals(self._key(provider, "waiting"))
        return sum(int(count) for count in counts)

    async def _counts(self) -> dict[str, tuple[int, int]]:
        """Per limited provider: slots held or granted, submits in the last minute (counters only)."""
        now = self._clock()
        limited = [name for name, limits in self._limits.items() if limits != Limits()]
        if not limited:
            return {}
        async with self._store.client() as redis, redis.pipeline(transaction=False) as pipe:
            for name in limited:
                pipe.zcount(self._key(name, "slots"), repr(now), "+inf")
                pipe.zcount(self._key(name, "grants"), repr(now), "+inf")
                pipe.zcount(self._key(name, "submits"), f"({now - RATE_WINDOW_S!r}", "+inf")
            rows = await pipe.execute()
        return {
            name: (int(rows[3 * i]) + int(rows[3 * i + 1]), int(rows[3 * i + 2]) + int(rows[3 * i + 1]))
            for i, name in enumerate(limited)
        }

    async def saturated(self) -> dict[str, str]:
        reasons: dict[str, str] = {}
        for name, (busy, submits) in (await self._counts()).items():
            limits = self._limits[name]
            if limits.max_concurrency is not None and busy >= limits.max_concurrency:
                reasons[name] = f"provider {name} at capacity ({busy} of {limits.max_concurrency} running)"
            elif limits.requests_per_minute is not None and submits >= limits.requests_per_minute:
                rpm = limits.requests_per_minute
                reasons[name] = f"provider {name} at its rate limit ({rpm} submits a minute)"
        return reasons

    async def free_in(self, provider: str) -> float | None:
        limits = self._limits.get(provider)
        if limits is None or limits.requests_per_minute is None:
            return None
        since = self._clock() - RATE_WINDOW_S
        async with self._store.client() as redis, redis.pipeline(transaction=False) as pipe:
            pipe.zcount(self._key(provider, "submits"), f"({since!r}", "+inf")
            pipe.zcount(self._key(provider, "grants"), repr(self._clock()), "+inf")
            pipe.zrangebyscore(
                self._key(provider, "submits"), f"({since!r}", "+inf", start=0, num=1, withscores=True
            )
            submits, granted, oldest = await pipe.execute()
        if int(submits) + int(granted) < limits.requests_per_minute or not oldest:
            return None
        return max(0.0, float(oldest[0][1]) + RATE_WINDOW_S - self._clock())


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _weight(share: bytes | str) -> float:
    try:
        return float(_text(share).split(" ")[0])
    except (ValueError, IndexError):
        return 1.0
