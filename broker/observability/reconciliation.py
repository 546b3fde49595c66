"""The reconciliation report: per provider and day, what the broker booked against what the providers
reported per task, and every attempt where the two differ or the provider never said.

Pure aggregation over `JobRecord`s (the handler and `broker report --reconcile` read them). An attempt
counts once it reached its provider (it has a task id). For each:
  * `booked_usd`: its `cost_usd`, the amount in the job's cost and the cost report;
  * `reported`: the provider's own figure per task (`25 credits`, `500000 micro_cents`), summed per
    unit, and `reported_usd`, that figure converted through the route's price;
  * `unconfirmed_usd`: booked on the broker's belief (a task the provider could not cancel) and not
    yet confirmed; `unreported_usd`: booked with no figure from the provider at all (fal reports none:
    its booking is the price table's).
An attempt is listed under `discrepancies` when its charge is unconfirmed, unreported, or when the
reported figure converts to another amount than the booked one. The local route is not listed: it
books a tariff per output second, and its metered compute is only a figure. The day is the UTC day
the job was created, as in the cost report, so the two line up. Jobs expired since are read from the
daily ledger (`ledger_figures.py`): their sums, and how many discrepancies they held.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from broker.schema import Attempt
from broker.store import JobRecord
from broker.store.retention import LedgerRow
from pricing.catalog import RouteSpec
from pricing.money import Money, UnknownPrice
from pricing.rules import PriceUnit
from pricing.units import CostUnit, ReportedCost

DISCREPANCIES = "rc_discrepancies"  # the ledger's count of an expired group's discrepancies
_REPORTED = "rc_reported:"  # + unit: a provider's own figure, kept in millionths of its unit
_MONEY = ("booked", "confirmed", "unconfirmed", "unreported", "reported_usd")


def parse_reported(text: str | None) -> ReportedCost | None:
    """An attempt's `reported_cost` ("25 credits") back as a `ReportedCost`; None if absent or odd."""
    if not text:
        return None
    amount, _, unit = text.partition(" ")
    try:
        return ReportedCost(Decimal(amount), CostUnit(unit))
    except (InvalidOperation, ValueError):
        return None


@dataclass(slots=True)
class Books:
    """One provider's day: its attempts, the money booked and the provider's own figures."""

    attempts: int = 0
    booked: Money = field(default_factory=Money.zero)
    confirmed: Money = field(default_factory=Money.zero)
    unconfirmed: Money = field(default_factory=Money.zero)
    unreported: Money = field(default_factory=Money.zero)
    reported: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    reported_usd: Money = field(default_factory=Money.zero)

    def merge(self, other: Books) -> None:
        """Add another group's sums to these."""
        self.attempts += other.attempts
        self.booked += other.booked
        self.confirmed += other.confirmed
        self.unconfirmed += other.unconfirmed
        self.unreported += other.unreported
        for unit, amount in other.reported.items():
            self.reported[unit] += amount
        self.reported_usd += other.reported_usd

    def to_json(self) -> dict[str, Any]:
        return {
            "attempts": self.attempts,
            "booked_usd": str(self.booked),
            "confirmed_usd": str(self.confirmed),
            "unconfirmed_usd": str(self.unconfirmed),
            "unreported_usd": str(self.unreported),
            "reported": {unit: f"{amount.normalize():f}" for unit, amount in sorted(self.reported.items())},
            "reported_usd": str(self.reported_usd),
        }


@dataclass(frozen=True, slots=True)
class Reconciliation:
    start: datetime
    end: datetime
    groups: list[tuple[tuple[str, date], Books]]
    totals: Books
    discrepancies: list[dict[str, Any]]
    expired_discrepancies: int = 0  # among jobs expired into the daily ledger (no longer listed)

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "groups": [
                {"provider": provider, "day": day.isoformat(), **books.to_json()}
                for (provider, day), books in self.groups
            ],
            "totals": self.totals.to_json(),
            "discrepancies": self.discrepancies,
            "expired_discrepancies": self.expired_discrepancies,
        }


def books_figures(books: Books) -> dict[str, int]:
    """The books as the daily ledger keeps them: integers (micro-USD, millionths of a unit)."""
    figures = {"rc_attempts": books.attempts}
    figures.update({f"rc_{name}": getattr(books, name).micros for name in _MONEY})
    for unit, amount in books.reported.items():
        figures[_REPORTED + unit] = int(amount.scaleb(6).to_integral_value(ROUND_HALF_EVEN))
    return figures


