"""Observers of job changes: metrics and transition logs watch jobs without the runner knowing them."""

from __future__ import annotations

from typing import Protocol

from broker.store import JobRecord


class JobObserver(Protocol):
    def job_changed(self, before: JobRecord | None, after: JobRecord) -> None:
        """Called after every stored change of a job (`before` is None for a new job)."""
        ...


def notify(observers: list[JobObserver], before: JobRecord | None, after: JobRecord) -> None:
    for observer in observers:
        observer.job_changed(before, after)
