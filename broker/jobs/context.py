"""What every step of a job works with, in one object: the scheduler builds it once and passes it on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Protocol

from adapters.base import Adapter, Clock, Sleep
from adapters.outbound import OutboundPolicy
from broker.jobs.capacity import Capacity
from broker.jobs.hosted_inputs import InputHosting
from broker.jobs.outputs import Normalizer
from broker.jobs.provider_health import ProviderHealth
from broker.jobs.slots import LocalSlots, Slots
from broker.observability.events import JobObserver
from broker.store import JobRecord, Store
from broker.store.artifacts import ArtifactStore
from pricing.catalog import RouteSpec
from pricing.money import Money
from pricing.quote import Quote


class QuoteFn(Protocol):
    """A re-quote of an accepted job without the routes it tried; `patient`: open circuits kept."""

    def __call__(
        self, record: JobRecord, tried: Collection[str], *, patient: bool = False
    ) -> Awaitable[Quote]: ...


async def _wake_nobody(job_ids: list[str]) -> None:
    """Without a scheduler to wake them, parked jobs are found at their due time."""


ReserveFn = Callable[[JobRecord, Money], Awaitable[bool]]
LimitFn = Callable[[JobRecord], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class RunnerOptions:
    workers: int = 16  # steps run at once (submits, polls, downloads); not a limit on jobs in flight
    lease_s: float = 30.0  # how long one step may hold its job before another runner may take it
    idle_wait_s: float = 1.0  # the longest the scheduler waits before looking at the store again
    claim_batch: int = 64  # due jobs taken per store call
    max_attempts: int = 3
    capacity_check_s: float = 5.0  # how often a job waiting for an open circuit looks again
    max_crashes: int = 3  # steps that crash on one job before it is failed rather than retried
    public_url: str | None = None  # where providers can reach this broker's /v1/callbacks/{provider}
    input_hosting: InputHosting | None = None  # signs URLs for uploads sent to URL-only providers
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)  # where a job's image_url may lead


@dataclass
class StepContext:
    """The dependencies of the steps; `routes` follows config reloads."""

    store: Store
    artifacts: ArtifactStore
    adapters: dict[str, Adapter]
    routes: dict[str, RouteSpec]
    quote: QuoteFn
    options: RunnerOptions
    clock: Clock
    sleep: Sleep = asyncio.sleep
    observers: list[JobObserver] = field(default_factory=list)
    health: ProviderHealth | None = None
    capacity: Capacity | None = None
    slots: Slots | None = None
    scrub: Callable[[str], str] = str
    reserve_more: ReserveFn | None = None
    max_attempts: LimitFn | None = None
    output_retention_s: dict[str, float] = field(default_factory=dict)  # provider -> operator's setting
    normalizer: Normalizer = field(default_factory=Normalizer)  # bounds the CPU of output normalization
    # Makes parked jobs due now (a slot was granted to them); the scheduler sets its own.
    wake_jobs: Callable[[list[str]], Awaitable[None]] = field(default=_wake_nobody)

    def __post_init__(self) -> None:
        self.health = self.health or ProviderHealth(self.clock)
        self.capacity = self.capacity or Capacity(self.clock)
        self.slots = self.slots or LocalSlots(self.capacity)

    @property
    def provider_health(self) -> ProviderHealth:
        assert self.health is not None  # set in __post_init__
        return self.health

    @property
    def provider_slots(self) -> Slots:
        assert self.slots is not None  # set in __post_init__
        return self.slots

    async def attempt_limit(self, record: JobRecord) -> int:
        return await self.max_attempts(record) if self.max_attempts else self.options.max_attempts

    def expected_latency_s(self, provider: str, model: str) -> float | None:
        """How long the route takes to render, as observed here, else as the catalog says."""
        key = f"{provider}/{model}"
        observed = self.provider_health.latency.expected().get(key)
        route = self.routes.get(key)
        return (
            float(observed) if observed is not None else (float(route.expected_latency_s) if route else None)
        )

    def slot_ttl(self, provider: str) -> float:
        """How long a slot lasts unrenewed: past the provider's poll deadline, with two leases to spare."""
        adapter = self.adapters.get(provider)
        deadline = adapter.spec.poll_schedule.deadline_s if adapter is not None else 900.0
        return deadline + 2 * self.options.lease_s
