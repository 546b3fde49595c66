"""Provider capacity as the scheduler uses it: `max_concurrency` slots, `requests_per_minute` windows
and the queues of jobs waiting for them (`broker.jobs.queues`), behind one async interface with two
homes.

- `LocalSlots` keeps them in this process (`broker.jobs.capacity.Capacity`): right for SQLite, where one
  process owns the deployment. Slots held by jobs in flight, and queued jobs' places, are taken again
  from the store at start.
- `RedisSlots` (`broker.jobs.redis_capacity`) keeps them in Redis, so every replica counts against
  one limit and serves one queue. A slot is leased: it expires unless its attempt is polled again, so
  a replica that died holding a slot gives it back by itself.

A slot is taken for an attempt just before its submit and given back when the attempt ends; it is kept
(renewed) at every poll while the task is at the provider, whichever replica polls it. A slot given back
is granted to the next queued job, which the slots wake through the callback set by `on_grant`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Protocol

from broker.config import ProviderConfig
from broker.jobs.capacity import Capacity
from broker.jobs.queues import QueueView, Seat

Wake = Callable[[str, list[str]], Awaitable[None]]  # provider, the jobs granted one of its slots


async def _nobody(provider: str, job_ids: list[str]) -> None:
    """Until the scheduler sets its own: a granted job is found by its next look."""


def wake_soon(tasks: set[asyncio.Task[None]], waking: Callable[[], Awaitable[None]]) -> None:
    """Run `waking` on the running loop (a reload comes from a handler on it); kept till it ends.
    Without a loop, the granted jobs wake at their next look."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return

    async def run() -> None:
        await waking()

    task = loop.create_task(run())
    tasks.add(task)
    task.add_done_callback(tasks.discard)


class Slots(Protocol):
    def follow(self, providers: Mapping[str, ProviderConfig], teams: Collection[str] = ()) -> None:
        """Take the limits from config.yaml's providers and the teams that may queue."""
        ...

    def on_grant(self, wake: Wake) -> None:
        """Call `wake` with the jobs a freed slot was granted to."""
        ...

    async def try_acquire(self, provider: str, attempt_id: str, seat: Seat, ttl_s: float) -> bool:
        """Take a slot for a new submit if the seat is next and a slot is free; else queue the seat."""
        ...

    async def hold(self, provider: str, attempt_id: str, seat: Seat, ttl_s: float) -> None:
        """Keep (or take back, after a restart) the slot of an attempt already at the provider."""
        ...

    async def release(self, provider: str, attempt_id: str) -> None:
        """The attempt ended: give its slot back (twice is harmless) to the next queued job."""
        ...

    async def leave(self, provider: str, seat: Seat) -> None:
        """The job no longer waits for `provider`: drop its place (and pass on a slot granted to it)."""
        ...

    async def granted(self, provider: str, job_id: str) -> bool:
        """Whether a slot of `provider` is granted to the job now."""
        ...

    async def views(self, providers: Collection[str], seat: Seat) -> dict[str, QueueView]:
        """The queues (and rate windows) of the limited ones of `providers` as `seat` sees them, in one
        store round trip."""
        ...

    async def depths(self) -> dict[str, dict[str, int]]:
        """Provider -> team -> jobs waiting."""
        ...

    async def in_use(self) -> dict[str, dict[str, int]]:
        """Provider with a concurrency cap -> team -> slots its attempts hold (attempts at the provider)."""
        ...

    async def waiting(self, provider: str) -> int:
        """Jobs waiting in `provider`'s queue (granted ones included, until they take their slot)."""
        ...

    async def saturated(self) -> dict[str, str]:
        """Provider -> why it can take no submit now."""
        ...

    async def free_in(self, provider: str) -> float | None:
        """Seconds until the rate window admits a submit, when the rate is what blocks the provider."""
        ...

    async def in_flight(self, provider: str) -> int:
        """Slots `provider` has taken (attempts at the provider now)."""
        ...


class LocalSlots:
    """Slots in this process, over the synchronous `Capacity` (tests reach it as `.capacity`)."""

    def __init__(self, capacity: Capacity) -> None:
        self.capacity = capacity
        self._wake: Wake = _nobody
        self._waking: set[asyncio.Task[None]] = set()

    def follow(self, providers: Mapping[str, ProviderConfig], teams: Collection[str] = ()) -> None:
        woken = self.capacity.follow(providers)  # a raised limit's slots are granted to queued jobs
        if woken:
            wake_soon(self._waking, lambda: self._wake("", woken))

    def on_grant(self, wake: Wake) -> None:
        self._wake = wake

    async def _woken(self, provider: str, job_ids: list[str]) -> None:
        if job_ids:
            await self._wake(provider, job_ids)

    async def try_acquire(self, provider: str, attempt_id: str, seat: Seat, ttl_s: float) -> bool:
        taken, woken = self.capacity.try_acquire(provider, attempt_id, seat)
        await self._woken(provider, woken)
        return taken

    async def hold(self, provider: str, attempt_id: str, seat: Seat, ttl_s: float) -> None:
        self.capacity.hold(provider, attempt_id, seat, new_submit=False)

    async def release(self, provider: str, attempt_id: str) -> None:
        await self._woken(provider, self.capacity.release(attempt_id))

    async def leave(self, provider: str, seat: Seat) -> None:
        await self._woken(provider, self.capacity.leave(provider, seat.job_id))

    async def granted(self, provider: str, job_id: str) -> bool:
        return self.capacity.granted(provider, job_id)

    async def views(self, providers: Collection[str], seat: Seat) -> dict[str, QueueView]:
        views = {name: self.capacity.view(name, seat) for name in providers}
        return {name: view for name, view in views.items() if view is not None}

    async def depths(self) -> dict[str, dict[str, int]]:
        return self.capacity.depths()

    async def in_use(self) -> dict[str, dict[str, int]]:
        return self.capacity.in_use()

    async def waiting(self, provider: str) -> int:
        return self.capacity.waiting(provider)

    async def saturated(self) -> dict[str, str]:
        return self.capacity.saturated()

    async def free_in(self, provider: str) -> float | None:
        return self.capacity.free_in(provider)

    async def in_flight(self, provider: str) -> int:
        return self.capacity.in_flight(provider)
