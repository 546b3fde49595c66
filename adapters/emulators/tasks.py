"""An emulated render and its timeline: state is computed from the injected clock, never from timers.

A task may wait for a free slot until `begins_at` (throttled), then spends the first `queue_fraction`
of `render_s` queued, then runs with progress rising to 1, then ends: succeeded, or failed with
`fail_code`. A `never_finish` task runs forever. Each provider module maps these phases onto its own
status words.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

Clock = Callable[[], float]


class Phase(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED)


class ManualClock:
    """A clock tests move by hand; starts at a fixed wall time so ISO timestamps stay readable."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def iso(timestamp: float) -> str:
    """An ISO 8601 UTC timestamp with milliseconds, as the providers write them."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id() -> str:
    """A fresh task id (UUID4, as the providers use)."""
    return str(uuid.uuid4())


@dataclass(slots=True)
class EmulatedTask:
    """One render at an emulated provider. `cost` is in the provider's unit; `params` its own fields."""

    model: str
    created_at: float
    render_s: float
    base_url: str  # the emulator's origin as the submitting client saw it; output URLs hang off it
    duration_s: int = 5
    width: int = 64
    height: int = 36
    cost: int = 0
    queue_fraction: float = 0.25
    fail_code: str | None = None
    fail_message: str | None = None
    never_finish: bool = False
    forged_webhook: bool = False  # sign its webhook with a wrong secret
    webhook_url: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_id)
    begins_at: float | None = None  # later than created_at while throttled by a concurrency limit
    cancelled_at: float | None = None
    webhook_sent: bool = False
    deleted: bool = False

    @property
    def begins(self) -> float:
        """When the task got its slot and its render timeline began."""
        return self.created_at if self.begins_at is None else self.begins_at

    @property
    def ends_at(self) -> float | None:
        """When the render ends on its own; None if it never does."""
        return None if self.never_finish else self.begins + self.render_s

    @property
    def started_at(self) -> float:
        return self.begins + self.render_s * self.queue_fraction

    def throttled(self, now: float) -> bool:
        """Still waiting for a concurrency slot at `now`."""
        return self.phase(now) == Phase.QUEUED and now < self.begins

    def phase(self, now: float) -> Phase:
        """The task's phase at `now`."""
        if self.cancelled_at is not None and now >= self.cancelled_at:
            return Phase.CANCELLED
        ends_at = self.ends_at
        if ends_at is not None and now >= ends_at:
            return Phase.FAILED if self.fail_code else Phase.SUCCEEDED
        return Phase.QUEUED if now < self.started_at else Phase.RUNNING

    def progress(self, now: float) -> float:
        """Share of the render done, 0..1; a never-finishing task creeps towards 0.99."""
        if self.phase(now) == Phase.SUCCEEDED:
            return 1.0
        span = self.render_s * (1 - self.queue_fraction)
        done = (now - self.started_at) / span if span > 0 else 1.0
        return round(min(max(done, 0.0), 0.99), 3)

    def finished_at(self, now: float) -> float | None:
        """When the task reached its terminal phase, if it has by `now`."""
        phase = self.phase(now)
        if phase == Phase.CANCELLED:
            return self.cancelled_at
        return self.ends_at if phase.terminal else None

    @property
    def output_path(self) -> str:
        return f"/_emulator/media/{self.id}.mp4"

    @property
    def output_url(self) -> str:
        return self.base_url + self.output_path
