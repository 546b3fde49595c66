"""What `broker submit --wait` shows while a job runs.

On a terminal one status line is redrawn in place (at least once a second, so the elapsed time moves);
elsewhere (a pipe, a log file) a plain line is printed each time something changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TextIO

from broker.schema import Job

CLEAR_LINE = "\r\x1b[2K"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The facts one progress line shows."""

    status: str
    route: str
    attempt: int
    elapsed_s: float
    expected_s: int | None
    cost_usd: str
    estimated_usd: str | None = None

    def line(self) -> str:
        expected = f" / ~{self.expected_s}s" if self.expected_s is not None else ""
        attempt = f"attempt {self.attempt}" if self.attempt else "no attempt yet"
        estimate = f" (estimate {self.estimated_usd})" if self.estimated_usd is not None else ""
        return (
            f"{self.status:<9} {self.route}  {attempt}  "
            f"{self.elapsed_s:5.0f}s{expected}  cost {self.cost_usd} USD{estimate}"
        )

    def changed_from(self, other: Snapshot | None) -> bool:
        """Whether a plain log should print this one: anything but the clock moved."""
        return other is None or self._facts() != other._facts()

    def _facts(self) -> tuple[str, str, int, str]:
        return (self.status, self.route, self.attempt, self.cost_usd)


def _current_route(job: Job) -> tuple[str, str]:
    """The route of the job's latest attempt, else the one it was quoted."""
    if job.attempts:
        return job.attempts[-1].provider, job.attempts[-1].model
    if job.route is not None:
        return job.route.provider, job.route.model
    return "-", "-"


def snapshot(job: Job, elapsed_s: float, expected: Mapping[str, int]) -> Snapshot:
    """The job now: its current attempt's route (else the quoted one) and that route's expected latency."""
    provider, model = _current_route(job)
    return Snapshot(
        status=job.status.value,
        route=f"{provider}/{model}",
        attempt=len(job.attempts),
        elapsed_s=elapsed_s,
        expected_s=expected.get(f"{provider}/{model}"),
        cost_usd=str(job.cost_usd),
        estimated_usd=None if job.estimated_cost_usd is None else str(job.estimated_cost_usd),
    )


class Progress:
    """Draws snapshots on `out`: redrawn in place on a terminal, one line per change otherwise."""

    def __init__(self, out: TextIO, *, live: bool) -> None:
        self.out, self.live = out, live
        self._last: Snapshot | None = None

    def show(self, now: Snapshot) -> None:
        if self.live:
            self.out.write(CLEAR_LINE + now.line())
            self.out.flush()
        elif now.changed_from(self._last):
            self.out.write(now.line() + "\n")
            self.out.flush()
        self._last = now

    def finish(self) -> None:
        """End the live line, so what follows starts on a fresh one."""
        if self.live and self._last is not None:
            self.out.write("\n")
            self.out.flush()
