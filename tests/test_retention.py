"""Retention on both stores: ended jobs expire into the daily ledger with their artifacts, and the cost
report and reconciliation read the same totals before and after."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from broker.api.app import create_app
from broker.appkeys import EXPIRY, STORE
from broker.config import BrokerConfig
from broker.jobs.retention import DAY_S, Expiry, expired_message
from broker.observability.ledger_figures import ledger_rows, ledger_span
from broker.observability.reconciliation import build_reconciliation
from broker.observability.reports import Dimension, build_report
from broker.schema import AttemptStatus, JobRequest, JobStatus
from broker.settings import Settings
from broker.store import JobRecord, Store
from broker.store.artifacts import FileArtifacts, output_key, poster_key, upload_key
from broker.store.retention import Expiry as Outcome
from tests.support.deployment import ADMIN_KEY, TEST_ENV, auth, fake_config
from tests.support.factories import job_record
from tests.support.fakes import FakeProvider
from tests.support.reports import DAY1, DAY2, attempt, finished, workload

START, END = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
LATER = (DAY2 + timedelta(days=40)).timestamp()  # growth's jobs (30 days) are due, studio's (90) not
GROUPINGS = [(), (Dimension.PROVIDER,), (Dimension.TEAM, Dimension.MODEL), tuple(Dimension)]


def config(**overrides: Any) -> BrokerConfig:
    base = fake_config()
    teams = [t.model_copy(update={"retention_days": 90}) if t.name == "studio" else t for t in base.teams]
    return base.model_copy(update={"teams": teams, **overrides})


ROUTES = {route.key: route for route in config().routes}


def books() -> list[JobRecord]:
    """The report workload, one attempt with the provider's own figure, each job ended a day after."""
    records = workload()
    reported = records[0].job.attempts[0].model_copy(update={"reported_cost": "25 credits"})
    records[0] = records[0].evolve(attempts=[reported])
    return [r.evolve(completed_at=r.job.created_at + timedelta(days=1)) for r in records]


def with_upload(record: JobRecord, digest: str) -> JobRecord:
    asked = record.job.request.model_dump(mode="json")
    request = JobRequest.model_validate({**asked, "image_upload": digest, "mode": "image_to_video"})
    return record.evolve(request=request)


async def reports(store: Store, team: str | None = None) -> list[dict[str, Any]]:
    ledger = await store.ledger_rows(*ledger_span(START, END), team=team)
    records = await store.jobs_created_between(START, END, team=team)
    found = [build_report(records, dims, START, END, ledger).to_json() for dims in GROUPINGS]
    reconciliation = build_reconciliation(records, ROUTES, START, END, ledger).to_json()
    del reconciliation["discrepancies"], reconciliation["expired_discrepancies"]
    return [*found, reconciliation]


def sweeper(store: Store, tmp_path: Path, cfg: BrokerConfig | None = None, now: float = LATER) -> Expiry:
    return Expiry(store, FileArtifacts(tmp_path / "artifacts"), lambda: cfg or config(), clock=lambda: now)


async def test_totals_are_the_same_before_and_after_expiry(store: Store, tmp_path: Path) -> None:
    for record in books():
        await store.create_job(record)
    before = await reports(store)
    before_growth = await reports(store, "growth")
    assert await sweeper(store, tmp_path).run_once() == 3  # growth's three; studio keeps 90 days
    assert len(await store.jobs_created_between(START, END)) == 2
    assert await reports(store) == before
    assert await reports(store, "growth") == before_growth
    # Every job expired (studio's after 90 days): still the same figures, now all from the ledger.
    assert await sweeper(store, tmp_path, now=LATER + 60 * DAY_S).run_once() == 2
    assert await store.jobs_created_between(START, END) == []
    assert await reports(store) == before
    # The expired jobs' discrepancies are counted; the listing only holds jobs still kept.
    ledger = await store.ledger_rows(*ledger_span(START, END))
    assert build_reconciliation([], ROUTES, START, END, ledger).expired_discrepancies > 0


async def test_a_job_is_folded_in_once_however_often_it_is_expired(store: Store, tmp_path: Path) -> None:
    record, _ = await store.create_job(books()[0])
    rows = ledger_rows(record, ROUTES)
    # Its end written again (a later write of the ended job): one record, one version to fold.
    again = await store.replace_job(record.evolve(updated_at=record.job.updated_at))
    assert again is not None
    assert await store.expire_job(record, rows) is Outcome.CHANGED  # the figures of an old version
    sweeps = [sweeper(store, tmp_path) for _ in range(3)]
    assert sum(await asyncio.gather(*(s.run_once() for s in sweeps))) == 1
    assert await store.expire_job(again, rows) is Outcome.GONE  # a replayed expiry adds nothing
    ledger = await store.ledger_rows(*ledger_span(START, END))
    assert build_report([], (), START, END, ledger).totals.to_json() == build_report(
        [record], (), START, END
    ).totals.to_json()


