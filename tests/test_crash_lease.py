"""A live worker keeps its job's lease while it waits between polls, so no other worker (in the same
process or another replica) takes the job over and polls it a second time."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from tests.support.procs import Cluster, wait_until_settled


@pytest.mark.timeout(60)
async def test_lease_shorter_than_the_poll_interval_is_kept_by_its_worker(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        # fal polls 2 s after the submit (running, 1.5 s to go), then 2 s later (done).
        fal = await cluster.emulator("fal", render_seconds=3.5, exact=True)
        config = cluster.write_config({"fal": fal.base_url}, timeout_s=0.5)
        broker = await cluster.broker(
            config,
            store_url=f"sqlite:///{tmp_path}/broker.db",
            data_dir=tmp_path / "data",
            workers=2,
            lease_s=1.0,
        )
        job = await broker.submit({"prompt": "x"})
        done = (await wait_until_settled([broker], [job["id"]], timeout_s=30))[job["id"]]

        assert done["status"] == "succeeded"
        await asyncio.sleep(3.0)  # a second worker on the job would poll again by now
        calls = Counter(r["endpoint"] for r in await fal.admin("requests"))
        # One worker polling on fal's schedule: two status polls.
        assert calls["submit"] == 1 and calls["status"] == 2, calls
