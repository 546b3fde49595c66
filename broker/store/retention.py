"""Retention in the store: ended jobs expire, and what the reports need of them is folded into a
daily ledger that outlives them.

The ledger holds, per UTC day (the day the job was created, as the reports group), team, provider and
model, integer figures: the cost report's sums (jobs, attempts, spend, estimate, ...) and the
reconciliation's (booked, confirmed, the providers' own figures per unit, ...). What the figures are
is the reports' business (`broker.observability.ledger_figures`); the store only adds them up.

A job's figures are folded in *when it expires*, in the same atomic write that deletes its record (one
SQLite transaction, one Lua script), compare-and-set on the version the figures were computed from.
Why then and not at the job's end: an ended job's books still move (a reconciled charge, a refund
confirmed days later), so figures written at the end would need corrections; at expiry the record is
final, and a job is either still in the store or in the ledger, never both and never twice. Two
replicas expiring one job: one write wins, the other finds the job gone and adds nothing; a replayed
script likewise.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broker.store.base import JobRecord

# Figure names in a stored ledger row; a row of the Redis store keys them as "team\tprovider\tmodel\tname".
SEPARATOR = "\t"


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One group of the daily ledger and its integer figures (micro-USD for money)."""

    day: date
    team: str
    provider: str
    model: str
    figures: Mapping[str, int]

    @property
    def group(self) -> tuple[date, str, str, str]:
        return (self.day, self.team, self.provider, self.model)


def merge_rows(rows: Sequence[LedgerRow]) -> list[LedgerRow]:
    """Rows of one group added up, zero figures dropped, in group order."""
    sums: dict[tuple[date, str, str, str], dict[str, int]] = {}
    for row in rows:
        figures = sums.setdefault(row.group, {})
        for name, amount in row.figures.items():
            figures[name] = figures.get(name, 0) + amount
    return [
        LedgerRow(day, team, provider, model, {k: v for k, v in sorted(figures.items()) if v})
        for (day, team, provider, model), figures in sorted(sums.items())
        if any(figures.values())
    ]


class Expiry(StrEnum):
    """What `expire_job` did."""

    EXPIRED = "expired"  # deleted, its figures in the ledger
    GONE = "gone"  # no such job (another replica expired it first)
    CHANGED = "changed"  # the stored job is not the version given: read it again
    NOT_ENDED = "not_ended"  # the job has not ended: never expired
    RECONCILING = "reconciling"  # a charge of the job is still being asked about: later


class RetentionStore(ABC):
    """The part of `Store` that expires ended jobs and keeps the daily ledger."""

    @abstractmethod
    async def job_teams(self) -> list[str]:
        """Every team with a job in the store."""

    @abstractmethod
    async def ended_jobs(
        self, team: str, created_before: datetime, *, limit: int, skip: int = 0
    ) -> list[JobRecord]:
        """The team's ended jobs created before `created_before`, oldest first, past the first `skip`
        (the candidates of an expiry sweep; the sweep checks each one's end itself)."""

    @abstractmethod
    async def upload_in_use(self, digest: str, *, besides: str) -> bool:
        """Whether a job other than `besides` still in the store names this upload (uploads are shared
        by content)."""

    @abstractmethod
    async def expire_job(self, record: JobRecord, rows: Sequence[LedgerRow]) -> Expiry:
        """Atomically, if the stored job is `record` (same version) and has ended and has no charge
        still being reconciled: delete it with every index that names it, and add `rows` (all of the
        job's created day) to the ledger."""

    @abstractmethod
    async def ledger_rows(self, start: date, end: date, *, team: str | None = None) -> list[LedgerRow]:
        """The ledger's rows of the days in [start, end), of one team or all, in group order."""

    @abstractmethod
    async def drop_ledger_before(self, day: date) -> None:
        """Forget the ledger's days before `day` (the operator's `ledger_retention_days`)."""
