"""Per-provider capacity in this broker process: how many attempts may be in flight at once
(`max_concurrency`) and how many submits a minute (`requests_per_minute`), both from config.yaml,
and the queue of jobs waiting for a slot (`broker.jobs.local_queues`, by the rule of
`broker.jobs.queues`).

A slot is taken just before an attempt's submit and given back when the attempt ends; slots are keyed
by attempt id, so giving one back twice is harmless. A slot given back goes to the next queued job
(granted, for `GRANT_S`), never to whoever asks first. This is the in-process home of the slots
(`broker.jobs.slots.LocalSlots`); with Redis they live there (`broker.jobs.redis_capacity`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from adapters.base import Clock, Sleep
from broker.config import ProviderConfig
from broker.jobs.local_queues import LocalQueue
from broker.jobs.queues import GRANT_S, QueueView, Seat
from broker.jobs.waiting import sleep_or_event

RATE_WINDOW_S = 60.0
UNLIMITED = 1 << 30


@dataclass(frozen=True, slots=True)
class Limits:
    max_concurrency: int | None = None
    requests_per_minute: int | None = None


@dataclass
class _Provider:
    limits: Limits
    held: dict[str, tuple[str, str, float]] = field(default_factory=dict)  # attempt -> (job, team, start)
    submits: deque[float] = field(default_factory=deque)
    queue: LocalQueue = field(default_factory=LocalQueue)


class Capacity:
    """Slots per provider; a provider without configured limits is never saturated."""

    def __init__(self, clock: Clock, limits: Mapping[str, Limits] | None = None) -> None:
        self.clock = clock
        self._providers: dict[str, _Provider] = {}
        self._source: object = None
        self._changed = asyncio.Event()
        self.configure(limits or {})

    def configure(self, limits: Mapping[str, Limits]) -> list[str]:
        """Set every provider's limits; slots already held stay held. Returns the jobs a raised limit
        lets go (granted a slot)."""
        for name, limit in limits.items():
            if name in self._providers:
                self._providers[name].limits = limit
            else:
                self._providers[name] = _Provider(limit)
        self._signal()
        return [job for name in self._providers for job in self._grant(name)]

    def follow(self, providers: Mapping[str, ProviderConfig]) -> list[str]:
        """Take the limits from config.yaml's providers, when that mapping is not the one last taken."""
        if providers is self._source:
            return []
        self._source = providers
        return self.configure(
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
        busy = len(state.held) + len(state.queue.grants)
        if limits.max_concurrency is not None and busy >= limits.max_concurrency:
            return f"provider {provider} at capacity ({busy} of {limits.max_concurrency} running)"
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

    def try_acquire(self, provider: str, attempt_id: str, seat: Seat) -> tuple[bool, list[str]]:
        """Take a slot for the attempt's submit if the seat is next in the provider's queue and a slot is
        free; else the seat keeps (or takes) its place. Returns (taken, other jobs granted a slot)."""
        state = self._providers.setdefault(provider, _Provider(Limits()))
        if attempt_id in state.held:
            return True, []
        queue = state.queue
        if state.limits == Limits() and not queue.seats:  # nothing to count, nobody queues
            self.hold(provider, attempt_id, seat)
            return True, []
        now = self.clock()
        queue.prune(now)
        others = len(queue.seats) - len(queue.grants) - (seat.job_id in queue.seats)
        start = queue.take_grant(seat.job_id, now)
        if start is not None:
            self.hold(provider, attempt_id, seat, start=start)
            return True, []
        if others <= 0 and self.blocked(provider) is None:
            # A free slot with nobody else waiting (the common case: no queue to order); it is the
            # team's turn as a grant would be.
            queue.leave(seat.job_id, now)
            queue.mark(seat.team)
            self.hold(provider, attempt_id, seat)
            return True, []
        queue.join(seat, state.limits.max_concurrency)
        woken = self._grant(provider)
        start = state.queue.take_grant(seat.job_id, now)
        if start is None:
            return False, woken
        self.hold(provider, attempt_id, seat, start=start)
        return True, [job for job in woken if job != seat.job_id]

    def hold(
        self,
        provider: str,
        attempt_id: str,
        seat: Seat,
        *,
        new_submit: bool = True,
        start: float | None = None,
    ) -> None:
        """Take a slot whatever the limits say; `new_submit=False` for an attempt already at the provider
        (resumed after a restart), which does not count against the submit rate. `start`: when the
        grant the slot comes from began (the team's service already counts it)."""
        state = self._providers.setdefault(provider, _Provider(Limits()))
        if attempt_id in state.held:
            return
        now = self.clock()
        if new_submit:
            state.submits.append(now)
        if start is None:
            state.queue.ledger.begin(seat.team)
        state.held[attempt_id] = (seat.job_id, seat.team, now if start is None else start)

    def release(self, attempt_id: str) -> list[str]:
        """The attempt ended: give its slot back; returns the jobs granted the freed slot."""
        woken: list[str] = []
        for name, state in self._providers.items():
            if attempt_id in state.held:
                woken += self._end(name, state, attempt_id)
        return woken

    def release_job(self, job_id: str) -> list[str]:
        """Give back every slot the job's attempts hold (its worker stops working on it)."""
        woken: list[str] = []
        for name, state in self._providers.items():
            for attempt_id in [a for a, (job, _, _) in state.held.items() if job == job_id]:
                woken += self._end(name, state, attempt_id)
        return woken

    def _end(self, name: str, state: _Provider, attempt_id: str) -> list[str]:
        _, team, start = state.held.pop(attempt_id)
        state.queue.ledger.end(team, start, self.clock())
        self._signal()
        return self._grant(name)

    def leave(self, provider: str, job_id: str) -> list[str]:
        """The job no longer waits for `provider` (moved, cancelled, ended); a slot granted to it goes on."""
        state = self._providers.get(provider)
        if state is None:
            return []
        state.queue.leave(job_id, self.clock())
        return self._grant(provider)

    def restore_place(self, provider: str, seat: Seat) -> None:
        """Put back a queued job's place after a restart (granting waits for `grant_all`)."""
        state = self._providers.setdefault(provider, _Provider(Limits()))
        state.queue.join(seat, state.limits.max_concurrency)

    def grant_all(self) -> dict[str, list[str]]:
        """Grant every provider's free slots to its queue; provider -> the jobs granted."""
        granted = {name: self._grant(name) for name in self._providers}
        return {name: jobs for name, jobs in granted.items() if jobs}

    def granted(self, provider: str, job_id: str) -> bool:
        """Whether a live grant holds a slot of `provider` for the job."""
        state = self._providers.get(provider)
        if state is None:
            return False
        state.queue.prune(self.clock())
        return job_id in state.queue.grants

    def view(self, provider: str, seat: Seat) -> QueueView | None:
        """The provider's queue as the seat would see it; None for a provider with no limits."""
        state = self._providers.get(provider)
        if state is None or state.limits == Limits():
            return None
        state.queue.prune(self.clock())
        view = state.queue.view(seat, state.limits.max_concurrency or 0, len(state.held))
        return replace(view, refill_s=self.free_in(provider))

    def waiting(self, provider: str) -> int:
        state = self._providers.get(provider)
        return 0 if state is None else len(state.queue.seats)

    def depths(self) -> dict[str, dict[str, int]]:
        """Provider -> team -> jobs waiting."""
        return {name: state.queue.depths() for name, state in self._providers.items() if state.queue.seats}

    def in_use(self) -> dict[str, dict[str, int]]:
        """Provider with a concurrency cap -> team -> slots its attempts hold (granted ones not yet)."""
        return {
            name: _teams_holding(state)
            for name, state in self._providers.items()
            if state.limits.max_concurrency is not None and state.held
        }

    def free_in(self, provider: str) -> float | None:
        """Seconds until the rate window lets `provider` take a submit again, if that is what blocks it."""
        state = self._providers.get(provider)
        if state is None or state.limits.requests_per_minute is None or not state.submits:
            return None
        self._prune(state)
        if len(state.submits) + len(state.queue.grants) < state.limits.requests_per_minute:
            return None
        return max(0.0, state.submits[0] + RATE_WINDOW_S - self.clock()) if state.submits else None

    async def wait_for_change(self, timeout_s: float, sleep: Sleep) -> None:
        """Return when a slot is given back or limits change, or after `timeout_s` on `sleep`."""
        await sleep_or_event(sleep, timeout_s, self._changed)

    def _grant(self, provider: str) -> list[str]:
        """Give the provider's free slots to the queue's next jobs; returns them."""
        state = self._providers[provider]
        queue = state.queue
        now = self.clock()
        queue.prune(now)
        if not queue.seats:
            return []
        limits = state.limits
        free = UNLIMITED
        if limits.max_concurrency is not None:
            free = limits.max_concurrency - len(state.held) - len(queue.grants)
        if limits.requests_per_minute is not None:
            self._prune(state)
            free = min(free, limits.requests_per_minute - len(state.submits) - len(queue.grants))
        return queue.grant(free, now, GRANT_S)

    def _signal(self) -> None:
        # Wake every waiter once; later waiters wait on a fresh event.
        self._changed.set()
        self._changed = asyncio.Event()

    def _prune(self, state: _Provider) -> None:
        now = self.clock()
        while state.submits and now - state.submits[0] >= RATE_WINDOW_S:
            state.submits.popleft()


def _teams_holding(state: _Provider) -> dict[str, int]:
    """Team -> slots of the provider its attempts hold."""
    counts: dict[str, int] = {}
    for _, team, _ in state.held.values():
        counts[team] = counts.get(team, 0) + 1
    return counts
