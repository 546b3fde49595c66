"""Per-provider capacity in this broker process: how many attempts may be in flight at once
(`max_concurrency`) and how many submits a minute (`requests_per_minute`), both from config.yaml.

A slot is taken just before an attempt's submit and given back when the attempt ends; slots are keyed
by attempt id, so giving one back twice is harmless. A route whose provider is saturated is skipped
when another route can serve the job; otherwise the job is parked and looks again (broker/jobs/submit.py).
This is the in-process home of the slots (`broker.jobs.slots.LocalSlots`); with Redis they live there.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from adapters.base import Clock, Sleep
from broker.config import ProviderConfig
from broker.jobs.waiting import sleep_or_event

RATE_WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Limits:
    max_concurrency: int | None = None
    requests_per_minute: int | None = None


@dataclass
class _Provider:
    limits: Limits
    held: dict[str, str] = field(default_factory=dict)  # attempt id -> job id
    submits: deque[float] = field(default_factory=deque)


class Capacity:
    """Slots per provider; a provider without configured limits is never saturated."""

    def __init__(self, clock: Clock, limits: Mapping[str, Limits] | None = None) -> None:
        self.clock = clock
        self._providers: dict[str, _Provider] = {}
        self._source: object = None
        self._changed = asyncio.Event()
        self.configure(limits or {})

    def configure(self, limits: Mapping[str, Limits]) -> None:
        """Set every provider's limits; slots already held stay held."""
        for name, limit in limits.items():
            if name in self._providers:
                self._providers[name].limits = limit
            else:
                self._providers[name] = _Provider(limit)
        self._signal()  # a raised limit may let a waiting job go

    def follow(self, providers: Mapping[str, ProviderConfig]) -> None:
        """Take the limits from config.yaml's providers, when that mapping is not the one last taken."""
        if providers is self._source:
            return
        self._source = providers
        self.configure(
            {
                name: Limits(config.max_concurrency, config.requests_per_minute)
                for name, config in providers.items()
            }
        )

    def blocked(self, provider: str) -> str | None:
        """Why `provider` can take no submit now, or None when it can."""
        state = self._providers.get(provider)
        if state is None:
            return None
        limits = state.limits
        if limits.max_concurrency is not None and len(state.held) >= limits.max_concurrency:
            return f"provider {provider} at capacity ({len(state.held)} of {limits.max_concurrency} running)"
        self._prune(state)
        if limits.requests_per_minute is not None and len(state.submits) >= limits.requests_per_minute:
            return f"provider {provider} at its rate limit ({limits.requests_per_minute} submits a minute)"
        return None

    def saturated(self) -> dict[str, str]:
        """Provider -> why it can take no submit now."""
        reasons = {name: self.blocked(name) for name in self._providers}
        return {name: reason for name, reason in reasons.items() if reason is not None}

    def in_flight(self, provider: str) -> int:
        """How many slots `provider` has taken."""
        state = self._providers.get(provider)
        return 0 if state is None else len(state.held)

    def try_acquire(self, provider: str, attempt_id: str, job_id: str) -> bool:
        """Take a slot for the attempt's submit if the provider has one free."""
        if self.blocked(provider) is not None:
            return False
        self.hold(provider, attempt_id, job_id)
        return True

    def hold(self, provider: str, attempt_id: str, job_id: str, *, new_submit: bool = True) -> None:
        """Take a slot whatever the limits say; `new_submit=False` for an attempt already at the provider
        (resumed after a restart), which does not count against the submit rate."""
        state = self._providers.setdefault(provider, _Provider(Limits()))
        if attempt_id not in state.held and new_submit:
            state.submits.append(self.clock())
        state.held[attempt_id] = job_id

    def release(self, attempt_id: str) -> None:
        """The attempt ended: give its slot back."""
        for state in self._providers.values():
            if state.held.pop(attempt_id, None) is not None:
                self._signal()

    def release_job(self, job_id: str) -> None:
        """Give back every slot the job's attempts hold (its worker stops working on it)."""
        for state in self._providers.values():
            for attempt_id in [a for a, job in state.held.items() if job == job_id]:
                del state.held[attempt_id]
                self._signal()

    def free_in(self, provider: str) -> float | None:
        """Seconds until the rate window lets `provider` take a submit again, if that is what blocks it."""
        state = self._providers.get(provider)
        if state is None or state.limits.requests_per_minute is None or not state.submits:
            return None
        if len(state.submits) < state.limits.requests_per_minute:
            return None
        return max(0.0, state.submits[0] + RATE_WINDOW_S - self.clock())

    async def wait_for_change(self, timeout_s: float, sleep: Sleep) -> None:
        """Return when a slot is given back or limits change, or after `timeout_s` on `sleep`."""
        await sleep_or_event(sleep, timeout_s, self._changed)

    def _signal(self) -> None:
        # Wake every waiter once; later waiters wait on a fresh event.
        self._changed.set()
        self._changed = asyncio.Event()

    def _prune(self, state: _Provider) -> None:
        now = self.clock()
        while state.submits and now - state.submits[0] >= RATE_WINDOW_S:
            state.submits.popleft()
