"""Provider capacity as the scheduler uses it: `max_concurrency` slots and `requests_per_minute`
windows, behind one async interface with two homes.

- `LocalSlots` keeps them in this process (`broker.jobs.capacity.Capacity`): right for SQLite, where one
  process owns the deployment. Slots held by jobs in flight are taken again from the store at start.
- `RedisSlots` (`broker.jobs.redis_capacity`) keeps them in Redis, so every replica counts against
  one limit. A slot is leased: it expires unless its attempt is polled again, so a replica that died
  holding a slot gives it back by itself.

A slot is taken for an attempt just before its submit and given back when the attempt ends; it is kept
(renewed) at every poll while the task is at the provider, whichever replica polls it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from broker.config import ProviderConfig
from broker.jobs.capacity import Capacity


class Slots(Protocol):
    def follow(self, providers: Mapping[str, ProviderConfig]) -> None:
        """Take the limits from config.yaml's providers (called before every quote)."""
        ...

    async def try_acquire(self, provider: str, attempt_id: str, job_id: str, ttl_s: float) -> bool:
        """Take a slot for a new submit if the provider has one free (and its rate allows one)."""
        ...

    async def hold(self, provider: str, attempt_id: str, job_id: str, ttl_s: float) -> None:
        """Keep (or take back, after a restart) the slot of an attempt already at the provider."""
        ...

    async def release(self, provider: str, attempt_id: str) -> None:
        """The attempt ended: give its slot back (twice is harmless)."""
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

    def follow(self, providers: Mapping[str, ProviderConfig]) -> None:
        self.capacity.follow(providers)

    async def try_acquire(self, provider: str, attempt_id: str, job_id: str, ttl_s: float) -> bool:
        return self.capacity.try_acquire(provider, attempt_id, job_id)

    async def hold(self, provider: str, attempt_id: str, job_id: str, ttl_s: float) -> None:
        self.capacity.hold(provider, attempt_id, job_id, new_submit=False)

    async def release(self, provider: str, attempt_id: str) -> None:
        self.capacity.release(attempt_id)

    async def saturated(self) -> dict[str, str]:
        return self.capacity.saturated()

    async def free_in(self, provider: str) -> float | None:
        return self.capacity.free_in(provider)

    async def in_flight(self, provider: str) -> int:
        return self.capacity.in_flight(provider)
