"""Budgets across three broker processes on one Redis: concurrent submits through every replica never
accept more than the team's daily budget, and what the accepted jobs spend settles within it."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from broker.store.redis import RedisStore
from pricing.money import Money
from tests.support.deployment import REDIS_URL
from tests.support.procs import Cluster, failures, wait_until_settled

BUDGET_USD = "2.00"
JOB_USD = "0.25"  # the fal route: $0.05/s for the default 5 s
SUBMITS = 60


@pytest.fixture
async def store() -> AsyncIterator[RedisStore]:
    """A store on a fresh prefix, read by the test; its keys are deleted afterwards."""
    instance = RedisStore.from_url(REDIS_URL, prefix=f"test-{uuid.uuid4().hex[:12]}")
    await instance.open()
    try:
        yield instance
    finally:
        await instance.drop_all_keys()
        await instance.close()


@pytest.mark.timeout(90)
async def test_three_replicas_never_accept_more_than_the_budget(tmp_path: Path, store: RedisStore) -> None:
    async with Cluster(tmp_path) as cluster:
        fal = await cluster.emulator("fal", render_seconds=0.2)
        config = cluster.write_config({"fal": fal.base_url}, policy={"daily_budget_usd": BUDGET_USD})
        data_dir = tmp_path / "data"
        replicas = await cluster.brokers(
            3, config, store_url=REDIS_URL, data_dir=data_dir, redis_prefix=store.prefix
        )
        replies: list[tuple[int, Any]] = await asyncio.gather(
            *(
                replicas[i % 3].request("POST", "/v1/jobs", json={"prompt": f"shot {i}"})
                for i in range(SUBMITS)
            )
        )

        fits = Money.parse(BUDGET_USD).micros // Money.parse(JOB_USD).micros
        assert Counter(status for status, _ in replies) == {202: fits, 402: SUBMITS - fits}
        refused = [body for status, body in replies if status == 402]
        assert {body["error"]["code"] for body in refused} == {"budget_exceeded"}
        # Every replica took part on both sides of the limit.
        assert {i % 3 for i, (status, _) in enumerate(replies) if status == 402} == {0, 1, 2}

        window = f"replica:day:{datetime.now(UTC):%Y-%m-%d}"
        spent, reserved = (await store.budget_usage([window]))[window]
        assert spent + reserved == fits * Money.parse(JOB_USD).micros
        done = await wait_until_settled(
            replicas, [body["id"] for status, body in replies if status == 202], timeout_s=60
        )
        assert {job["status"] for job in done.values()} == {"succeeded"}, failures(done)
        total = sum(Money.parse(job["cost_usd"]).micros for job in done.values())
        assert (await store.budget_usage([window]))[window] == (total, 0)
        assert total <= Money.parse(BUDGET_USD).micros
