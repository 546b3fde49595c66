"""`serve --sandbox`: the emulators stand in for every provider and jobs route to them end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from broker.api.app import create_app
from broker.cli.sandbox import start_sandboxed
from broker.config import load_config
from broker.settings import Settings
from tests.support.api import wait_for_status
from tests.support.deployment import GROWTH_KEY, TEST_ENV, auth, fast_sleep


async def test_sandbox_routes_a_job_to_an_emulated_provider(aiohttp_client: Any, tmp_path: Path) -> None:
    config = load_config(Path("config.yaml"))
    sandbox, sandboxed, env = await start_sandboxed(config, TEST_ENV, render_seconds=0.05)
    try:
        assert {"runway", "fal", "muvi", "doitong", "pixelapi"} <= set(sandbox.base_urls())
        assert sandboxed.providers["runway"].base_url == sandbox.base_urls()["runway"]
        settings = Settings(store_url=f"sqlite:///{tmp_path}/b.db", data_dir=tmp_path / "data")
        client = await aiohttp_client(create_app(settings, sandboxed, env=env, sleep=fast_sleep))
        quote = await (
            await client.post("/v1/quotes", json={"prompt": "a city at night"}, headers=auth())
        ).json()
        assert quote["chosen"] is not None
        assert not any("no API key" in r for rej in quote["rejected"] for r in rej["reasons"])
        body = {"prompt": "a city at night", "constraints": {"providers": ["runway"]}}
        job = await (await client.post("/v1/jobs", json=body, headers=auth(GROWTH_KEY))).json()
        done = await wait_for_status(client, job["id"], "succeeded", "failed")
        assert done["status"] == "succeeded", done
        assert done["route"]["provider"] == "runway"
        assert done["cost_usd"] == done["attempts"][0]["cost_usd"] != "0.000000"
        runway = sandbox.endpoints["runway"].emulator
        assert len([r for r in runway.requests if r.method == "POST"]) == 1
    finally:
        await sandbox.close()
