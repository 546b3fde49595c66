"""The cost-integrity rig on either store, and the check that every budget window balances."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from bench.cost_integrity import Rig, rig
from broker.appkeys import DEPLOYMENT, STORE
from broker.jobs.budgets import budget_windows
from broker.store.redis import RedisStore
from pricing.money import Money
from tests.support.deployment import REDIS_URL


@contextlib.asynccontextmanager
async def on_store(tmp_path: Path, kind: str) -> AsyncIterator[Rig]:
    """The rig on SQLite, or on Redis under a fresh key prefix that is deleted afterwards."""
    if kind == "sqlite":
        async with rig(tmp_path) as r:
            yield r
        return
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    try:
        async with rig(tmp_path, store_url=REDIS_URL, redis_prefix=prefix) as r:
            yield r
    finally:
        store = RedisStore.from_url(REDIS_URL, prefix=prefix)
        await store.open()
        await store.drop_all_keys()
        await store.close()


async def assert_budget_balances(r: Rig) -> None:
    """Reserved = the holds of open jobs; spent = the costs of ended jobs, in every studio window."""
    app = r.client.server.app
    store = app[STORE]
    policy = app[DEPLOYMENT].config.policy_for("studio")
    keys = [w.key for w in budget_windows("studio", policy, datetime.now(UTC))]
    page, _ = await store.list_jobs(team="studio", limit=200)
    open_holds = sum((j.reserved_usd or Money.zero()).micros for j in page if not j.status.terminal)
    spent = sum(j.job.cost_usd.micros for j in page if j.status.terminal)
    assert keys and await store.budget_usage(keys) == dict.fromkeys(keys, (spent, open_holds))
