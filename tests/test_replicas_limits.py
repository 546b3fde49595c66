"""Three `broker serve` processes on one Redis: one provider limit honoured together (checked at the
emulator), a replica killed mid-way loses nothing, and one stopped with SIGTERM hands its jobs over at
once (its steps finish; no job waits out a lease)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support.deployment import REDIS_URL
from tests.support.procs import (
    Cluster,
    assert_one_submit_per_attempt,
    failures,
    wait_for_phases,
    wait_until_settled,
)

LIMIT = 8


@pytest.mark.timeout(150)
async def test_three_replicas_keep_one_provider_limit_through_a_kill(tmp_path: Path, prefix: str) -> None:
    async with Cluster(tmp_path) as cluster:
        # Conforming clips: scheduling is measured here, not normalization (tests/test_outputs.py).
        fal = await cluster.emulator("fal", render_seconds=1.0, exact=True)
        config = cluster.write_config({"fal": fal.base_url}, max_concurrency=LIMIT)
        replicas = await cluster.brokers(
            3, config, store_url=REDIS_URL, data_dir=tmp_path / "data", workers=8, redis_prefix=prefix
        )
        ids = [str((await replicas[i % 3].submit({"prompt": f"shot {i}"}))["id"]) for i in range(60)]
        at_kill = await wait_for_phases(replicas[1], lambda c: c["succeeded"] >= 15, timeout_s=60)
        replicas[0].kill()
        done = await wait_until_settled(replicas[1:], ids, timeout_s=90)

        assert at_kill["succeeded"] < 60
        assert Counter(job["status"] for job in done.values()) == {"succeeded": 60}, failures(done)
        await assert_one_submit_per_attempt([fal], list(done.values()))
        stats = await fal.stats()
        # The emulator's own count: never more tasks at once than the limit, across all replicas.
        assert 1 < stats["peak_active"] <= LIMIT, stats


@pytest.mark.timeout(120)
async def test_a_replica_stopped_with_sigterm_hands_its_jobs_over_at_once(
    tmp_path: Path, prefix: str
) -> None:
    async with Cluster(tmp_path) as cluster:
        # Conforming clips: scheduling is measured here, not normalization (tests/test_outputs.py).
        fal = await cluster.emulator("fal", render_seconds=2.0, exact=True)
        config = cluster.write_config({"fal": fal.base_url})
        # A lease far longer than the test: a job left leased by the stopped replica would never finish.
        replicas = await cluster.brokers(
            2, config, store_url=REDIS_URL, data_dir=tmp_path / "data", lease_s=600, redis_prefix=prefix
        )
        ids = [str((await replicas[0].submit({"prompt": f"shot {i}"}))["id"]) for i in range(30)]
        await wait_for_phases(replicas[1], lambda c: c["queued"] == 0 and c["submitting"] == 0, timeout_s=30)
        stopped_at = time.monotonic()
        replicas[0].proc.stop()
        assert not replicas[0].proc.alive
        done = await wait_until_settled(replicas[1:], ids, timeout_s=60)

        assert Counter(job["status"] for job in done.values()) == {"succeeded": 30}, failures(done)
        assert time.monotonic() - stopped_at < 30  # renders of 2 s, polled by the replica left
        await assert_one_submit_per_attempt([fal], list(done.values()))