def books_of(row: LedgerRow) -> Books:
    """A ledger row's books (see `books_figures`)."""
    figures = row.figures
    books = Books(attempts=figures.get("rc_attempts", 0))
    for name in _MONEY:
        setattr(books, name, Money(figures.get(f"rc_{name}", 0)))
    for name, amount in figures.items():
        if name.startswith(_REPORTED):
            books.reported[name.removeprefix(_REPORTED)] += Decimal(amount).scaleb(-6)
    return books


def _converted(route: RouteSpec | None, reported: ReportedCost | None) -> Money | None:
    if route is None or route.price is None or reported is None:
        return None
    with contextlib.suppress(UnknownPrice):
        return route.price.reported_to_money(reported)
    return None


def _finding(
    record: JobRecord, attempt: Attempt, route: RouteSpec | None, reported_usd: Money | None
) -> dict[str, Any] | None:
    """Why this attempt's booking is not the provider's word, or None when it is."""
    booked = attempt.cost_usd or Money.zero()
    if route is not None and route.price is not None and route.price.unit is PriceUnit.USD_PER_COMPUTE_HOUR:
        return None  # our own backend: its tariff is the charge, its metered compute only a figure
    if attempt.unconfirmed_usd is not None and attempt.provider_job_id is None:
        reason = "unconfirmed: the submit's answer was lost; the provider may hold (and charge) a task"
    elif attempt.unconfirmed_usd is not None:
        reason = "unconfirmed: the provider has not reported the task's end"
    elif attempt.reported_cost is None:
        reason = "unreported: the provider gives no cost for the task; booked from the price table"
    elif reported_usd is None:
        reason = "unconvertible: the provider's figure has no price to convert it with"
    elif reported_usd != booked and not (attempt.refunded_usd and booked.micros == 0):
        reason = "differs: the booked amount is not the provider's figure"
    else:
        return None
    return {
        "job_id": record.id,
        "team": record.job.team,
        "attempt_id": attempt.id,
        "provider": attempt.provider,
        "model": attempt.model,
        "provider_job_id": attempt.provider_job_id,
        "status": attempt.status.value,
        "booked_usd": str(booked),
        "reported_cost": attempt.reported_cost,
        "reported_usd": None if reported_usd is None else str(reported_usd),
        "unconfirmed_usd": None if attempt.unconfirmed_usd is None else str(attempt.unconfirmed_usd),
        "reason": reason,
    }


def build_reconciliation(
    records: Iterable[JobRecord],
    routes: Mapping[str, RouteSpec],
    start: datetime,
    end: datetime,
    ledger: Iterable[LedgerRow] = (),
) -> Reconciliation:
    """Sum every attempt that reached a provider by (provider, day), and list the discrepancies;
    `ledger` adds the days' expired jobs (counted, not listed: their records are gone)."""
    groups: dict[tuple[str, date], Books] = {}
    totals = Books()
    findings: list[dict[str, Any]] = []
    for record in records:
        day = record.job.created_at.date()
        for attempt in reconciled(record):
            books = Books()
            finding = book_attempt(books, record, attempt, routes)
            for sums in (groups.setdefault((attempt.provider, day), Books()), totals):
                sums.merge(books)
            if finding is not None:
                findings.append(finding)
    expired = 0
    for row in ledger:  # jobs expired since: their books as the daily ledger keeps them
        books = books_of(row)
        for sums in (groups.setdefault((row.provider, row.day), Books()), totals):
            sums.merge(books)
        expired += row.figures.get(DISCREPANCIES, 0)
    return Reconciliation(start, end, sorted(groups.items()), totals, findings, expired)


def reconciled(record: JobRecord) -> list[Attempt]:
    """The job's attempts that reached their provider (the others have nothing to reconcile)."""
    return [a for a in record.job.attempts if a.provider_job_id is not None or a.unconfirmed_usd is not None]


def book_attempt(
    books: Books, record: JobRecord, attempt: Attempt, routes: Mapping[str, RouteSpec]
) -> dict[str, Any] | None:
    """Add one attempt to `books`; returns the discrepancy it is, or None."""
    reported = parse_reported(attempt.reported_cost)
    route = routes.get(f"{attempt.provider}/{attempt.model}")
    reported_usd = _converted(route, reported)
    _add(books, attempt, reported, reported_usd)
    return _finding(record, attempt, route, reported_usd)


def _add(books: Books, attempt: Attempt, reported: ReportedCost | None, reported_usd: Money | None) -> None:
    booked = attempt.cost_usd or Money.zero()
    books.attempts += 1
    books.booked += booked
    if attempt.unconfirmed_usd is not None:
        books.unconfirmed += attempt.unconfirmed_usd
    elif reported is None:
        books.unreported += booked
    else:
        books.confirmed += booked
    if reported is not None:
        books.reported[reported.unit.value] += reported.amount
    if reported_usd is not None:
        books.reported_usd += reported_usd
