"""`build_reconciliation` on hand-made records: sums per provider and day, and which attempts it lists."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from broker.config import load_config
from broker.observability.reconciliation import build_reconciliation, parse_reported
from broker.schema import Attempt, AttemptStatus, JobStatus
from broker.store import JobRecord
from pricing.units import CostUnit
from tests.support.factories import job_record
from tests.support.paths import ROOT

ROUTES = {route.key: route for route in load_config(ROOT / "config.yaml").routes}
START, END = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)


def with_attempts(*attempts: dict[str, Any]) -> JobRecord:
    record = job_record(status=JobStatus.SUCCEEDED)
    defaults = {"status": AttemptStatus.SUCCEEDED, "provider_job_id": "task"}
    built = [
        Attempt(id=f"att_{i}", job_id=record.id, started_at=record.job.created_at, **{**defaults, **fields})
        for i, fields in enumerate(attempts)
    ]
    return record.evolve(attempts=built)


def test_sums_per_provider_and_day_and_lists_only_what_the_provider_did_not_say() -> None:
    records = [
        with_attempts(
            {
                "provider": "runway",
                "model": "gen4_turbo",
                "cost_usd": "0.250000",
                "reported_cost": "25 credits",
            },
            # Booked 0.25 but Runway said 20 credits: a booking that is not the provider's word.
            {
                "provider": "runway",
                "model": "gen4_turbo",
                "cost_usd": "0.250000",
                "reported_cost": "20 credits",
            },
        ),
        with_attempts(
            {
                "provider": "muvi",
                "model": "runway/gen-4-turbo/image-to-video",
                "status": AttemptStatus.FAILED,
                "cost_usd": "0.250000",
                "unconfirmed_usd": "0.250000",
            },
            {
                "provider": "local",
                "model": "camera-motion",
                "cost_usd": "0.000583",
                "reported_cost": "3.1 compute_seconds",
            },
            {"provider": "runway", "model": "gen4_turbo", "cost_usd": None, "provider_job_id": None},
        ),
    ]
    report = build_reconciliation(records, ROUTES, START, END).to_json()

    groups = {g["provider"]: g for g in report["groups"]}
    assert set(groups) == {"runway", "muvi", "local"} and groups["runway"]["day"] == "2026-11-21"
    assert groups["runway"]["attempts"] == 2  # the one that never reached Runway is not counted
    assert (
        groups["runway"]["reported"] == {"credits": "45"} and groups["runway"]["reported_usd"] == "0.450000"
    )
    assert groups["runway"]["booked_usd"] == groups["runway"]["confirmed_usd"] == "0.500000"
    assert groups["muvi"]["unconfirmed_usd"] == "0.250000" and groups["muvi"]["reported"] == {}
    assert groups["local"]["reported"] == {"compute_seconds": "3.1"}
    assert report["totals"]["booked_usd"] == "0.750583" and report["totals"]["attempts"] == 4
    found = {(d["provider"], d["reason"].split(":")[0]) for d in report["discrepancies"]}
    assert found == {("runway", "differs"), ("muvi", "unconfirmed")}  # local's tariff is its charge


def test_reported_figures_parse_back_or_not_at_all() -> None:
    parsed = parse_reported("500000 micro_cents")
    assert parsed is not None and parsed.unit is CostUnit.MICRO_CENTS and parsed.amount == 500000
    assert parse_reported(None) is None and parse_reported("lots of credits") is None
    assert parse_reported("3 furlongs") is None
