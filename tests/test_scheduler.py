"""The scheduler: jobs in flight are bounded by the providers, not by the worker count; a webhook makes
a job due now; a record the store cannot read stops nothing; stopping lets steps finish; the API
process imports no torch."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from broker.appkeys import RUNNER, STORE
from broker.store.redis import RedisStore
from broker.store.sqlite import SQLiteStore
from tests.support.api import wait_for_status
from tests.support.deployment import REDIS_URL, auth
from tests.support.fakes import FakeProvider


async def submit(client: Any, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/jobs", json={"prompt": "a pan", **body}, headers=auth())
    assert response.status == 202, await response.text()
    job: dict[str, Any] = await response.json()
    return job


async def test_one_worker_keeps_many_jobs_at_the_provider(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    cheap = providers["cheap"]
    cheap.script.polls_to_finish = 10**6  # the renders never end while we look
    client = await make_client(workers=1)
    jobs = [await submit(client) for _ in range(20)]
    for _ in range(500):
        if len(cheap.submits) == 20:
            break
        await asyncio.sleep(0.01)
    # One worker, twenty tasks at the provider at once: a waiting job holds no worker.
    assert len(cheap.submits) == 20
    for job in jobs:
        body = await wait_for_status(client, job["id"], "running")
        assert body["attempts"][0]["provider"] == "cheap"
    # Waiting jobs are records with a due time: at most one (the one worker's step) is held.
    records = [await client.app[STORE].get_job(job["id"]) for job in jobs]
    assert sum(1 for r in records if r is not None and r.lease_owner is not None) <= 1
    for job in jobs:
        assert (await client.delete(f"/v1/jobs/{job['id']}", headers=auth())).status == 202
    for job in jobs:
        await wait_for_status(client, job["id"], "cancelled")


async def test_a_provider_webhook_makes_its_job_due_now(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    providers["cheap"].script.polls_to_finish = 10**6
    client = await make_client(workers=1)
    runner, store = client.app[RUNNER], client.app[STORE]
    job = await submit(client)
    await wait_for_status(client, job["id"], "running")
    # Park it far ahead, as a slow provider's schedule would (retrying until no step holds it).
    for _ in range(1000):
        record = await store.get_job(job["id"])
        assert record is not None
        if record.lease_owner is None and record.job.attempts[0].provider_job_id:
            far = record.model_copy(update={"due_at": runner.now() + 10**7})
            if await store.replace_job(far) is not None:
                break
        await asyncio.sleep(0.001)
    task_id = record.job.attempts[0].provider_job_id
    assert task_id is not None
    assert await store.find_task("cheap", task_id) == job["id"]
    providers["cheap"].script.polls_to_finish = 1
    await runner.notify("cheap", task_id)
    assert (await store.get_job(job["id"])).due_at is None  # type: ignore[union-attr]
    assert (await wait_for_status(client, job["id"], "succeeded"))["status"] == "succeeded"


async def _poison(store: Any, record_id: str) -> None:
    """Overwrite a stored job's record with JSON no reader can decode (nested past pydantic's limit)."""
    deep = "[" * 300 + "]" * 300
    bad = '{"job": {"id": "' + record_id + '", "metadata": ' + deep + "}}"
    if isinstance(store, SQLiteStore):
        sql = "UPDATE jobs SET record = ?, version = version + 1 WHERE id = ?"
        await store._run(lambda db: db.execute(sql, (bad, record_id)))
    else:
        assert isinstance(store, RedisStore)
        client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
        try:
            # A new version too, so a step's compare-and-set write cannot put the old record back.
            async with client.pipeline(transaction=True) as pipe:
                pipe.hset(store.keys.job(record_id), "r", bad)
                pipe.hincrby(store.keys.job(record_id), "v", 1)
                await pipe.execute()
        finally:
            await client.aclose()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_a_record_no_one_can_read_stops_nothing(
    make_client: Any, providers: dict[str, FakeProvider], kind: str, tmp_path: Path
) -> None:
    overrides: dict[str, Any] = {"workers": 2}
    if kind == "redis":
        overrides |= {"store_url": REDIS_URL, "redis_prefix": f"test-{tmp_path.name[-12:]}"}
    providers["cheap"].script.polls_to_finish = 10**6
    client = await make_client(**overrides)
    store = client.app[STORE]
    try:
        poisoned = await submit(client)
        await wait_for_status(client, poisoned["id"], "running")
        await _poison(store, poisoned["id"])
        client.app[RUNNER].wake()
        providers["cheap"].script.polls_to_finish = 1
        later = [await submit(client) for _ in range(20)]
        for job in later:
            assert (await wait_for_status(client, job["id"], "succeeded", "failed"))["status"] == "succeeded"
        assert client.app[RUNNER].running
        assert (await client.get("/readyz")).status == 200
        answer = await client.get(f"/v1/jobs/{poisoned['id']}", headers=auth())
        assert answer.status == 410
        error = (await answer.json())["error"]
        assert error["code"] == "internal" and "cannot be read" in error["message"]
        listing = await client.get("/v1/jobs?limit=200", headers=auth())
        assert listing.status == 200
        assert poisoned["id"] not in {j["id"] for j in (await listing.json())["jobs"]}
        assert (await client.get("/v1/reports/costs", headers=auth())).status == 200
    finally:
        drop = getattr(store, "drop_all_keys", None)
        if drop is not None:
            await drop()


async def test_stopping_lets_running_steps_finish_and_leaves_no_lease(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    providers["cheap"].script.polls_to_finish = 10**6
    client = await make_client(workers=4)
    jobs = [await submit(client) for _ in range(6)]
    for job in jobs:
        await wait_for_status(client, job["id"], "running")
    runner = client.app[RUNNER]
    await runner.stop()
    assert not runner.running
    records = [await client.app[STORE].get_job(job["id"]) for job in jobs]
    # Every job is a record another runner can take at its due time: none is left leased.
    assert all(r is not None and r.lease_owner is None for r in records)


def test_the_api_process_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from broker.api.app import create_app\n"
        "from broker.config import load_config\n"
        "from broker.settings import Settings\n"
        "from adapters.registry import FACTORIES\n"
        "create_app(Settings(), load_config(Settings().config), env={})\n"
        "print('torch' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False", result.stderr


async def test_a_dead_scheduler_loop_is_restarted_and_readiness_says_so(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    client = await make_client(workers=2)
    store = client.app[STORE]
    broken = {"left": 1}
    real = store.claim_due

    async def claim_once_broken(*args: Any, **kwargs: Any) -> Any:
        if broken["left"]:
            broken["left"] -= 1
            raise RuntimeError("a bug in the loop")
        return await real(*args, **kwargs)

    store.claim_due = claim_once_broken  # type: ignore[method-assign]
    client.app[RUNNER].wake()
    job = await submit(client)
    assert (await wait_for_status(client, job["id"], "succeeded"))["status"] == "succeeded"
    ready = await client.get("/readyz")
    assert ready.status == 200 and (await ready.json())["runner_restarts"] == 1
