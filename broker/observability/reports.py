"""Cost reports: jobs and their attempts summed into groups by provider, team, model and day.

Pure aggregation over `JobRecord`s; the handler and the CLI read the records and render the result.

Attribution, so that every micro-dollar lands in exactly one group:
  * spend (and attempt counts, unbilled amounts) follow each *attempt's* provider and model: a job
    that fell back from one provider to another charges each provider what its attempt cost;
  * job counts, the estimate, the baseline and savings follow the job's final route (the route of
    its last attempt, or the quoted route if it never ran);
  * team and day are the job's (day is the UTC date the job was created).
Hence the spend of all groups is the sum of every job's `cost_usd`, to the micro-dollar.

Refunds: `refunds_usd` sums what providers reported giving back (an attempt's `refunded_usd`).
`unbilled_usd` is wider: the estimate of every attempt that reached a provider and ended failed or
cancelled without a charge, i.e. what was refunded or never billed.

Expired jobs: once a job has expired (`broker.jobs.retention`), its sums are read from the daily
ledger, grouped the same way at the finest grain (day, team, provider, model), so a report's figures
are the same before and after (`ledger_figures.py`).

Unpriced: `unpriced_usd` is the part of `spend_usd` booked at a policy's `allow_unpriced_max_usd`
ceiling on a route with no known price (an upper bound, over `unpriced_attempts` attempts).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any

from broker.schema import Attempt, AttemptStatus, JobStatus
from broker.store import JobRecord
from broker.store.retention import LedgerRow
from pricing.money import Money

NO_ROUTE = "(none)"
TOTAL = "(total)"
MAX_WINDOW = timedelta(days=366)  # bounds the records one report reads


class BadParameter(ValueError):
    """A report parameter that can't be used; `param` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


class Dimension(StrEnum):
    """What a report can group by (`group_by=`)."""

    PROVIDER = "provider"
    TEAM = "team"
    MODEL = "model"
    DAY = "day"


@dataclass(slots=True)
class Tally:
    """The sums for one group (or for the whole report)."""

    jobs: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    in_progress: int = 0
    attempts: int = 0
    spend: Money = field(default_factory=Money.zero)
    estimate: Money = field(default_factory=Money.zero)
    unbilled: Money = field(default_factory=Money.zero)
    refunds: Money = field(default_factory=Money.zero)
    baseline: Money = field(default_factory=Money.zero)  # of succeeded jobs that have one
    baseline_actual: Money = field(default_factory=Money.zero)  # what those same jobs really cost
    unpriced_attempts: int = 0
    unpriced: Money = field(default_factory=Money.zero)  # spend booked at a policy's ceiling (upper bound)

    def add_job(self, record: JobRecord) -> None:
        """Count the job itself: its status, its estimate and, if it succeeded, its savings."""
        job = record.job
        self.jobs += 1
        if job.status is JobStatus.SUCCEEDED:
            self.succeeded += 1
            if record.baseline_cost_usd is not None:
                self.baseline += record.baseline_cost_usd
                self.baseline_actual += job.cost_usd
        elif job.status is JobStatus.FAILED:
            self.failed += 1
        elif job.status is JobStatus.CANCELLED:
            self.cancelled += 1
        else:
            self.in_progress += 1
        if job.estimated_cost_usd is not None:
            self.estimate += job.estimated_cost_usd

    def add_attempt(self, attempt: Attempt) -> None:
        """Count one try at a route and what it cost."""
        self.attempts += 1
        cost = attempt.cost_usd or Money.zero()
        self.spend += cost
        if attempt.refunded_usd is not None:
            self.refunds += attempt.refunded_usd
        if attempt.unpriced:
            self.unpriced_attempts += 1
            self.unpriced += cost
        ended_unpaid = attempt.status in (AttemptStatus.FAILED, AttemptStatus.CANCELLED)
        if ended_unpaid and attempt.provider_job_id and cost.micros == 0 and attempt.estimated_cost_usd:
            self.unbilled += attempt.estimated_cost_usd

    def merge(self, other: Tally) -> None:
        """Add another group's sums to these."""
        for name in _FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def figures(self) -> dict[str, int]:
        """The sums as the daily ledger keeps them: integers, money in micro-USD."""
        return {name: _integer(getattr(self, name)) for name in _FIELDS}

    @classmethod
    def of_figures(cls, figures: Mapping[str, int]) -> Tally:
        """The sums of a ledger row (see `figures`)."""
        tally = cls()
        for name in _FIELDS:
            zero = getattr(tally, name)
            amount = figures.get(name, 0)
            setattr(tally, name, Money(amount) if isinstance(zero, Money) else amount)
        return tally

    @property
    def savings(self) -> Money:
        """Baseline minus actual, over the succeeded jobs that recorded a baseline."""
        return self.baseline - self.baseline_actual

    @property
    def average_per_success(self) -> Money | None:
        """Spend per delivered clip, failed attempts included; None without a success."""
        if not self.succeeded:
            return None
        return Money.from_decimal(self.spend.to_decimal() / self.succeeded)

    def to_json(self) -> dict[str, Any]:
        """The figures, money as six-decimal strings."""
        average = self.average_per_success
        return {
            "jobs": self.jobs,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "in_progress": self.in_progress,
            "attempts": self.attempts,
            "spend_usd": str(self.spend),
            "estimate_usd": str(self.estimate),
            "refunds_usd": str(self.refunds),
            "unbilled_usd": str(self.unbilled),
            "avg_cost_per_success_usd": None if average is None else str(average),
            "baseline_usd": str(self.baseline),
            "savings_usd": str(self.savings),
            "unpriced_attempts": self.unpriced_attempts,
            "unpriced_usd": str(self.unpriced),
        }


