"""Provider health as this broker process sees it: a circuit breaker per provider and the latency each
route really takes.

A breaker counts the outcomes of attempts (not of single HTTP requests: the adapters retry those
already) in a sliding window. When at least `min_calls` outcomes are in the window and the share of
failures reaches `failure_ratio`, it opens: quotes reject the provider's routes with a reason. After
`cooldown_s` it is half-open: one attempt may go through as a probe; its success closes the breaker,
its failure opens it for another cooldown. Input rejections prove the provider is up and count as
successes; a cancelled attempt counts as nothing.

Observed latency per route is an exponentially weighted moving average of successful attempts'
submit-to-finish times; once a route has one, it replaces the catalog's `expected_latency_s` in quotes.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from adapters.base import Clock
from adapters.errors import ProviderError, Rejected
from broker.schema import BrokerError


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    window_s: float = 60.0
    min_calls: int = 5
    failure_ratio: float = 0.5
    cooldown_s: float = 30.0
    # A probe that never reports back (its worker died) stops blocking the provider after this long.
    probe_timeout_s: float = 900.0


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """One provider's breaker; time comes from the injected clock."""

    def __init__(self, settings: BreakerSettings, clock: Clock) -> None:
        self.settings, self.clock = settings, clock
        self._outcomes: deque[tuple[float, bool]] = deque()
        self._opened_at: float | None = None
        self._probe_since: float | None = None
        self._last_ratio = (0, 0)  # (failures, calls) when it last opened, for the reason

    @property
    def state(self) -> BreakerState:
        """Closed, open, or half-open once the cooldown has passed."""
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self.clock() - self._opened_at < self.settings.cooldown_s:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def blocked(self) -> str | None:
        """Why the provider may not take an attempt now, or None when it may."""
        state = self.state
        if state is BreakerState.OPEN:
            assert self._opened_at is not None
            failures, calls = self._last_ratio
            wait = math.ceil(self.settings.cooldown_s - (self.clock() - self._opened_at))
            return f"circuit open: {failures} of the last {calls} attempts failed; retried in {wait} s"
        if state is BreakerState.HALF_OPEN and self._probe_in_flight():
            return "circuit half-open: a probe attempt is in flight"
        return None

    def started(self) -> None:
        """An attempt is being submitted; in the half-open state it is the probe."""
        if self.state is BreakerState.HALF_OPEN:
            self._probe_since = self.clock()

    def record(self, ok: bool) -> None:
        """The outcome of one attempt."""
        now = self.clock()
        if self._opened_at is not None:
            if self.state is BreakerState.OPEN:
                return  # an attempt from before the breaker opened: the breaker already decided
            self._probe_since = None
            if ok:
                self._opened_at = None
                self._outcomes.clear()
            else:
                self._opened_at = now
            return
        self._outcomes.append((now, ok))
        self._prune(now)
        calls = len(self._outcomes)
        failures = sum(1 for _, good in self._outcomes if not good)
        if calls >= self.settings.min_calls and failures >= self.settings.failure_ratio * calls:
            self._opened_at, self._last_ratio = now, (failures, calls)
            self._outcomes.clear()

    def abandon(self) -> None:
        """An attempt ended without a verdict (cancelled): a probe in flight no longer blocks."""
        self._probe_since = None

    def _probe_in_flight(self) -> bool:
        return self._probe_since is not None and (
            self.clock() - self._probe_since < self.settings.probe_timeout_s
        )

    def _prune(self, now: float) -> None:
        while self._outcomes and now - self._outcomes[0][0] > self.settings.window_s:
            self._outcomes.popleft()


class LatencyTracker:
    """EWMA of observed seconds per route key; `alpha` weighs the newest observation."""

    def __init__(self, alpha: float = 0.3) -> None:
        self.alpha = alpha
        self._average: dict[str, float] = {}

    def observe(self, route_key: str, seconds: float) -> None:
        """Fold one successful attempt's duration into the route's average."""
        seconds = max(0.0, seconds)
        previous = self._average.get(route_key)
        self._average[route_key] = (
            seconds if previous is None else self.alpha * seconds + (1 - self.alpha) * previous
        )

    def expected(self) -> dict[str, int]:
        """Route key -> observed latency in whole seconds (at least 1), for routes with data."""
        return {key: max(1, math.ceil(value)) for key, value in self._average.items()}


