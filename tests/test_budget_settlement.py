"""Budgets always settle: the store is cut at each point of a job's end (the write that ends it, the
settlement, the runner dying between the two, a create whose answer was lost), and afterwards every
budget window's reservation equals the holds of its still-open jobs and its spend the ended jobs' costs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bench.cost_integrity import GEN4_TURBO, MUVI_GEN4, STUDIO_KEY, Rig
from broker.appkeys import BOOKKEEPER, STORE
from broker.store import Store, StoreUnavailable
from tests.support.budget_rig import assert_budget_balances, on_store


def cut(store: Store, method: str, times: int, *, when: Callable[..., bool] = lambda *a: True) -> list[int]:
    """Make `store.<method>` raise `StoreUnavailable` for its next `times` matching calls."""
    real = getattr(store, method)
    failed: list[int] = []

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        if len(failed) < times and when(*args):
            failed.append(1)
            raise StoreUnavailable("emulated store outage")
        return await real(*args, **kwargs)

    setattr(store, method, flaky)
    return failed


def ending(record: Any) -> bool:
    return bool(record.status.terminal)


async def run_job(r: Rig, providers: list[str], models: list[str]) -> dict[str, Any]:
    return await r.wait(await r.submit(providers, models), "succeeded", "failed", "cancelled")


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
@pytest.mark.parametrize("point", ["ending write", "settlement"])
@pytest.mark.parametrize("outcome", ["succeeded", "failed after fallback", "cancelled"])
async def test_a_store_cut_at_a_point_of_the_jobs_end_still_settles(
    tmp_path: Path, point: str, outcome: str, kind: str
) -> None:
    async with on_store(tmp_path, kind) as r:
        store = r.client.server.app[STORE]
        failed = (
            cut(store, "replace_job", 3, when=ending)
            if point == "ending write"
            else cut(store, "settle_budget", 3)
        )
        if outcome == "succeeded":
            job = await run_job(r, ["runway"], [GEN4_TURBO])
        elif outcome == "failed after fallback":
            r.emulator("runway").inject("task_fail", code="INTERNAL.BAD_OUTPUT.CODE01")
            r.emulator("muvi").inject("task_fail", code="INTERNAL_ERROR")
            job = await run_job(r, ["runway", "muvi"], [GEN4_TURBO, MUVI_GEN4])
        else:
            r.emulator("runway").inject("never_finish")
            job_id = await r.submit(["runway"], [GEN4_TURBO])
            await r.wait_task_phase("runway", job_id, "running")
            await r.client.delete(f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {STUDIO_KEY}"})
            job = await r.wait(job_id, "cancelled")
        assert job["status"] == outcome.split()[0]
        await asyncio.sleep(0.05)  # the settlement follows the ending write
        assert len(failed) == 3
        await assert_budget_balances(r)


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_a_runner_dying_between_the_end_and_the_settlement_is_swept(tmp_path: Path, kind: str) -> None:
    async with on_store(tmp_path, kind) as r:
        app = r.client.server.app
        store = app[STORE]
        real_settle = store.settle_budget

        async def dies(job_id: str, actual: int) -> None:
            raise asyncio.CancelledError  # the runner stopped right here: the job ended, unsettled

        store.settle_budget = dies
        job = await run_job(r, ["runway"], [GEN4_TURBO])
        await asyncio.sleep(0.05)
        store.settle_budget = real_settle
        assert job["status"] == "succeeded"
        assert await store.open_reservations(datetime.now(UTC).timestamp() + 1) == [job["id"]]
        with pytest.raises(AssertionError):
            await assert_budget_balances(r)  # the ended job still holds its reservation

        bookkeeper = app[BOOKKEEPER]
        bookkeeper.wall_clock = lambda: datetime.now(UTC).timestamp() + 3600  # past the sweep's grace
        assert await bookkeeper.run_once() == (0, 1)
        await assert_budget_balances(r)


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
@pytest.mark.parametrize("landed", [True, False])
async def test_a_create_whose_answer_was_lost_keeps_its_hold_until_the_sweeper_knows(
    tmp_path: Path, landed: bool, kind: str
) -> None:
    async with on_store(tmp_path, kind) as r:
        app = r.client.server.app
        store = app[STORE]
        real_create = store.create_job

        async def lost(record: Any) -> Any:
            if landed:
                await real_create(record)
            raise StoreUnavailable("the create timed out")

        store.create_job = lost
        body = {"prompt": "p", "image_url": "https://images.example.com/a.png", "duration_s": 5}
        body["constraints"] = {"providers": ["runway"], "models": [GEN4_TURBO]}
        response = await r.client.post(
            "/v1/jobs", json=body, headers={"Authorization": f"Bearer {STUDIO_KEY}"}
        )
        store.create_job = real_create
        assert response.status == 503
        bookkeeper = app[BOOKKEEPER]
        bookkeeper.wall_clock = lambda: datetime.now(UTC).timestamp() + 3600
        if landed:  # the job exists and runs: its hold stays until it ends, then it settles
            page, _ = await store.list_jobs(team="studio")
            (record,) = page
            await r.wait(record.id, "succeeded")
            await asyncio.sleep(0.05)
        else:  # no job was made: the sweeper releases the hold
            assert await bookkeeper.run_once() == (0, 1)
        await assert_budget_balances(r)
        assert await store.open_reservations(datetime.now(UTC).timestamp() + 3600) == []