async def test_an_expired_job_is_gone_with_its_indexes_and_artifacts(store: Store, tmp_path: Path) -> None:
    shared, old_only = "ab" * 32, "cd" * 32
    ended = books()
    expiring = with_upload(ended[0], shared).model_copy(update={"idempotency_key": "k-1"})
    lone = with_upload(ended[2], old_only)
    kept = job_record(team="growth", image_upload=shared)  # in flight, naming the same image
    for record in (expiring, lone, kept):
        await store.create_job(record)
    artifacts = FileArtifacts(tmp_path / "artifacts")
    await artifacts.open()
    for key in (output_key(expiring.id), poster_key(expiring.id), upload_key(shared), upload_key(old_only)):
        await artifacts.put_bytes(key, b"x", "application/octet-stream")
    handle = expiring.job.attempts[0].provider_job_id
    assert handle is not None
    await store.index_task("cheap", handle, expiring.id)
    assert await sweeper(store, tmp_path).run_once() == 2
    assert await store.get_job(expiring.id) is None
    assert await store.find_idempotent_job("growth", "k-1") is None
    assert await store.find_task("cheap", handle) is None
    assert await store.count_jobs(JobStatus.SUCCEEDED) == 0
    assert [r.id for r in (await store.list_jobs(team="growth"))[0]] == [kept.id]
    assert not await artifacts.exists(output_key(expiring.id))
    assert not await artifacts.exists(poster_key(expiring.id))
    assert not await artifacts.exists(upload_key(old_only))
    assert await artifacts.exists(upload_key(shared))  # the job in flight still needs it
    # The key is free again: a new job may use it.
    _, created = await store.create_job(job_record(team="growth", idempotency_key="k-1"))
    assert created


async def test_jobs_not_ended_or_ended_lately_are_kept(store: Store, tmp_path: Path) -> None:
    old = DAY1 - timedelta(days=100)
    running = job_record(team="growth", created_at=old, status=JobStatus.RUNNING)
    late = finished("growth", JobStatus.FAILED, [attempt("cheap", "c1", AttemptStatus.FAILED, "0.01")],
                    estimate="0.1", created_at=old)
    late = late.evolve(completed_at=datetime.fromtimestamp(LATER, UTC) - timedelta(days=2))
    for record in (running, late):
        await store.create_job(record)
    assert await sweeper(store, tmp_path).run_once() == 0
    assert await store.get_job(running.id) is not None and await store.get_job(late.id) is not None
    assert await store.expire_job(running, []) is Outcome.NOT_ENDED


async def test_the_team_override_and_the_global_retention(store: Store, tmp_path: Path) -> None:
    for record in books():
        await store.create_job(record)
    # 40 days on: growth (global 30) expired, studio (its own 90) kept; a global 50 keeps growth too.
    assert await sweeper(store, tmp_path, config(retention_days=50)).run_once() == 0
    assert await sweeper(store, tmp_path).run_once() == 3
    teams = {r.job.team for r in await store.jobs_created_between(START, END)}
    assert teams == {"studio"}


async def test_the_ledger_is_kept_as_long_as_the_operator_says(store: Store, tmp_path: Path) -> None:
    for record in books():
        await store.create_job(record)
    await sweeper(store, tmp_path).run_once()
    assert await store.ledger_rows(*ledger_span(START, END))
    late = DAY2.timestamp() + 402 * DAY_S
    await sweeper(store, tmp_path, config(ledger_retention_days=400), now=late).run_once()
    assert await store.ledger_rows(*ledger_span(START, END)) == []


def test_an_expired_id_says_so_and_a_recent_one_does_not() -> None:
    old = books()[0].id
    message = expired_message(old, 30, LATER)
    assert message is not None and "2026-11-20" in message and "30 days" in message
    assert expired_message(old, 90, LATER) is None
    assert expired_message("not-an-id", 30, LATER) is None


def test_the_ledger_must_outlive_the_jobs() -> None:
    with pytest.raises(ValueError, match="ledger_retention_days"):
        config().model_validate({**config().model_dump(), "ledger_retention_days": 60})


async def test_the_api_answers_an_expired_job_with_a_404_that_says_so(
    aiohttp_client: Any, settings: Settings, providers: dict[str, FakeProvider]
) -> None:
    factories = {name: fake.build for name, fake in providers.items()}
    app = create_app(settings, fake_config(), env=TEST_ENV, factories=factories, clock=lambda: LATER)
    client = await aiohttp_client(app)
    store = client.app[STORE]
    for record in books():
        await store.create_job(record)
    growth_job = books()[0]
    await store.create_job(growth_job)
    costs = "/v1/reports/costs?from=2026-11-01&to=2026-11-30&group_by=team,provider,day"
    before = await (await client.get(costs, headers=auth(ADMIN_KEY))).json()
    assert (await client.get(f"/v1/jobs/{growth_job.id}", headers=auth())).status == 200
    assert await client.app[EXPIRY].run_once() == 6  # all (the fake config keeps 30 days for all)
    gone = await client.get(f"/v1/jobs/{growth_job.id}", headers=auth())
    assert gone.status == 404
    assert "30 days after they end" in (await gone.json())["error"]["message"]
    output = await client.get(f"/v1/jobs/{growth_job.id}/output", headers=auth())
    assert output.status == 404
    assert await (await client.get(costs, headers=auth(ADMIN_KEY))).json() == before
