"""Budgets under load and at a job's end: concurrent submits never over-reserve, and every job that
ends releases what it did not spend."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis

from broker.api.app import create_app
from broker.appkeys import STORE
from broker.settings import Settings
from broker.store.redis import RedisStore
from pricing.money import Money
from tests.support.api import wait_for_status
from tests.support.deployment import ADMIN_KEY, REDIS_URL, TEST_ENV, auth, fake_config, fast_sleep
from tests.support.fakes import FakeProvider

BUDGET = Money.parse("5.00").micros  # exactly 50 jobs on the 0.10 route


def today() -> str:
    return f"growth:day:{datetime.now(UTC):%Y-%m-%d}"


async def usage(client: Any) -> tuple[int, int]:
    found: dict[str, tuple[int, int]] = await client.app[STORE].budget_usage([today()])
    return found.get(today(), (0, 0))


async def test_200_concurrent_submits_against_a_budget_for_50_accept_exactly_50(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    client = await make_client(fake_config(growth={"daily_budget_usd": "5.00"}), workers=4)
    peak = 0
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        while not done.is_set():
            spent, reserved = await usage(client)
            peak = max(peak, spent + reserved)
            await asyncio.sleep(0)

    async def submit(i: int) -> tuple[int, dict[str, Any]]:
        response = await client.post("/v1/jobs", json={"prompt": f"job {i}"}, headers=auth())
        return response.status, await response.json()

    watcher = asyncio.create_task(watch())
    answers = await asyncio.gather(*(submit(i) for i in range(200)))
    done.set()
    await watcher

    statuses = [status for status, _ in answers]
    assert statuses.count(202) == 50 and statuses.count(402) == 150
    refused = [body["error"] for status, body in answers if status == 402]
    assert {error["code"] for error in refused} == {"budget_exceeded"}
    assert all(Money.parse(e["details"]["remaining_usd"][today()]).micros < 100_000 for e in refused)
    spent, reserved = await usage(client)
    assert spent + reserved == BUDGET
    assert peak <= BUDGET
    listing = await (await client.get("/v1/jobs?limit=200", headers=auth(ADMIN_KEY))).json()
    assert len(listing["jobs"]) == 50  # a refused job is never created


async def test_the_budget_settles_to_actual_spend_as_jobs_finish(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    client = await make_client(fake_config(growth={"daily_budget_usd": "5.00"}))
    ids = []
    for i in range(3):
        response = await client.post("/v1/jobs", json={"prompt": f"job {i}"}, headers=auth())
        ids.append((await response.json())["id"])
    for job_id in ids:
        await wait_for_status(client, job_id, "succeeded")
    assert await usage(client) == (300_000, 0)
    policy = await (await client.get("/v1/policies/growth", headers=auth())).json()
    assert policy["budgets"][0]["remaining_usd"] == "4.700000"


async def test_a_cancelled_running_job_releases_its_reservation(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    providers["cheap"].script.polls_to_finish = 10**6
    client = await make_client(fake_config(growth={"daily_budget_usd": "5.00"}))
    job = await (await client.post("/v1/jobs", json={"prompt": "x"}, headers=auth())).json()
    await wait_for_status(client, job["id"], "running")
    assert await usage(client) == (0, 100_000)
    assert (await client.delete(f"/v1/jobs/{job['id']}", headers=auth())).status == 202
    await wait_for_status(client, job["id"], "cancelled")
    assert await usage(client) == (0, 0)


async def test_a_job_over_the_budget_is_402_with_what_remains(make_client: Any) -> None:
    client = await make_client(fake_config(growth={"daily_budget_usd": "0.30", "monthly_budget_usd": "9.00"}))
    accepted = await client.post("/v1/jobs", json={"prompt": "x", "constraints": {"providers": ["cheap"]}},
                                 headers=auth())
    assert accepted.status == 202
    refused = await client.post("/v1/jobs", json={"prompt": "x", "constraints": {"providers": ["dear"]}},
                                headers=auth())
    error = (await refused.json())["error"]
    assert refused.status == 402 and error["code"] == "budget_exceeded"
    assert error["details"]["estimated_cost_usd"] == "0.500000"
    remaining = error["details"]["remaining_usd"]
    assert remaining[today()] == "0.200000"
    assert remaining[f"growth:month:{datetime.now(UTC):%Y-%m}"] == "8.900000"


async def test_two_replicas_sharing_a_redis_store_accept_exactly_50_between_them(
    aiohttp_client: Any, tmp_path: Path, providers: dict[str, FakeProvider]
) -> None:
    probe = redis.Redis.from_url(REDIS_URL)
    try:
        await probe.ping()
    except redis.ConnectionError:
        pytest.skip(f"no Redis at {REDIS_URL}")
    finally:
        await probe.aclose()
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    replicas = []
    for index in range(2):
        data_dir = tmp_path / f"data{index}"
        settings = Settings(store_url=REDIS_URL, redis_prefix=prefix, data_dir=data_dir, workers=2)
        app = create_app(
            settings,
            fake_config(growth={"daily_budget_usd": "5.00"}),
            env=TEST_ENV,
            factories={name: fake.build for name, fake in providers.items()},
            sleep=fast_sleep,
        )
        replicas.append(await aiohttp_client(app))
    try:
        answers = await asyncio.gather(
            *(replicas[i % 2].post("/v1/jobs", json={"prompt": f"{i}"}, headers=auth()) for i in range(200))
        )
        statuses = [answer.status for answer in answers]
        assert statuses.count(202) == 50 and statuses.count(402) == 150
        accepted = [(await a.json())["id"] for a in answers if a.status == 202]
        for job_id in accepted:
            await wait_for_status(replicas[0], job_id, "succeeded")
        assert await usage(replicas[1]) == (BUDGET, 0)
    finally:
        store = replicas[0].app[STORE]
        assert isinstance(store, RedisStore)
        await store.drop_all_keys()
