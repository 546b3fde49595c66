"""A single broker on SQLite killed with SIGKILL while jobs are queued and rendering, then restarted:
every job ends `succeeded` and the provider saw exactly one submit per job."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from tests.procs import Cluster, assert_one_submit_per_attempt, wait_for_phases, wait_until_settled

JOBS = 50
WORKERS = 20


@pytest.mark.timeout(120)
async def test_killed_broker_resumes_every_job_without_a_second_submit(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        fal = await cluster.emulator("fal", render_seconds=1.0)
        config = cluster.write_config({"fal": fal.base_url})
        store_url, data_dir = f"sqlite:///{tmp_path}/broker.db", tmp_path / "data"
        first = await cluster.broker(config, store_url=store_url, data_dir=data_dir, workers=WORKERS)
        submitted = await asyncio.gather(*(first.submit({"prompt": f"shot {i}"}) for i in range(JOBS)))

        # Kill once every worker's job is at the provider and before any finishes: then no submit is
        # half done, and the crash leaves jobs both queued and rendering.
        at_kill = await wait_for_phases(
            first, lambda c: c["submitted"] + c["running"] == WORKERS and c["queued"] == JOBS - WORKERS
        )
        first.kill()
        assert at_kill["succeeded"] == 0

        second = await cluster.broker(config, store_url=store_url, data_dir=data_dir, workers=WORKERS)
        done = await wait_until_settled([second], [job["id"] for job in submitted], timeout_s=60)

        assert Counter(job["status"] for job in done.values()) == {"succeeded": JOBS}
        assert all(len(job["attempts"]) == 1 for job in done.values())
        await assert_one_submit_per_attempt([fal], list(done.values()))
        # The output is served after the restart, whichever process wrote it.
        status, video = await second.request("GET", f"/v1/jobs/{submitted[0]['id']}/output")
        assert status == 200 and len(video) == done[submitted[0]["id"]]["output"]["bytes"]
