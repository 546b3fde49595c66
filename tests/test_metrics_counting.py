"""Metrics from job changes and provider calls: counted once, labelled with bounded values."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs
from yarl import URL

from broker.api.metrics import refresh_gauges
from broker.appkeys import CLOCK, DEPLOYMENT, STORE
from broker.auth import Authenticator
from broker.config import ProviderConfig
from broker.deployment import Deployment
from broker.jobs.budgets import budget_windows
from broker.observability.metrics import METRICS, BrokerMetrics, MetricsObserver
from broker.observability.provider_calls import (
    MAX_ENDPOINTS,
    ProviderResolver,
    path_template,
    provider_trace_config,
)
from broker.schema import Attempt, AttemptStatus, ErrorCode, JobError, JobStatus, RouteRef
from broker.store import JobRecord
from broker.store.sqlite import SQLiteStore
from tests.support.adapters import serving
from tests.support.deployment import fake_config
from tests.support.factories import job_record

AT = datetime(2026, 11, 21, tzinfo=UTC)


def sample(metrics: BrokerMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def with_attempt(
    record: JobRecord, status: AttemptStatus, cost: str | None, code: ErrorCode | None = None
) -> JobRecord:
    attempt = Attempt(
        id="att_1",
        job_id=record.id,
        provider="cheap",
        model="c1",
        status=status,
        started_at=AT,
        cost_usd=cost,
        error=None if code is None else JobError(code=code, message="x"),
    )
    job_status = JobStatus.RUNNING if not status.terminal else JobStatus.FAILED
    return record.evolve(attempts=[attempt], status=job_status, route=RouteRef(provider="cheap", model="c1"))


def test_spend_and_errors_are_counted_once_however_often_a_job_is_saved() -> None:
    metrics = BrokerMetrics()
    observer = MetricsObserver(metrics)
    queued = job_record(team="growth").evolve(route=RouteRef(provider="cheap", model="c1"))
    running = with_attempt(queued, AttemptStatus.SUBMITTED, None)
    failed = with_attempt(queued, AttemptStatus.FAILED, "0.030000", ErrorCode.RATE_LIMITED)
    observer.job_changed(None, queued)
    observer.job_changed(queued, running)
    observer.job_changed(running, running)  # a lease renewal: nothing changed
    observer.job_changed(running, failed)
    observer.job_changed(failed, failed)  # saved again with the cost already booked
    labels = {"provider": "cheap", "team": "growth", "model": "c1"}
    assert sample(metrics, "broker_spend_usd_total", **labels) == pytest.approx(0.03)
    assert sample(metrics, "broker_provider_errors_total", provider="cheap", error="rate_limited") == 1
    transitions = {
        status: sample(metrics, "broker_job_transitions_total", status=status, provider="cheap", model="c1")
        for status in ("queued", "running", "failed")
    }
    assert transitions == {"queued": 1, "running": 1, "failed": 1}


def test_a_revised_cost_adds_only_the_difference() -> None:
    metrics = BrokerMetrics()
    observer = MetricsObserver(metrics)
    first = with_attempt(job_record(team="studio"), AttemptStatus.SUCCEEDED, "0.100000")
    revised = with_attempt(job_record(team="studio"), AttemptStatus.SUCCEEDED, "0.120000")
    observer.job_changed(None, first)
    observer.job_changed(first, revised)
    total = sample(metrics, "broker_spend_usd_total", provider="cheap", team="studio", model="c1")
    assert total == pytest.approx(0.12)


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/v1/tasks/17f20bd6-3a8f-4c4e-9f59-1b0c1d3e4f5a", "/v1/tasks/{id}"),
        ("/v1/image_to_video", "/v1/image_to_video"),
        (
            "/fal-ai/kling-video/v2.1/standard/image-to-video",
            "/fal-ai/kling-video/v2.1/standard/image-to-video",
        ),
        ("/fal-ai/x/requests/764cabcf-b745-4b3e-ae38-1200304cf45b/status", "/fal-ai/x/requests/{id}/status"),
        ("/api/jobs/123456", "/api/jobs/{id}"),
        ("/_emulator/media/tsk_9f8e7d6c5b4a3f2e1d0c.mp4", "/_emulator/media/{id}"),
        ("/a/b/c/d/e/f/g/h/i/j", "/a/b/c/d/e/f/g/h/..."),
        ("/", "/"),
    ],
)
def test_path_templates_hide_ids(path: str, template: str) -> None:
    assert path_template(path) == template


def test_resolver_maps_base_urls_and_caps_endpoints() -> None:
    resolver = ProviderResolver(
        {
            "fal": ProviderConfig(base_url="https://queue.fal.run"),
            "proxy_a": ProviderConfig(base_url="http://127.0.0.1:9000/a"),
            "proxy_root": ProviderConfig(base_url="http://127.0.0.1:9000"),
            "fake": ProviderConfig(),
        }
    )
    assert resolver.provider_of(URL("https://queue.fal.run/fal-ai/x")) == "fal"
    assert resolver.provider_of(URL("https://QUEUE.fal.run:443/x")) == "fal"
    assert resolver.provider_of(URL("http://queue.fal.run/x")) is None  # another scheme and port
    assert resolver.provider_of(URL("http://127.0.0.1:9000/a/tasks")) == "proxy_a"
    assert resolver.provider_of(URL("http://127.0.0.1:9000/ab")) == "proxy_root"
    assert resolver.provider_of(URL("https://images.example/cat.png")) is None
    labels = {resolver.endpoint("fal", "GET", URL(f"https://queue.fal.run/model-{i}/x")) for i in range(80)}
    assert len(labels) == MAX_ENDPOINTS + 1 and "other" in labels


async def hello(request: web.Request) -> web.Response:
    return web.json_response({"ok": True}, status=200 if request.method == "GET" else 429)


async def test_trace_times_counts_and_logs_each_provider_call() -> None:
    app = web.Application()
    app.router.add_route("*", "/v1/tasks/{id}", hello)
    metrics = BrokerMetrics()
    ticks = itertools.count(step=0.25)  # each request takes exactly one tick: 0.25 s
    async with serving(app) as server:
        base = str(server.make_url("")).rstrip("/")
        resolver = ProviderResolver({"runway": ProviderConfig(base_url=base)})
        trace = provider_trace_config(resolver, metrics, clock=lambda: next(ticks))
        async with aiohttp.ClientSession(trace_configs=[trace]) as session:
            with capture_logs() as logs:
                for method in ("GET", "GET", "POST"):
                    async with session.request(method, f"{base}/v1/tasks/1234567?key=s3cret-in-query"):
                        pass
                # Not under a provider's base URL (a caller's image, say): neither measured nor logged.
                async with session.get(f"{base.replace('127.0.0.1', 'localhost')}/v1/tasks/1"):
                    pass
    labels = {"provider": "runway", "endpoint": "GET /v1/tasks/{id}"}
    assert sample(metrics, "broker_provider_request_duration_seconds_count", **labels) == 2
    assert sample(metrics, "broker_provider_request_duration_seconds_sum", **labels) == 0.5
    assert sample(metrics, "broker_provider_requests_total", **labels, status_class="2xx") == 2
    post = {"provider": "runway", "endpoint": "POST /v1/tasks/{id}", "status_class": "4xx"}
    assert sample(metrics, "broker_provider_requests_total", **post) == 1
    calls = [e for e in logs if e["event"] == "provider_call"]
    assert [(c["method"], c["status"]) for c in calls] == [("GET", 200), ("GET", 200), ("POST", 429)]
    assert all(c["path"] == "/v1/tasks/1234567" and c["duration_s"] == 0.25 for c in calls)
    assert "s3cret" not in repr(logs)


async def test_a_failed_connection_is_counted_and_logged_as_an_error() -> None:
    app = web.Application()
    app.router.add_get("/v1/tasks/{id}", hello)
    metrics = BrokerMetrics()
    async with serving(app) as server:
        live = str(server.make_url("")).rstrip("/")
    # The server is closed now: its port refuses connections.
    resolver = ProviderResolver({"runway": ProviderConfig(base_url=live)})
    trace = provider_trace_config(resolver, metrics)
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        with capture_logs() as logs, pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"{live}/v1/tasks/1234567")
    labels = {"provider": "runway", "endpoint": "GET /v1/tasks/{id}", "status_class": "error"}
    assert sample(metrics, "broker_provider_requests_total", **labels) == 1
    assert [(e["event"], e["error"]) for e in logs] == [("provider_call", "ClientConnectorError")]


async def test_budget_gauges_follow_the_config_and_drop_stale_series(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "broker.db")
    await store.open()
    app = web.Application()
    app[METRICS], app[STORE], app[CLOCK] = BrokerMetrics(), store, AT.timestamp
    try:
        budgeted = fake_config(growth={"daily_budget_usd": "20.00", "monthly_budget_usd": "300.00"})
        app[DEPLOYMENT] = Deployment(budgeted, Authenticator(budgeted, {}))
        windows = budget_windows("growth", app[DEPLOYMENT].config.policy_for("growth"), AT)
        await store.reserve_budget("job_1", 1_500_000, windows)
        await refresh_gauges(app)
        for window, left in (("day", 18.5), ("month", 298.5)):
            assert sample(app[METRICS], "broker_budget_remaining_usd", team="growth", window=window) == left
        app[DEPLOYMENT].config = fake_config()  # a reload dropped growth's budgets
        await refresh_gauges(app)
        assert (
            app[METRICS].registry.get_sample_value(
                "broker_budget_remaining_usd", {"team": "growth", "window": "day"}
            )
            is None
        )
    finally:
        await store.close()
