"""What an expiring job leaves in the daily ledger: its cost-report sums and its reconciliation books,
per (UTC day created, team, provider, model), as integers the store adds up.

The finest grain of every report dimension, so any `group_by` of the cost report, and the
reconciliation's (provider, day), read the same totals from the ledger as from the records. Figures
that follow a job (jobs, outcome counts, estimate, baseline) land on its final route, those that follow
an attempt on the attempt's route, as `reports.py` attributes them. The reconciliation's figures carry
an `rc_` prefix; a provider's own figures stay per unit, in millionths of it, and an expired job's
discrepancies are counted (its record, which listed them, is gone).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta

from broker.observability.reconciliation import (
    DISCREPANCIES,
    Books,
    book_attempt,
    books_figures,
    reconciled,
)
from broker.observability.reports import Dimension, build_report
from broker.store import JobRecord
from broker.store.retention import LedgerRow, merge_rows
from pricing.catalog import RouteSpec

_GRAIN = (Dimension.DAY, Dimension.TEAM, Dimension.PROVIDER, Dimension.MODEL)


def ledger_span(start: datetime, end: datetime) -> tuple[date, date]:
    """The ledger days [first, last) a report window [start, end) reads: those whose UTC midnight lies
    in it. The ledger is daily, so a window that cuts a day counts that day's expired jobs once, in the
    window holding its start (a default window, whole UTC days to now, cuts none)."""
    return _day_from(start.astimezone(UTC)), _day_from(end.astimezone(UTC))


def _day_from(moment: datetime) -> date:
    """The first UTC day starting at or after `moment`."""
    day = moment.date()
    return day if moment == datetime.combine(day, time(), UTC) else day + timedelta(days=1)


def ledger_day(record: JobRecord) -> date:
    """The UTC day the job was created: the day of its ledger rows, as of its report groups."""
    return record.job.created_at.astimezone(UTC).date()


def ledger_rows(record: JobRecord, routes: Mapping[str, RouteSpec]) -> list[LedgerRow]:
    """The job's figures, one row per (day, team, provider, model) it touches."""
    job = record.job
    report = build_report([record], _GRAIN, job.created_at, job.created_at)
    rows = [
        LedgerRow(date.fromisoformat(day), team, provider, model, tally.figures())
        for (day, team, provider, model), tally in report.groups
    ]
    for attempt in reconciled(record):
        books = Books()
        finding = book_attempt(books, record, attempt, routes)
        figures = {**books_figures(books), DISCREPANCIES: 0 if finding is None else 1}
        rows.append(LedgerRow(ledger_day(record), job.team, attempt.provider, attempt.model, figures))
    return merge_rows(rows)
