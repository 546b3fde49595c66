"""Three `broker serve` processes on one Redis and one emulator: 300 jobs, one replica killed with
SIGKILL mid-way. Every job ends `succeeded`, the provider saw exactly one submit per attempt, and the
killed replica's jobs were taken over by the others (a job waiting for its provider belongs to no
replica; one caught mid-step is due again when its lease lapses), and no job is left due or leased."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.support.deployment import REDIS_URL
from tests.support.procs import (
    DOITONG_ROUTE,
    IMAGE_URL,
    Cluster,
    assert_one_submit_per_attempt,
    failures,
    wait_for_phases,
    wait_until_settled,
)

JOBS = 300
WORKERS = 100  # per replica: all 300 jobs are claimed at once, so none waits to be submitted


async def unfinished_in_schedule(prefix: str) -> int:
    """How many jobs the scheduling index still holds (due, or leased to a step)."""
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        return int(await client.zcard(f"{{{prefix}:jobs}}:due"))
    finally:
        await client.aclose()


@pytest.mark.timeout(150)
async def test_three_replicas_finish_every_job_after_one_is_killed(tmp_path: Path, prefix: str) -> None:
    async with Cluster(tmp_path) as cluster:
        # Conforming clips: 300 re-encodes would take the 2 shared cores past any sane bound, and what
        # this test checks is the takeover, not normalization (tests/test_outputs.py).
        fal = await cluster.emulator("fal", render_seconds=2.0, exact=True)
        config = cluster.write_config({"fal": fal.base_url})
        data_dir = tmp_path / "data"  # one artifact directory for every replica
        replicas = await cluster.brokers(
            3, config, store_url=REDIS_URL, data_dir=data_dir, workers=WORKERS, redis_prefix=prefix
        )
        limit = asyncio.Semaphore(32)

        async def submit(i: int) -> str:
            async with limit:
                return str((await replicas[i % 3].submit({"prompt": f"shot {i}"}))["id"])

        ids = await asyncio.gather(*(submit(i) for i in range(JOBS)))
        # Kill once no job waits to be submitted or is half-way through a submit: the crash then
        # catches jobs rendering, downloading or done, never a submit whose fate is unknown.
        at_kill = await wait_for_phases(
            replicas[1], lambda c: c["queued"] == 0 and c["submitting"] == 0, timeout_s=60
        )
        replicas[0].kill()
        assert at_kill["succeeded"] < JOBS
        done = await wait_until_settled(replicas, ids, timeout_s=90)

        assert Counter(job["status"] for job in done.values()) == {"succeeded": JOBS}, failures(done)
        assert all(len(job["attempts"]) == 1 for job in done.values())
        await assert_one_submit_per_attempt([fal], list(done.values()))
        assert await unfinished_in_schedule(prefix) == 0
        # Any replica serves any job's output: the artifact directory is shared.
        for job_id in ids[:3]:
            status, video = await replicas[2].request("GET", f"/v1/jobs/{job_id}/output")
            assert status == 200 and len(video) == done[job_id]["output"]["bytes"]


@pytest.mark.timeout(150)
async def test_replica_killed_at_any_moment_loses_nothing_on_an_idempotent_provider(
    tmp_path: Path, prefix: str
) -> None:
    # Fewer workers than jobs, so jobs keep being submitted: the kill lands wherever it lands,
    # possibly between a submit and its record, which doitong's Idempotency-Key makes safe to repeat.
    async with Cluster(tmp_path) as cluster:
        doitong = await cluster.emulator("doitong", render_seconds=0.5)
        config = cluster.write_config({"doitong": doitong.base_url}, routes=[DOITONG_ROUTE])
        replicas = await cluster.brokers(
            3, config, store_url=REDIS_URL, data_dir=tmp_path / "data", workers=40, redis_prefix=prefix
        )
        limit = asyncio.Semaphore(32)

        async def submit(i: int) -> str:
            async with limit:
                job = await replicas[i % 3].submit({"prompt": f"shot {i}", "image_url": IMAGE_URL})
                return str(job["id"])

        ids = await asyncio.gather(*(submit(i) for i in range(JOBS)))
        at_kill = await wait_for_phases(replicas[1], lambda c: c["succeeded"] >= JOBS // 3, timeout_s=60)
        replicas[0].kill()
        assert at_kill["succeeded"] < JOBS, at_kill
        done = await wait_until_settled(replicas, ids, timeout_s=90)

        assert Counter(job["status"] for job in done.values()) == {"succeeded": JOBS}, (
            at_kill,
            failures(done),
        )
        attempts = [a for job in done.values() for a in job["attempts"]]
        assert len(attempts) == JOBS
        # One task per attempt; a submit sent again after the kill carried its attempt's key.
        tasks = {task["id"] for task in await doitong.admin("tasks")}
        assert tasks == {a["provider_job_id"] for a in attempts} and len(tasks) == JOBS
        submits = [r for r in await doitong.admin("requests") if r["endpoint"] == "submit"]
        assert {r["headers"].get("Idempotency-Key") for r in submits} == {a["id"] for a in attempts}
        assert await unfinished_in_schedule(prefix) == 0
