"""A single broker on SQLite killed with SIGKILL and restarted. Jobs queued, rendering or downloading
at the kill all end `succeeded` with exactly one submit each; a submit cut off half-way is never sent
again, except to doitong, which takes it again under the same Idempotency-Key and so makes no second
task."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.refetches import classify, fetches_in_logs
from tests.support.procs import (
    DOITONG_ROUTE,
    IMAGE_URL,
    Cluster,
    assert_one_submit_per_attempt,
    failures,
    wait_for_phases,
    wait_for_requests,
    wait_for_tasks,
    wait_until_settled,
)

JOBS = 50
WORKERS = 25


@pytest.mark.timeout(120)
async def test_killed_broker_resumes_every_job_without_a_second_submit(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        # Conforming clips: scheduling is measured here, not normalization (tests/test_outputs.py).
        fal = await cluster.emulator("fal", render_seconds=3.0, exact=True)
        # The provider's concurrency (no longer the worker count: a waiting job holds no worker) keeps
        # half the jobs queued while the other half render.
        config = cluster.write_config({"fal": fal.base_url}, max_concurrency=WORKERS)
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

        assert Counter(job["status"] for job in done.values()) == {"succeeded": JOBS}, failures(done)
        assert all(len(job["attempts"]) == 1 for job in done.values())
        await assert_one_submit_per_attempt([fal], list(done.values()))
        # The output is served after the restart, whichever process wrote it.
        status, video = await second.request("GET", f"/v1/jobs/{submitted[0]['id']}/output")
        assert status == 200 and len(video) == done[submitted[0]["id"]]["output"]["bytes"]


@pytest.mark.timeout(60)
async def test_broker_killed_during_a_submit_never_sends_it_again(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        fal = await cluster.emulator("fal", render_seconds=0.2)
        # The provider holds the submit, so the broker is killed while its answer is outstanding.
        await fal.add_faults([{"kind": "slow", "endpoint": "submit", "delay_s": 1.5}])
        config = cluster.write_config({"fal": fal.base_url})
        store_url, data_dir = f"sqlite:///{tmp_path}/broker.db", tmp_path / "data"
        first = await cluster.broker(config, store_url=store_url, data_dir=data_dir, workers=1)
        job = await first.submit({"prompt": "x"})
        await wait_for_phases(first, lambda c: c["submitting"] == 1)
        await wait_for_requests(fal, "submit", 1)  # the provider holds it
        first.kill()
        await wait_for_tasks(fal, 1)  # the held submit went through: the provider has the task

        second = await cluster.broker(config, store_url=store_url, data_dir=data_dir, workers=1)
        done = (await wait_until_settled([second], [job["id"]], timeout_s=30))[job["id"]]

        assert done["status"] == "failed" and done["error"]["code"] == "submission_uncertain", done
        assert [a["status"] for a in done["attempts"]] == ["failed"]
        submits = [r for r in await fal.admin("requests") if r["endpoint"] == "submit"]
        assert len(submits) == 1 and len(await fal.admin("tasks")) == 1


@pytest.mark.timeout(60)
async def test_broker_killed_while_downloading_fetches_the_output_again(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        fal = await cluster.emulator("fal", render_seconds=0.2)
        await fal.add_faults([{"kind": "slow", "endpoint": "download", "delay_s": 3.0}])
        config = cluster.write_config({"fal": fal.base_url})
        store_url, data_dir = f"sqlite:///{tmp_path}/broker.db", tmp_path / "data"
        logged = {"log_level": "info"}  # the fetch lines
        first = await cluster.broker(config, store_url=store_url, data_dir=data_dir, workers=1, **logged)
        job = await first.submit({"prompt": "x"})
        await wait_for_phases(first, lambda c: c["downloading"] == 1)
        await wait_for_requests(fal, "download", 1)  # the provider holds the download
        killed_at = datetime.now(UTC)
        first.kill()

        second = await cluster.broker(config, store_url=store_url, data_dir=data_dir, workers=1, **logged)
        done = (await wait_until_settled([second], [job["id"]], timeout_s=30))[job["id"]]

        assert done["status"] == "succeeded" and len(done["attempts"]) == 1, done
        await assert_one_submit_per_attempt([fal], [done])
        downloads = [r for r in await fal.admin("requests") if r["endpoint"] == "download"]
        assert len(downloads) == 2  # the cut-off one, then the one after the restart
        # The logs tell the two apart: the killed process never logged its fetch's end.
        fetches = fetches_in_logs({0: first.proc.log_path, 1: second.proc.log_path})
        assert sorted((f.replica, f.outcome) for f in fetches) == [(0, None), (1, "fetched")]
        attempt = done["attempts"][0]["id"]
        found = classify({attempt: len(downloads)}, fetches, killed=0, killed_at=killed_at)
        assert found.after_kill == [attempt] and found.unexplained == {}
        status, video = await second.request("GET", f"/v1/jobs/{job['id']}/output")
        assert status == 200 and len(video) == done["output"]["bytes"]


@pytest.mark.timeout(60)
async def test_interrupted_doitong_submit_is_repeated_with_its_key_and_makes_one_task(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        doitong = await cluster.emulator("doitong", render_seconds=0.2)
        await doitong.add_faults([{"kind": "slow", "endpoint": "submit", "delay_s": 1.5}])
        config = cluster.write_config({"doitong": doitong.base_url}, routes=[DOITONG_ROUTE])
        store_url, data_dir = f"sqlite:///{tmp_path}/broker.db", tmp_path / "data"
        first = await cluster.broker(config, store_url=store_url, data_dir=data_dir, workers=1)
        job = await first.submit({"prompt": "x", "image_url": IMAGE_URL})
        await wait_for_phases(first, lambda c: c["submitting"] == 1)
        await wait_for_requests(doitong, "submit", 1)  # the provider holds it
        first.kill()
        await wait_for_tasks(doitong, 1)

        second = await cluster.broker(config, store_url=store_url, data_dir=data_dir, workers=1)
        done = (await wait_until_settled([second], [job["id"]], timeout_s=30))[job["id"]]

        assert done["status"] == "succeeded" and len(done["attempts"]) == 1, done
        tasks = await doitong.admin("tasks")
        assert [t["id"] for t in tasks] == [done["attempts"][0]["provider_job_id"]]
        submits = [r for r in await doitong.admin("requests") if r["endpoint"] == "submit"]
        keys = {r["headers"].get("Idempotency-Key") for r in submits}
        assert len(submits) == 2 and keys == {done["attempts"][0]["id"]}
