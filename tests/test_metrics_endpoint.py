"""`GET /metrics` after the mixed workload: it parses as Prometheus text and carries every series."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from pricing.money import Money
from tests.support.sandbox_rig import Rig, run_mixed, sandbox_rig
from tests.support.workload import MakeWorkload, money_by, serve_workload

workload_client = pytest.fixture(serve_workload)
FAMILIES = {
    "broker_job_transitions": "counter",
    "broker_spend_usd": "counter",
    "broker_provider_errors": "counter",
    "broker_provider_requests": "counter",
    "broker_provider_request_duration_seconds": "histogram",
    "broker_jobs": "gauge",
    "broker_jobs_in_flight": "gauge",
    "broker_queue_depth": "gauge",
    "broker_budget_remaining_usd": "gauge",
}


async def scrape(client: Any) -> dict[str, list[Sample]]:
    response = await client.get("/metrics")  # no key: scrapers don't carry one
    assert response.status == 200 and response.content_type == "text/plain"
    families = text_string_to_metric_families(await response.text())
    found: dict[str, list[Sample]] = {}
    for family in families:
        if family.name in FAMILIES:
            assert family.type == FAMILIES[family.name], family.name
            found[family.name] = list(family.samples)
    return found


def value(samples: list[Sample], name: str, **labels: str) -> float:
    matching = [
        s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(matching) == 1, (name, labels, samples)
    return matching[0]


async def test_metrics_carry_every_series_after_the_workload(workload_client: MakeWorkload) -> None:
    work = await workload_client()
    await work.run()
    metrics = await scrape(work.client)
    assert set(metrics) == set(FAMILIES)

    transitions = metrics["broker_job_transitions"]
    assert value(transitions, "broker_job_transitions_total", status="succeeded", provider="cheap") == 1
    assert value(transitions, "broker_job_transitions_total", status="succeeded", provider="dear") == 1
    assert value(transitions, "broker_job_transitions_total", status="cancelled", provider="cheap") == 1
    queued = [s.value for s in transitions if s.name.endswith("_total") and s.labels["status"] == "queued"]
    assert sum(queued) == 5

    errors = metrics["broker_provider_errors"]
    assert value(errors, "broker_provider_errors_total", provider="cheap", error="content_rejected") == 1
    assert value(errors, "broker_provider_errors_total", provider="cheap", error="rate_limited") == 1
    assert value(errors, "broker_provider_errors_total", provider="runway", error="provider_unavailable") == 1

    jobs = metrics["broker_jobs"]
    assert (
        value(jobs, "broker_jobs", status="succeeded") == 3
        and value(jobs, "broker_jobs", status="failed") == 1
    )
    assert value(metrics["broker_queue_depth"], "broker_queue_depth") == 0
    assert value(metrics["broker_jobs_in_flight"], "broker_jobs_in_flight") == 0
    # growth's monthly 500.00 less what its jobs settled at: 0.10 + 0.04 + 0.53.
    budget = metrics["broker_budget_remaining_usd"]
    assert value(budget, "broker_budget_remaining_usd", team="growth", window="month") == 499.33
    assert all(s.labels["team"] != "studio" for s in budget)  # studio has no budget


async def test_spend_counter_equals_booked_costs_once_each(workload_client: MakeWorkload) -> None:
    work = await workload_client()
    await work.run()
    spend = (await scrape(work.client))["broker_spend_usd"]
    per_provider: dict[str, float] = defaultdict(float)
    per_team: dict[str, float] = defaultdict(float)
    for sample in spend:
        if sample.name == "broker_spend_usd_total":
            per_provider[sample.labels["provider"]] += sample.value
            per_team[sample.labels["team"]] += sample.value
    expected = money_by(await work.jobs(), "provider")
    assert {p: round(v * 1e6) for p, v in per_provider.items() if v} == {
        p: m.micros for p, m in expected.items() if m.micros
    }
    assert round(per_team["growth"] * 1e6) == Money.parse("0.670000").micros
    # A second scrape changes no counter: nothing is counted at scrape time.
    again = (await scrape(work.client))["broker_spend_usd"]
    assert again == spend


async def test_provider_latency_is_by_provider_and_templated_endpoint(workload_client: MakeWorkload) -> None:
    work = await workload_client()
    await work.run()
    metrics = await scrape(work.client)
    latency = metrics["broker_provider_request_duration_seconds"]
    counts = {
        s.labels["endpoint"]: s.value
        for s in latency
        if s.name == "broker_provider_request_duration_seconds_count" and s.labels["provider"] == "runway"
    }
    submits = work.emulator.submit_count()
    assert counts["POST /v1/image_to_video"] == submits == 2
    polls = [r for r in work.emulator.requests if r.method == "GET" and r.path.startswith("/v1/tasks/")]
    assert counts["GET /v1/tasks/{id}"] == len(polls) > 0
    assert "GET /_emulator/media/{id}" in counts  # the output download, from the provider's host
    requests = metrics["broker_provider_requests"]
    assert value(requests, "broker_provider_requests_total", endpoint="POST /v1/image_to_video") == 2


async def test_label_values_stay_bounded(workload_client: MakeWorkload) -> None:
    work = await workload_client()
    await work.run()
    metrics = await scrape(work.client)
    values = {v for samples in metrics.values() for s in samples for v in s.labels.values()}
    job_ids = set(work.job_ids.values())
    tasks = {t for t in work.emulator.tasks}
    assert not any(any(i in v for i in job_ids | tasks) for v in values)
    assert not any("job " in v for v in values)  # no prompt
    providers = {s.labels.get("provider") for samples in metrics.values() for s in samples} - {None}
    assert providers <= {"cheap", "dear", "runway"}


sandbox = pytest.fixture(sandbox_rig)


async def test_every_emulated_provider_gets_latency_and_error_series(sandbox: Rig) -> None:
    await run_mixed(sandbox)
    metrics = await scrape(sandbox.client)
    endpoints = {
        (s.labels["provider"], s.labels["endpoint"])
        for s in metrics["broker_provider_request_duration_seconds"]
        if s.name.endswith("_count")
    }
    assert {("pixelapi", "POST /v1/seedance/generate"), ("pixelapi", "GET /v1/seedance/{id}")} <= endpoints
    assert {p for p, _ in endpoints} == {"pixelapi", "fal"}
    assert all("{id}" in e or not e.startswith("GET") for _, e in endpoints if "media" not in e)
    errors = metrics["broker_provider_errors"]
    failures = {
        (s.labels["provider"], s.labels["error"]): s.value for s in errors if s.name.endswith("_total")
    }
    # The three injected PixelAPI failures: code-less, as PixelAPI documents its failed generations.
    assert failures[("pixelapi", "generation_failed")] == 3
    assert sum(v for (p, _), v in failures.items() if p == "fal") == 1
