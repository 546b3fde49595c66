"""A fixed set of finished jobs over two days, for the cost-report tests."""

from __future__ import annotations

from datetime import UTC, datetime

from broker.schema import Attempt, AttemptStatus, ErrorCode, JobError, JobStatus, RouteRef
from broker.store import JobRecord
from pricing.money import Money
from tests.support.factories import job_record

DAY1 = datetime(2026, 11, 20, 9, tzinfo=UTC)
DAY2 = datetime(2026, 11, 21, 9, tzinfo=UTC)


def attempt(
    provider: str, model: str, status: AttemptStatus, cost: str | None, estimate: str = "0.100000"
) -> Attempt:
    return Attempt(
        id=f"att_{provider}_{model}_{status.value}",
        job_id="job_x",
        provider=provider,
        model=model,
        status=status,
        provider_job_id=f"{provider}-task",
        started_at=DAY1,
        estimated_cost_usd=estimate,
        cost_usd=cost,
        error=JobError(code=ErrorCode.PROVIDER_UNAVAILABLE, message="down")
        if status is AttemptStatus.FAILED
        else None,
    )


def finished(
    team: str,
    status: JobStatus,
    attempts: list[Attempt],
    *,
    estimate: str,
    baseline: str | None = "0.500000",
    created_at: datetime = DAY1,
) -> JobRecord:
    record = job_record(team=team, created_at=created_at)
    total = sum((a.cost_usd for a in attempts if a.cost_usd is not None), Money.zero())
    last = attempts[-1] if attempts else None
    route = RouteRef(provider=last.provider, model=last.model) if last else None
    changed = record.evolve(
        status=status,
        attempts=attempts,
        cost_usd=total,
        estimated_cost_usd=Money.parse(estimate),
        route=route,
    )
    baseline_usd = None if baseline is None else Money.parse(baseline)
    return changed.model_copy(update={"baseline_cost_usd": baseline_usd})


def workload() -> list[JobRecord]:
    """A success, a fallback that succeeded, a charged failure, a refunded failure, a cancel."""
    ok, failed, cancelled = AttemptStatus.SUCCEEDED, AttemptStatus.FAILED, AttemptStatus.CANCELLED
    return [
        finished(
            "growth", JobStatus.SUCCEEDED, [attempt("cheap", "c1", ok, "0.100000")], estimate="0.100000"
        ),
        finished(
            "studio",
            JobStatus.SUCCEEDED,
            [attempt("cheap", "c1", failed, "0.030000"), attempt("dear", "d1", ok, "0.500000", "0.500000")],
            estimate="0.100000",
            created_at=DAY2,
        ),
        finished(
            "growth", JobStatus.FAILED, [attempt("cheap", "c1", failed, "0.040000")], estimate="0.100000"
        ),
        finished(
            "growth",
            JobStatus.FAILED,
            [attempt("dear", "d1", failed, "0.000000", "0.500000")],
            estimate="0.500000",
            created_at=DAY2,
        ),
        finished(
            "studio", JobStatus.CANCELLED, [attempt("cheap", "c1", cancelled, "0.000000")], estimate="0.1"
        ),
    ]
