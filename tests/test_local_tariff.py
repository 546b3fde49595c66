"""The local route is charged per second of output, so its estimate is never below what it books,
however long the render's compute took (measured 0.2-0.9 compute s per output s, by load)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from adapters.base import TaskState, TaskStatus
from broker.config import load_config
from broker.jobs.costs import cost, reported_text
from broker.schema import Attempt, AttemptStatus, JobRequest, Resolution
from pricing.catalog import RouteSpec
from pricing.quote import route_cost
from pricing.units import CostUnit, ReportedCost
from tests.support.paths import ROOT


def local_attempt(request: JobRequest) -> tuple[Attempt, RouteSpec]:
    route = next(r for r in load_config(ROOT / "config.yaml").routes if r.provider == "local")
    price = route_cost(route, request)  # what the quote and the submit step reserve
    assert price is not None and price.micros > 0
    attempt = Attempt(
        id="att_1",
        job_id="job_1",
        provider="local",
        model=route.model,
        status=AttemptStatus.RUNNING,
        started_at=datetime.now(UTC),
        estimated_cost_usd=str(price),
    )
    return attempt, route


@pytest.mark.parametrize("resolution", [Resolution.HD, Resolution.FULL_HD])
@pytest.mark.parametrize("compute_per_output_s", ["0.05", "0.31", "0.9", "4.5"])
def test_local_books_its_estimate_whatever_the_metered_compute(
    resolution: Resolution, compute_per_output_s: str
) -> None:
    request = JobRequest(
        prompt="push in", image_url="https://example.com/a.png", duration_s=5, resolution=resolution
    )
    attempt, route = local_attempt(request)
    metered = ReportedCost(Decimal(compute_per_output_s) * 5, CostUnit.COMPUTE_SECONDS)
    done = TaskStatus(TaskState.SUCCEEDED, output_url="file:///x.mp4", reported_cost=metered)
    booked = cost(route, done, attempt, succeeded=True)
    assert booked == attempt.estimated_cost_usd  # never above the estimate the budget holds
    assert reported_text(done) == f"{(Decimal(compute_per_output_s) * 5).normalize():f} compute_seconds"
    failed = TaskStatus(TaskState.FAILED, reported_cost=metered)
    assert cost(route, failed, attempt, succeeded=False).micros == 0
