"""`kill -HUP` on a running `broker serve` puts an edited config.yaml in force without dropping jobs;
a broken edit is refused and the old config stays."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import Broker, Cluster, wait_until_settled


async def _quote(broker: Broker) -> dict[str, Any]:
    status, body = await broker.request("POST", "/v1/quotes", json={"prompt": "a city at night"})
    assert status == 200, body
    quote: dict[str, Any] = body
    return quote


@pytest.mark.timeout(60)
async def test_sighup_reloads_the_config_in_place(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        fal = await cluster.emulator("fal", render_seconds=1.0)
        # One render at a time, so the second job below is certainly still queued when the config changes.
        config = cluster.write_config({"fal": fal.base_url}, max_concurrency=1)
        broker = await cluster.broker(
            config, store_url=f"sqlite:///{tmp_path}/b.db", data_dir=tmp_path / "data"
        )
        before = await _quote(broker)
        assert before["chosen"] is not None
        accepted = [await broker.submit({"prompt": "a city at night"}) for _ in range(2)]

        # An operator caps the team's job price below every route, then sends SIGHUP.
        cluster.write_config({"fal": fal.base_url}, policy={"max_cost_usd": "0.01"}, max_concurrency=1)
        broker.proc.popen.send_signal(signal.SIGHUP)
        for _ in range(50):
            after = await _quote(broker)
            if after["chosen"] is None:
                break
            await asyncio.sleep(0.1)
        assert after["chosen"] is None
        assert any("max_cost_usd" in r for rej in after["rejected"] for r in rej["reasons"])

        # A broken edit is refused: the last good config stays in force and the process lives on.
        config.write_text("teams: [{name: replica, api_key_env: K, policy: missing}]")
        broker.proc.popen.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.5)
        assert broker.proc.alive
        assert (await _quote(broker))["chosen"] is None

        # The job accepted before the reloads was not dropped: it runs under the policy it was
        # accepted with, while new quotes follow the edit.
        settled = await wait_until_settled([broker], [job["id"] for job in accepted], timeout_s=30)
        assert [job["status"] for job in settled.values()] == ["succeeded", "succeeded"], settled