FIGURES = tuple(Tally().to_json())  # the column order of every rendering
_FIELDS = tuple(f.name for f in fields(Tally))


def _integer(value: Money | int) -> int:
    return value.micros if isinstance(value, Money) else value


@dataclass(frozen=True, slots=True)
class CostReport:
    """A report over jobs created in [start, end): groups sorted by key, and the totals."""

    start: datetime
    end: datetime
    group_by: tuple[Dimension, ...]
    groups: list[tuple[tuple[str, ...], Tally]]
    totals: Tally

    def to_json(self) -> dict[str, Any]:
        """The API's JSON body."""
        dims = [d.value for d in self.group_by]
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "group_by": dims,
            "groups": [
                {**dict(zip(dims, key, strict=True)), **tally.to_json()} for key, tally in self.groups
            ],
            "totals": self.totals.to_json(),
        }

    def rows(self) -> list[list[str]]:
        """Header, one row per group, then a totals row whose group columns read "(total)"."""
        header = [d.value for d in self.group_by] + list(FIGURES)
        body = [list(key) + _cells(tally) for key, tally in self.groups]
        return [header, *body, [TOTAL] * len(self.group_by) + _cells(self.totals)]

    def to_csv(self) -> str:
        """The same figures as CSV, one row per group and a totals row."""
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(self.rows())
        return buffer.getvalue()


def _cells(tally: Tally) -> list[str]:
    return ["" if value is None else str(value) for value in tally.to_json().values()]


def _job_dims(record: JobRecord) -> dict[Dimension, str]:
    job = record.job
    return {
        Dimension.PROVIDER: job.route.provider if job.route else NO_ROUTE,
        Dimension.MODEL: job.route.model if job.route else NO_ROUTE,
        Dimension.TEAM: job.team,
        Dimension.DAY: job.created_at.astimezone(UTC).date().isoformat(),
    }


def _key(dims: dict[Dimension, str], group_by: Sequence[Dimension]) -> tuple[str, ...]:
    return tuple(dims[d] for d in group_by)


def parse_group_by(text: str) -> tuple[Dimension, ...]:
    """"provider,team" -> dimensions; `BadParameter` for `group_by` naming what is wrong."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    known = ", ".join(d.value for d in Dimension)
    dims: list[Dimension] = []
    for name in names:
        try:
            dim = Dimension(name)
        except ValueError:
            raise BadParameter("group_by", f"unknown dimension {name!r}; use any of {known}") from None
        if dim in dims:
            raise BadParameter("group_by", f"{name!r} is given twice")
        dims.append(dim)
    return tuple(dims)


def parse_bound(param: str, text: str, *, end: bool) -> datetime:
    """An ISO date or datetime (UTC unless it says otherwise); a bare date as the end includes that day."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime.combine(day + timedelta(days=1) if end else day, time(), UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadParameter(param, f"not an ISO date or datetime: {text[:40]!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def report_window(start: str | None, end: str | None, now: datetime) -> tuple[datetime, datetime]:
    """[from, to) of a report: by default until now, from the start of the UTC month `to` falls in."""
    upper = parse_bound("to", end, end=True) if end else now
    if start:
        lower = parse_bound("from", start, end=False)
    else:
        last = upper - timedelta(microseconds=1)
        lower = datetime(last.year, last.month, 1, tzinfo=UTC)
    if lower >= upper:
        raise BadParameter("from", "must be before to")
    if upper - lower > MAX_WINDOW:
        raise BadParameter("to", f"a report covers at most {MAX_WINDOW.days} days")
    return lower, upper


def build_report(
    records: Iterable[JobRecord],
    group_by: Sequence[Dimension],
    start: datetime,
    end: datetime,
    ledger: Iterable[LedgerRow] = (),
) -> CostReport:
    """Sum `records` into groups by `group_by` (several dimensions at once, or none for totals only);
    `ledger` adds the days' expired jobs, as the daily ledger keeps their sums."""
    groups: dict[tuple[str, ...], Tally] = {}
    totals = Tally()
    for row in ledger:
        dims = {
            Dimension.PROVIDER: row.provider,
            Dimension.MODEL: row.model,
            Dimension.TEAM: row.team,
            Dimension.DAY: row.day.isoformat(),
        }
        tally = Tally.of_figures(row.figures)
        groups.setdefault(_key(dims, group_by), Tally()).merge(tally)
        totals.merge(tally)
    for record in records:
        dims = _job_dims(record)
        groups.setdefault(_key(dims, group_by), Tally()).add_job(record)
        totals.add_job(record)
        for attempt in record.job.attempts:
            at = {**dims, Dimension.PROVIDER: attempt.provider, Dimension.MODEL: attempt.model}
            groups.setdefault(_key(at, group_by), Tally()).add_attempt(attempt)
            totals.add_attempt(attempt)
    ordered = sorted(groups.items()) if group_by else []
    return CostReport(start=start, end=end, group_by=tuple(group_by), groups=ordered, totals=totals)
