"""Batch retention on both stores: the sweep deletes a batch once it is older than its team's retention
and none of its jobs is left, with its Idempotency-Key; `GET /v1/batches/{id}` then says it expired."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from broker.api.app import create_app
from broker.appkeys import EXPIRY, STORE
from broker.jobs.acceptance import new_id
from broker.jobs.retention import DAY_S, Expiry
from broker.schema import AttemptStatus, JobStatus
from broker.settings import Settings
from broker.store import JobRecord, Store
from broker.store.artifacts import FileArtifacts
from broker.store.batches import BatchRecord
from broker.store.sqlite import SQLiteStore
from tests.support.deployment import TEST_ENV, auth, fake_config
from tests.support.factories import job_record
from tests.support.fakes import FakeProvider
from tests.support.reports import DAY1, attempt, finished
from tests.test_retention import (
    LATER,
    config,
    sweeper,
)  # growth keeps 30 days, studio 90; LATER is 41 days on


def ended(team: str = "growth", created_at: datetime = DAY1) -> JobRecord:
    """A job that succeeded a day after it was made."""
    ok = attempt("cheap", "c1", AttemptStatus.SUCCEEDED, "0.100000")
    record = finished(team, JobStatus.SUCCEEDED, [ok], estimate="0.100000", created_at=created_at)
    return record.evolve(completed_at=created_at + timedelta(days=1))


def batch_of(
    job_ids: list[str], *, team: str = "growth", key: str | None = None, created_at: datetime = DAY1
) -> BatchRecord:
    return BatchRecord(
        id=new_id("bat", created_at),
        team=team,
        created_at=created_at,
        job_ids=job_ids,
        estimated_cost_usd="0.100000",
        request_hash=f"body of {key}",
        idempotency_key=key,
    )


async def test_a_batch_whose_jobs_all_expired_goes_and_its_key_makes_a_new_batch(
    store: Store, tmp_path: Path
) -> None:
    jobs = [ended(), ended()]
    batch = batch_of([job.id for job in jobs], key="b-1")
    await store.create_batch(batch, jobs)
    # Two replicas sweeping at once: the jobs go, then the batch, deleted once.
    sweeps = [sweeper(store, tmp_path) for _ in range(2)]
    assert sum(await asyncio.gather(*(s.run_once() for s in sweeps))) == 2
    assert sum(s.expired_batches for s in sweeps) == 1
    assert await store.get_batch(batch.id) is None
    assert await store.find_idempotent_batch("growth", "b-1") is None
    assert await store.old_batches("growth", datetime.fromtimestamp(LATER, UTC), limit=10) == []
    # The key is free again: the same key makes a new batch.
    fresh = batch_of([], key="b-1", created_at=datetime.fromtimestamp(LATER, UTC))
    stored, created = await store.create_batch(fresh, [])
    assert created and stored.id == fresh.id != batch.id


async def test_a_batch_with_a_job_left_is_kept_until_that_job_expires(store: Store, tmp_path: Path) -> None:
    done = ended()
    running, _ = await store.create_job(job_record(team="growth", created_at=DAY1, status=JobStatus.RUNNING))
    batch = batch_of([done.id, running.id])
    await store.create_batch(batch, [done])
    sweep = sweeper(store, tmp_path)
    assert await sweep.run_once() == 1  # the ended job; the running one is never expired
    assert sweep.expired_batches == 0
    assert await store.get_batch(batch.id) == batch
    # It ends, long enough ago: both it and then its batch go in one round.
    finished_at = DAY1 + timedelta(days=2)
    assert await store.replace_job(running.evolve(status=JobStatus.SUCCEEDED, completed_at=finished_at))
    assert await sweep.run_once() == 1
    assert sweep.expired_batches == 1
    assert await store.get_batch(batch.id) is None


async def test_a_batch_younger_than_its_teams_retention_is_kept(store: Store, tmp_path: Path) -> None:
    # Batches none of whose jobs is stored (as a crash between a Redis batch's record and its jobs
    # leaves one): only their age keeps them. Growth keeps 30 days, studio its own 90.
    recent = datetime.fromtimestamp(LATER, UTC) - timedelta(days=10)
    growth = batch_of([job_record().id], created_at=recent)
    studio = batch_of([job_record(team="studio").id], team="studio")
    for batch in (growth, studio):
        await store.create_batch(batch, [])
    assert await sweeper(store, tmp_path).run_once() == 0
    assert await store.get_batch(growth.id) == growth and await store.get_batch(studio.id) == studio
    # 25 days on, growth's is 35 days old: gone; studio's (65 days) stays until it is 90 days old.
    await sweeper(store, tmp_path, now=LATER + 25 * DAY_S).run_once()
    assert await store.get_batch(growth.id) is None and await store.get_batch(studio.id) == studio
    later = sweeper(store, tmp_path, now=LATER + 60 * DAY_S)
    await later.run_once()
    assert later.expired_batches == 1 and await store.get_batch(studio.id) is None


async def test_a_round_looks_at_a_bounded_number_of_batches_oldest_first(
    store: Store, tmp_path: Path
) -> None:
    batches = [batch_of([job_record().id], created_at=DAY1 + timedelta(minutes=i)) for i in range(5)]
    for batch in batches:
        await store.create_batch(batch, [])
    artifacts = FileArtifacts(tmp_path / "artifacts")
    sweep = Expiry(store, artifacts, config, clock=lambda: LATER, batch=3)
    await sweep.run_once()
    assert sweep.expired_batches == 3 and sweep.backlog  # the oldest three, and more to do at once
    assert [await store.get_batch(b.id) is None for b in batches] == [True] * 3 + [False] * 2
    await sweep.run_once()
    assert sweep.expired_batches == 2 and not sweep.backlog


async def test_a_database_from_before_the_index_keeps_its_old_batches(tmp_path: Path) -> None:
    old = batch_of([job_record().id], key="old")
    with sqlite3.connect(tmp_path / "broker.db") as db:  # the batches table as it was
        db.execute(
            "CREATE TABLE batches (id TEXT PRIMARY KEY, team TEXT NOT NULL, idempotency_key TEXT,"
            " record TEXT NOT NULL)"
        )
        db.execute(
            "INSERT INTO batches VALUES (?, ?, ?, ?)", (old.id, old.team, "old", old.model_dump_json())
        )
    db.close()
    store = SQLiteStore(tmp_path / "broker.db")
    await store.open()
    try:
        new = batch_of([job_record().id], key="new")
        await store.create_batch(new, [])
        sweep = sweeper(store, tmp_path)
        await sweep.run_once()
        assert sweep.expired_batches == 1 and await store.get_batch(new.id) is None
        assert await store.get_batch(old.id) == old  # not in the index: kept for good
    finally:
        await store.close()


async def test_the_api_answers_an_expired_batch_with_a_404_that_says_so(
    aiohttp_client: Any, settings: Settings, providers: dict[str, FakeProvider]
) -> None:
    factories = {name: fake.build for name, fake in providers.items()}
    app = create_app(settings, fake_config(), env=TEST_ENV, factories=factories, clock=lambda: LATER)
    client = await aiohttp_client(app)
    jobs = [ended(), ended()]
    batch = batch_of([job.id for job in jobs], key="b-1")
    await client.app[STORE].create_batch(batch, jobs)
    shown = await client.get(f"/v1/batches/{batch.id}", headers=auth())
    assert shown.status == 200 and (await shown.json())["counts"]["succeeded"] == 2
    assert await client.app[EXPIRY].run_once() == 2
    for path in (f"/v1/batches/{batch.id}", f"/v1/batches/{batch.id}/manifest"):
        gone = await client.get(path, headers=auth())
        assert gone.status == 404
        message = (await gone.json())["error"]["message"]
        assert message.startswith(f"no batch {batch.id}: it was created on 2026-11-20")
        assert "30 days after they end" in message
    # An id made within the retention that names no batch is only that.
    unknown = new_id("bat", datetime.fromtimestamp(LATER, UTC))
    missing = await client.get(f"/v1/batches/{unknown}", headers=auth())
    assert (await missing.json())["error"]["message"] == "no such batch"
