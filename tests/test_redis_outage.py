"""A broker process whose Redis goes away: every store-backed path answers 503 `store_unavailable`
while it is gone, the job runner's workers live through it, and when Redis returns the broker recovers
by itself and finishes every job, old and new. Redis is cut off by stopping a loopback proxy in
front of it, never by stopping the machine's Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.deployment import REDIS_URL
from tests.support.procs import (
    ADMIN_KEY,
    TEAM_KEY,
    Broker,
    Cluster,
    assert_one_submit_per_attempt,
    failures,
    wait_for_phases,
    wait_for_requests,
    wait_for_tasks,
    wait_until_settled,
)
from tests.support.redis_proxy import TcpProxy, host_port

JOBS_BEFORE = 8
OUTAGE_S = 3.0  # longer than fal's 2 s between polls: every worker's next write meets the outage


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    """A running proxy to the machine's Redis; whatever keys go through it are deleted afterwards."""
    instance = TcpProxy(host_port(REDIS_URL))
    await instance.start()
    try:
        yield instance
    finally:
        if instance.running:
            await instance.stop()


async def assert_store_unavailable(
    broker: Broker, method: str, path: str, *, json: Any = None, key: str = TEAM_KEY
) -> None:
    started = time.monotonic()
    status, body = await broker.request(method, path, json=json, key=key)
    assert status == 503, (method, path, status, body)
    assert body["error"]["code"] == "store_unavailable"
    assert "127.0.0.1" not in body["error"]["message"]  # no addresses in error bodies
    assert time.monotonic() - started < 5.0  # an answer, not a hang


async def wait_until_ready(broker: Broker, timeout_s: float) -> float:
    """Seconds until /readyz answers 200 again."""
    started = time.monotonic()
    while (await broker.request("GET", "/readyz"))[0] != 200:
        assert time.monotonic() - started < timeout_s, "the broker did not recover"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


@pytest.mark.timeout(90)
async def test_outage_answers_503_and_recovers_without_losing_a_job(
    tmp_path: Path, proxy: TcpProxy, prefix: str
) -> None:
    async with Cluster(tmp_path) as cluster:
        fal = await cluster.emulator("fal", render_seconds=2.0)
        # Four at the provider at once (its concurrency, since waiting jobs hold no worker), the rest queued.
        config = cluster.write_config({"fal": fal.base_url}, max_concurrency=4)
        broker = await cluster.broker(
            config,
            store_url=proxy.url,
            data_dir=tmp_path / "data",
            workers=4,
            redis_prefix=prefix,
        )
        before = [await broker.submit({"prompt": f"before {i}"}) for i in range(JOBS_BEFORE)]
        # Cut Redis off while jobs render and wait in the queue, with no submit half-way through.
        await wait_for_phases(broker, lambda c: c["submitted"] + c["running"] == 4 and c["submitting"] == 0)
        await proxy.stop()

        await assert_store_unavailable(broker, "POST", "/v1/jobs", json={"prompt": "during"})
        await assert_store_unavailable(broker, "GET", f"/v1/jobs/{before[0]['id']}")
        await assert_store_unavailable(broker, "GET", "/v1/jobs")
        await assert_store_unavailable(broker, "GET", "/v1/jobs", key=ADMIN_KEY)
        await assert_store_unavailable(broker, "DELETE", f"/v1/jobs/{before[1]['id']}")
        await assert_store_unavailable(broker, "GET", f"/v1/jobs/{before[0]['id']}/output")
        await assert_store_unavailable(broker, "POST", "/v1/quotes", json={"prompt": "during"})
        await assert_store_unavailable(broker, "GET", "/readyz")
        assert (await broker.request("GET", "/healthz"))[0] == 200  # alive, just not ready
        await asyncio.sleep(OUTAGE_S)
        assert broker.proc.alive

        await proxy.start()
        await wait_until_ready(broker, timeout_s=15)
        after = [await broker.submit({"prompt": f"after {i}"}) for i in range(4)]
        done = await wait_until_settled([broker], [job["id"] for job in before + after], timeout_s=60)

        assert {job["status"] for job in done.values()} == {"succeeded"}, failures(done)
        assert all(len(job["attempts"]) == 1 for job in done.values())
        await assert_one_submit_per_attempt([fal], list(done.values()))


@pytest.mark.timeout(60)
async def test_outage_as_a_submit_is_answered_keeps_the_providers_task(
    tmp_path: Path, proxy: TcpProxy, prefix: str
) -> None:
    async with Cluster(tmp_path) as cluster:
        fal = await cluster.emulator("fal", render_seconds=0.2)
        await fal.add_faults([{"kind": "slow", "endpoint": "submit", "delay_s": 2.0}])
        config = cluster.write_config({"fal": fal.base_url})
        broker = await cluster.broker(
            config,
            store_url=proxy.url,
            data_dir=tmp_path / "data",
            workers=1,
            redis_prefix=prefix,
        )
        job = await broker.submit({"prompt": "x"})
        await wait_for_phases(broker, lambda c: c["submitting"] == 1)
        await wait_for_requests(fal, "submit", 1)  # held there, so the broker has nothing else in flight
        await proxy.stop()
        await wait_for_tasks(fal, 1)  # the provider accepted it; the broker cannot record that yet
        await asyncio.sleep(OUTAGE_S)
        await proxy.start()

        done = (await wait_until_settled([broker], [job["id"]], timeout_s=30))[job["id"]]
        # The handle was written once Redis returned, so the job went on instead of failing as uncertain.
        assert done["status"] == "succeeded" and len(done["attempts"]) == 1, done
        await assert_one_submit_per_attempt([fal], [done])