def is_provider_failure(exc: BrokerError) -> bool | None:
    """How an attempt's error counts for its provider's health: True a failure, False a success
    (the provider answered, the input was refused), None not the provider's doing."""
    if isinstance(exc, Rejected):
        return False
    if isinstance(exc, ProviderError):
        return True
    return None


class SharedCircuits(Protocol):
    """Breaker state kept where every replica sees it (`broker.jobs.redis_circuits`): one verdict per
    provider for the whole deployment, and at most one half-open probe at a time across replicas."""

    async def admit(self, provider: str, now: float) -> str | None:
        """None when an attempt may go to `provider` now (in the half-open state it is the probe);
        else why not."""
        ...

    async def record(self, provider: str, ok: bool, now: float) -> None: ...

    async def abandon(self, provider: str) -> None: ...

    async def unavailable(self, now: float) -> dict[str, str]: ...


class ProviderHealth:
    """Every provider's breaker and every route's observed latency.

    The synchronous methods keep the breakers in this process. The async ones (`admit`, `report_*`,
    `unavailable_now`) are what the runner and the quote use: with `shared` set they go to the shared
    state, so N replicas open, probe and close one breaker per provider together.
    """

    def __init__(
        self, clock: Clock, settings: BreakerSettings | None = None, shared: SharedCircuits | None = None
    ) -> None:
        self.clock = clock
        self.settings = settings or BreakerSettings()
        self.latency = LatencyTracker()
        self.shared = shared
        self._breakers: dict[str, CircuitBreaker] = {}
        self._shared_view: dict[str, str] = {}

    async def admit(self, provider: str) -> bool:
        """May an attempt go to `provider` now? If so (and half-open), the caller's is the probe."""
        if self.shared is not None:
            return await self.shared.admit(provider, self.clock()) is None
        breaker = self.breaker(provider)
        if breaker.blocked() is not None:
            return False
        breaker.started()
        return True

    async def report_success(self, provider: str, route_key: str, seconds: float) -> None:
        if self.shared is None:
            self.succeeded(provider, route_key, seconds)
            return
        self.latency.observe(route_key, seconds)
        await self.shared.record(provider, True, self.clock())

    async def report_failure(self, provider: str, exc: BrokerError) -> None:
        if self.shared is None:
            self.failed(provider, exc)
            return
        verdict = is_provider_failure(exc)
        if verdict is None:
            await self.shared.abandon(provider)
        else:
            await self.shared.record(provider, not verdict, self.clock())

    async def report_abandoned(self, provider: str) -> None:
        if self.shared is None:
            self.abandoned(provider)
        else:
            await self.shared.abandon(provider)

    async def unavailable_now(self) -> dict[str, str]:
        """Provider -> why its circuit keeps it out of quotes now (the shared view where there is one)."""
        if self.shared is None:
            return self.unavailable()
        self._shared_view = await self.shared.unavailable(self.clock())
        return dict(self._shared_view)

    def breaker(self, provider: str) -> CircuitBreaker:
        """The provider's breaker, made on first use."""
        if provider not in self._breakers:
            self._breakers[provider] = CircuitBreaker(self.settings, self.clock)
        return self._breakers[provider]

    def unavailable(self) -> dict[str, str]:
        """Provider -> why its circuit keeps it out of quotes now."""
        reasons = {name: breaker.blocked() for name, breaker in self._breakers.items()}
        return {name: reason for name, reason in reasons.items() if reason is not None}

    def states(self) -> Mapping[str, BreakerState]:
        """Provider -> breaker state, for providers that have had attempts."""
        return {name: breaker.state for name, breaker in self._breakers.items()}

    def started(self, provider: str) -> None:
        """An attempt is being submitted to `provider`."""
        self.breaker(provider).started()

    def succeeded(self, provider: str, route_key: str, seconds: float) -> None:
        """An attempt delivered its video after `seconds`."""
        self.breaker(provider).record(True)
        self.latency.observe(route_key, seconds)

    def failed(self, provider: str, exc: BrokerError) -> None:
        """An attempt failed with `exc`; counted as its class says (see `is_provider_failure`)."""
        verdict = is_provider_failure(exc)
        if verdict is None:
            self.breaker(provider).abandon()
        else:
            self.breaker(provider).record(not verdict)

    def abandoned(self, provider: str) -> None:
        """An attempt was cancelled: no verdict on the provider."""
        self.breaker(provider).abandon()
