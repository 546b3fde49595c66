"""Fallback by what failed, end to end on config.yaml's catalog and the five emulators: a provider
answering 503 is left for the rest of the job, a Runway route whose request the API refuses with a
400 hands the job to the next route."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from adapters import pixelapi
from adapters.base import Adapter, AdapterContext, AdapterFactory
from adapters.emulators.sandbox import Sandbox
from adapters.registry import factory_for
from broker.api.app import create_app
from broker.cli.sandbox import start_sandboxed
from broker.config import load_config
from broker.settings import Settings
from tests.support.adapters import CONFIG_PATH
from tests.support.adapters import png_bytes as png
from tests.support.api import wait_for_status
from tests.support.deployment import STUDIO_KEY, TEST_ENV, auth, fast_sleep


def _quick(build: AdapterFactory) -> AdapterFactory:
    """The real adapter, its retry back-off not waited out."""

    def factory(ctx: AdapterContext) -> Adapter:
        return build(replace(ctx, sleep=fast_sleep))

    return factory


QUICK = {name: _quick(factory_for(name)) for name in ("runway", "fal", "muvi", "doitong", "pixelapi")}


@dataclass
class Rig:
    client: TestClient[Any, Any]
    sandbox: Sandbox

    def emulator(self, name: str) -> Any:
        return self.sandbox.endpoints[name].emulator


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    sandbox, config, env = await start_sandboxed(load_config(CONFIG_PATH), TEST_ENV, render_seconds=0.05)
    try:
        # The emulators take the image URL without fetching it; the test admits its made-up host.
        settings = Settings(
            store_url=f"sqlite:///{tmp_path}/b.db",
            data_dir=tmp_path / "data",
            workers=2,
            outbound_allow="images.example.com",
        )
        app = create_app(settings, config, env=env, factories=QUICK, sleep=fast_sleep)
        async with TestClient(TestServer(app)) as client:
            yield Rig(client, sandbox)
    finally:
        await sandbox.close()


def attempts(job: dict[str, Any]) -> list[tuple[str, str, str, str | None]]:
    return [
        (a["provider"], a["model"], a["status"], a["error"]["code"] if a["error"] else None)
        for a in job["attempts"]
    ]


async def submit_upload(rig: Rig, providers: list[str]) -> dict[str, Any]:
    form = aiohttp.FormData({"prompt": "slow push in on a lighthouse"})
    form.add_field("constraints", f'{{"providers": {providers!r}}}'.replace("'", '"'))
    form.add_field("image", png(640, 360), filename="still.png", content_type="image/png")
    response = await rig.client.post("/v1/jobs", data=form, headers=auth(STUDIO_KEY))
    assert response.status == 202, await response.text()
    job: dict[str, Any] = await response.json()
    return job


async def test_a_provider_answering_503_to_every_submit_is_left_after_one_submit(rig: Rig) -> None:
    pixel = rig.emulator("pixelapi")
    pixel.inject("server_error", "submit", count=None, status=503)
    job = await submit_upload(rig, ["pixelapi", "runway"])
    assert job["route"]["provider"] == "pixelapi"  # seedance, $0.055, is the cheapest
    done = await wait_for_status(rig.client, job["id"], "succeeded", "failed", key=STUDIO_KEY)
    assert [a[0] for a in attempts(done)] == ["pixelapi", "runway"], attempts(done)
    assert done["status"] == "succeeded"
    # One submit for the job, repeated only by the adapter's own retry policy.
    assert pixel.submit_count() == pixelapi.SUBMIT_RETRY.attempts
    assert rig.emulator("runway").submit_count() == 1


async def test_a_runway_route_refused_with_a_400_falls_back_and_succeeds(rig: Rig) -> None:
    runway = rig.emulator("runway")
    runway.inject("http_error", "submit", status=400, code="VALIDATION", message="Validation of body failed")
    body = {
        "prompt": "slow push in on a lighthouse",
        "image_url": "https://images.example.com/lighthouse.png",
        "constraints": {"providers": ["runway"]},
    }
    response = await rig.client.post("/v1/jobs", json=body, headers=auth(STUDIO_KEY))
    job = await response.json()
    assert response.status == 202 and job["route"]["model"] == "gen4_turbo", job
    done = await wait_for_status(rig.client, job["id"], "succeeded", "failed", key=STUDIO_KEY)
    assert done["status"] == "succeeded", done
    assert attempts(done) == [
        ("runway", "gen4_turbo", "failed", "request_invalid"),
        ("runway", "gen4.5", "succeeded", None),
    ]
    assert done["attempts"][0]["cost_usd"] == "0.000000"
    assert runway.submit_count() == 2  # a 400 is not retried: the next route is tried instead
