"""config.yaml's providers on their emulators, and a mixed run through them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from adapters.emulators.emulator import ProviderEmulator
from adapters.emulators.sandbox import Sandbox, start_sandbox
from adapters.registry import FACTORIES
from broker.api.app import create_app
from broker.config import load_config
from broker.settings import Settings
from tests.support.api import wait_for_status
from tests.support.deployment import GROWTH_KEY, STUDIO_KEY, TEST_ENV, auth, fast_sleep
from tests.support.workload import IMAGE

CONFIG = Path(__file__).resolve().parents[2] / "config.yaml"
Client = TestClient[Any, Any]


@dataclass
class Rig:
    client: Client
    sandbox: Sandbox

    def emulator(self, provider: str) -> ProviderEmulator:
        return self.sandbox.endpoints[provider].emulator

    async def run(self, key: str, body: dict[str, Any], *ends: str) -> dict[str, Any]:
        response = await self.client.post("/v1/jobs", json=body, headers=auth(key))
        assert response.status == 202, await response.text()
        return await wait_for_status(self.client, (await response.json())["id"], *ends, key=key)


async def sandbox_rig(aiohttp_client: Any, tmp_path: Path) -> AsyncIterator[Rig]:
    """config.yaml with every remote provider pointed at its emulator (the local backend left out).

    A module that needs it declares `rig = pytest.fixture(sandbox_rig)`."""
    async with await start_sandbox(render_seconds=0.02) as sandbox:
        config = load_config(CONFIG)
        urls = sandbox.base_urls()
        providers = {
            name: provider.model_copy(update={"base_url": urls[name]}) if name in urls else provider
            for name, provider in config.providers.items()
        }
        app = create_app(
            Settings(store_url=f"sqlite:///{tmp_path}/broker.db", data_dir=tmp_path / "data", workers=2),
            config.model_copy(update={"providers": providers}),
            env={**TEST_ENV, **sandbox.env()},
            factories={name: build for name, build in FACTORIES.items() if name != "local"},
            sleep=fast_sleep,
        )
        yield Rig(await aiohttp_client(app), sandbox)


async def run_mixed(rig: Rig) -> dict[str, dict[str, Any]]:
    """The cheapest route, two fallbacks past refunded failures, and a job every route failed."""
    image, text = {"prompt": "harbour at dusk", "image_url": IMAGE}, {"prompt": "harbour at dusk"}
    cheapest = await rig.run(GROWTH_KEY, image, "succeeded", "failed")
    assert cheapest["status"] == "succeeded" and cheapest["route"]["provider"] == "pixelapi", cheapest
    # PixelAPI fails the render (and refunds the credits): a failure it explains only in words leaves
    # PixelAPI for the rest of the job (adapters.failures), so fal renders the clip next.
    rig.emulator("pixelapi").inject("task_fail", count=1)
    fallback = await rig.run(GROWTH_KEY, image, "succeeded", "failed")
    assert [a["provider"] for a in fallback["attempts"]] == ["pixelapi", "fal"], fallback
    rig.emulator("pixelapi").inject("task_fail", count=1)
    studio = await rig.run(STUDIO_KEY, text, "succeeded", "failed")
    assert [a["provider"] for a in studio["attempts"]] == ["pixelapi", "fal"], studio
    # Kept to two providers, each failing at provider level: both are left, and no route remains.
    rig.emulator("pixelapi").inject("task_fail", count=1)
    rig.emulator("fal").inject("task_fail", count=1)
    only_two = {**text, "constraints": {"providers": ["pixelapi", "fal"]}}
    failed = await rig.run(STUDIO_KEY, only_two, "failed", "succeeded")
    assert failed["status"] == "failed" and len(failed["attempts"]) == 2, failed
    return {"cheapest": cheapest, "fallback": fallback, "studio": studio, "failed": failed}
