"""With BROKER_PUBLIC_URL and a signing secret set, a multipart job restricted to a URL-only provider
(muvi, doitong) completes, and the URL the provider received serves the uploaded bytes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from broker.api.app import create_app
from broker.cli.sandbox import start_sandboxed
from broker.config import BrokerConfig, load_config, parse_config
from broker.settings import Settings
from tests.support.adapters import CONFIG_PATH
from tests.support.adapters import png_bytes as png
from tests.support.api import wait_for_status
from tests.support.deployment import STUDIO_KEY, TEST_ENV, auth, fast_sleep

PUBLIC = "https://broker.example.com"  # the emulators never fetch it; the test does, through the client
SECRET = "hosted-inputs-secret-0123456789abcdef"
DOITONG_PRICE = {"unit": "credits_per_video", "amount": "50", "usd_per_credit": "0.005"}


def catalog_with_doitong_priced() -> BrokerConfig:
    raw = load_config(CONFIG_PATH).model_dump(mode="json", exclude_none=True)
    for route in raw["routes"]:
        if route["provider"] == "doitong":
            route["price"] = DOITONG_PRICE
    return parse_config(raw, "test catalog")


def received_url(provider: str, submitted: Any) -> str:
    if provider == "muvi":
        return str(submitted["input"]["image_url"])
    return str(submitted["variables"]["input"]["input"]["imageUrl"])


@pytest.mark.parametrize("provider", ["muvi", "doitong"])
async def test_an_uploaded_image_reaches_a_url_only_provider(
    aiohttp_client: Any, tmp_path: Path, provider: str
) -> None:
    sandbox, config, env = await start_sandboxed(catalog_with_doitong_priced(), TEST_ENV, render_seconds=0.5)
    try:
        settings = Settings(
            store_url=f"sqlite:///{tmp_path}/b.db",
            data_dir=tmp_path / "data",
            public_url=PUBLIC,
            input_signing_secret=SECRET,
        )
        client = await aiohttp_client(create_app(settings, config, env=env, sleep=fast_sleep))
        image = png(640, 360)
        form = aiohttp.FormData({"prompt": "slow push in", "constraints": f'{{"providers": ["{provider}"]}}'})
        form.add_field("image", image, filename="still.png", content_type="image/png")
        response = await client.post("/v1/jobs", data=form, headers=auth(STUDIO_KEY))
        assert response.status == 202, await response.text()
        job = await response.json()
        emulator = sandbox.endpoints[provider].emulator
        for _ in range(300):  # the input is served while the job runs (renders take 0.5 s here)
            if emulator.recorder.of("submit"):
                break
            await asyncio.sleep(0.01)
        url = received_url(provider, emulator.recorder.of("submit")[0].json)
        assert url.startswith(f"{PUBLIC}/v1/inputs/{job['id']}?")
        served = await client.get(url.removeprefix(PUBLIC))
        assert served.status == 200 and await served.read() == image
        done = await wait_for_status(client, job["id"], "succeeded", "failed", key=STUDIO_KEY)
        assert done["status"] == "succeeded", done
        assert (await client.get(url.removeprefix(PUBLIC))).status == 404  # released with the job
    finally:
        await sandbox.close()
