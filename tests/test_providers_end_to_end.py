"""Through POST /v1/jobs, a job restricted to each remote provider in turn completes against that
provider's emulator, with its MP4 in the broker's store and its cost booked from the provider's report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from broker.api.app import create_app
from broker.cli.sandbox import start_sandboxed
from broker.config import load_config, parse_config
from broker.settings import Settings
from tests.support.adapters import png_bytes as png
from tests.support.api import wait_for_status
from tests.support.deployment import STUDIO_KEY, TEST_ENV, auth, fast_sleep
from tests.support.paths import ROOT

# doitong publishes no USD per credit, so its route is unpriced and never chosen; an operator who
# knows the rate prices it in config.yaml (here: 50 credits a 5 s clip at $0.005 = $0.25).
DOITONG_PRICE = {"unit": "credits_per_video", "amount": "50", "usd_per_credit": "0.005"}


def catalog_with_doitong_priced() -> Any:
    raw = load_config(ROOT / "config.yaml").model_dump(mode="json", exclude_none=True)
    for route in raw["routes"]:
        if route["provider"] == "doitong":
            route["price"] = DOITONG_PRICE
    return parse_config(raw, "test catalog")


@pytest.mark.parametrize("provider", ["runway", "fal", "muvi", "doitong", "pixelapi"])
async def test_a_job_restricted_to_each_provider_completes_and_books_its_cost(
    aiohttp_client: Any, tmp_path: Path, provider: str
) -> None:
    sandbox, config, env = await start_sandboxed(catalog_with_doitong_priced(), TEST_ENV, render_seconds=0.05)
    try:
        # The emulators take the image URL without fetching it; the test admits its made-up host.
        settings = Settings(
            store_url=f"sqlite:///{tmp_path}/b.db",
            data_dir=tmp_path / "data",
            outbound_allow="images.example.com",
        )
        client = await aiohttp_client(create_app(settings, config, env=env, sleep=fast_sleep))
        body: dict[str, Any] = {
            "prompt": "slow push in on a lighthouse",
            "constraints": {"providers": [provider]},
        }
        if provider == "pixelapi":  # takes the image as a file: a multipart upload
            form = aiohttp.FormData(
                {"prompt": body["prompt"], "constraints": f'{{"providers": ["{provider}"]}}'}
            )
            form.add_field("image", png(640, 360), filename="still.png", content_type="image/png")
            response = await client.post("/v1/jobs", data=form, headers=auth(STUDIO_KEY))
        else:  # the others take a URL the provider fetches itself
            body["image_url"] = "https://images.example.com/lighthouse.png"
            response = await client.post("/v1/jobs", json=body, headers=auth(STUDIO_KEY))
        assert response.status == 202, await response.text()
        job = await response.json()
        done = await wait_for_status(client, job["id"], "succeeded", "failed", key=STUDIO_KEY)

        assert done["status"] == "succeeded", done
        assert done["route"]["provider"] == provider and len(done["attempts"]) == 1
        # The emulators report the documented price in each provider's unit (credits, micro-cents...);
        # converted through the catalog it is exactly the quoted estimate (fal reports none: estimate).
        assert done["cost_usd"] == done["estimated_cost_usd"] != "0.000000"
        video = await client.get(done["output"]["url"], headers=auth(STUDIO_KEY))
        assert video.status == 200 and len(await video.read()) == done["output"]["bytes"] > 0
        assert (tmp_path / "data" / "outputs" / f"{job['id']}.mp4").is_file()
        assert sandbox.endpoints[provider].emulator.submit_count() == 1
    finally:
        await sandbox.close()
