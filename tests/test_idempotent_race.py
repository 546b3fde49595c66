"""Retries of one Idempotency-Key racing each other get the one job, whatever the budget has left."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.deployment import REDIS_URL, auth, fake_config


@pytest.mark.parametrize("store", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def test_50_concurrent_retries_of_one_key_get_one_202_and_49_200s_for_the_same_job(
    make_client: Any, prefix: str, store: str
) -> None:
    # Room for exactly one job on the 0.10 route: a retry must never be judged as a second job.
    overrides: dict[str, Any] = {"store_url": REDIS_URL, "redis_prefix": prefix} if store == "redis" else {}
    client = await make_client(fake_config(growth={"daily_budget_usd": "0.10"}), **overrides)
    body = {"prompt": "one clip", "constraints": {"providers": ["cheap"]}}
    headers = {**auth(), "Idempotency-Key": "order-77"}

    async def submit() -> tuple[int, dict[str, Any]]:
        response = await client.post("/v1/jobs", json=body, headers=headers)
        return response.status, await response.json()

    answers = await asyncio.gather(*(submit() for _ in range(50)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * 49 + [202], [b for s, b in answers if s not in (200, 202)][:2]
    assert len({answer["id"] for _, answer in answers}) == 1
    other = await client.post("/v1/jobs", json={**body, "prompt": "another"}, headers=auth())
    assert other.status == 402  # the budget still holds exactly the one job
