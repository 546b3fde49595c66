"""Structured logs: one event per job transition and per provider call, rendered as JSON by the
configured pipeline, with no secret and no image data in any line."""

from __future__ import annotations

import base64
import io
import json
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from adapters.errors import ContentRejected
from broker.cli.serve import secret_values
from broker.observability.joblog import TransitionLogger
from broker.observability.logging import configure_logging
from broker.schema import JobStatus, RouteRef
from tests.support.deployment import ADMIN_KEY, GROWTH_KEY, STUDIO_KEY, TEST_ENV
from tests.support.factories import job_record
from tests.support.fakes import Script
from tests.support.workload import IMAGE, PNG, RUNWAY_KEY, MakeWorkload, serve_workload, workload_config

workload_client = pytest.fixture(serve_workload)
SECRETS = (GROWTH_KEY, STUDIO_KEY, ADMIN_KEY, RUNWAY_KEY)


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The broker's own logging setup (as `broker serve` does it), writing into a buffer."""
    saved = structlog.get_config()
    env = {**TEST_ENV, "RUNWAYML_API_SECRET": RUNWAY_KEY}
    configure_logging("info", secret_values(workload_config("http://127.0.0.1:1"), env))
    buffer = io.StringIO()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(buffer))
    try:
        yield buffer
    finally:
        structlog.configure(**saved)


def events(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


async def test_workload_logs_transitions_and_provider_calls_without_secrets_or_images(
    workload_client: MakeWorkload, json_logs: io.StringIO
) -> None:
    work = await workload_client()
    await work.run()
    # A provider whose error message echoes a key and the image: the redactor must catch both.
    leaky = ContentRejected(f"refused {IMAGE} sent with {RUNWAY_KEY}", provider="cheap")
    await work.run_one(GROWTH_KEY, "leaky", Script(fail_with=leaky), "failed")
    text = json_logs.getvalue()
    logged = events(json_logs)

    for secret in SECRETS:
        assert secret not in text
    assert "base64," not in text and base64.b64encode(PNG).decode()[:24] not in text
    failed = [e for e in logged if e["event"] == "attempt_failed" and e.get("code") == "content_rejected"]
    assert "[redacted]" in failed[-1]["error"] and "[image data omitted]" in failed[-1]["error"]

    statuses: dict[str, list[str]] = defaultdict(list)
    for event in logged:
        if event["event"] == "job_transition":
            assert {"job_id", "team", "provider", "model", "status", "cost_usd", "timestamp"} <= set(event)
            statuses[event["job_id"]].append(event["status"])
    ids = work.job_ids
    assert statuses[ids["plain"]] == ["queued", "running", "succeeded"]
    assert statuses[ids["three"]] == ["queued", "running", "succeeded"]  # fallbacks are attempt transitions
    assert statuses[ids["cancelled"]] == ["queued", "running", "cancelled"]
    final = next(
        e
        for e in logged
        if e["event"] == "job_transition" and e["job_id"] == ids["three"] and e["status"] == "succeeded"
    )
    assert (final["provider"], final["model"], final["cost_usd"], final["team"]) == (
        "dear",
        "d1",
        "0.530000",
        "growth",
    )
    tried = [
        e["provider"]
        for e in logged
        if e["event"] == "attempt_transition" and e["job_id"] == ids["three"] and e["status"] == "failed"
    ]
    assert tried == ["cheap", "runway"]

    calls = [e for e in logged if e["event"] == "provider_call"]
    assert {(c["provider"], c["method"]) for c in calls} >= {("runway", "POST"), ("runway", "GET")}
    assert all(
        isinstance(c["status"], int) and c["duration_s"] >= 0 and c["path"].startswith("/") for c in calls
    )


def test_transition_logger_writes_one_event_per_change_without_the_request() -> None:
    queued = job_record(team="studio", prompt="a secret product launch", metadata={"campaign": "x-17"})
    queued = queued.evolve(route=RouteRef(provider="cheap", model="c1", estimated_cost_usd="0.100000"))
    running = queued.evolve(status=JobStatus.RUNNING)
    logger = TransitionLogger()
    with capture_logs() as logs:
        logger.job_changed(None, queued)
        logger.job_changed(queued, running)
        logger.job_changed(running, running)  # a save that changed no status
    assert [(e["event"], e["status"], e["previous"]) for e in logs] == [
        ("job_transition", "queued", None),
        ("job_transition", "running", "queued"),
    ]
    assert (
        logs[0]["team"] == "studio" and logs[0]["provider"] == "cheap" and logs[0]["cost_usd"] == "0.000000"
    )
    assert "secret product" not in repr(logs) and "x-17" not in repr(logs)


def test_configured_pipeline_redacts_secret_fields_values_and_data_uris(json_logs: io.StringIO) -> None:
    log = structlog.get_logger("test")
    log.info(
        "probe", api_key="anything", note=f"key={GROWTH_KEY}", nested={"authorization": "Bearer x"}, img=IMAGE
    )
    (event,) = events(json_logs)
    assert event["api_key"] == "[redacted]" and event["nested"]["authorization"] == "[redacted]"
    assert event["note"] == "key=[redacted]" and event["img"] == "data:[image data omitted]"
