"""Two replicas on one Redis store and one data directory render each local job once."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from local_backend.assets import SAMPLE_IMAGE
from tests.support.deployment import REDIS_URL
from tests.support.procs import Cluster, wait_until_settled

pytestmark = pytest.mark.redis
LOCAL_ROUTE = {
    "provider": "local",
    "model": "camera-motion",
    "modes": ["image_to_video"],
    "durations": {"min": 1, "max": 10},
    "aspect_ratios": ["1:1", "16:9"],
    "resolutions": ["720p"],
    "features": ["seed", "camera_fixed"],
    "quality": "basic",
    "expected_latency_s": 2,
    "price": {"unit": "usd_per_video", "amount": "0.001"},
}


@pytest.mark.timeout(300)  # 40 real renders on a shared 2-core machine
async def test_40_local_jobs_on_two_replicas_all_succeed_with_one_render_each(
    tmp_path: Path, prefix: str
) -> None:
    image = "data:image/png;base64," + base64.b64encode(SAMPLE_IMAGE.read_bytes()).decode()
    async with Cluster(tmp_path) as cluster:
        config = tmp_path / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "providers": {"local": {"max_concurrency": 2}},
                    "routes": [LOCAL_ROUTE],
                    "admin": {"api_key_env": "BROKER_ADMIN_KEY"},
                    "teams": [{"name": "replica", "api_key_env": "BROKER_KEY_REPLICA", "policy": "replica"}],
                    "policies": {"default": {"max_attempts": 3}, "replica": {}},
                }
            )
        )
        data_dir = tmp_path / "data"
        brokers = await cluster.brokers(
            2, config, store_url=REDIS_URL, data_dir=data_dir, redis_prefix=prefix
        )
        body = {"prompt": "slow push in", "image_url": image, "duration_s": 1, "aspect_ratio": "1:1"}
        ids = [(await brokers[i % 2].submit({**body, "seed": i}))["id"] for i in range(40)]
        jobs = await wait_until_settled(brokers, ids, timeout_s=240)
    assert {job["status"] for job in jobs.values()} == {"succeeded"}, [
        (job["id"], job["error"]) for job in jobs.values() if job["status"] != "succeeded"
    ]
    assert all(len(job["attempts"]) == 1 for job in jobs.values())
    # A second render of a job would have left its own clip (or lock, or inputs) behind: none is.
    assert sorted(p.name for p in (data_dir / "local").iterdir()) == []
    assert len(list((data_dir / "outputs").iterdir())) == 40
