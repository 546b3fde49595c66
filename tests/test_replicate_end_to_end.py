"""Replicate jobs through the broker's API on the Replicate emulator, with Runway's beside it: the
cheapest route chosen, fallback when Replicate fails, a cancel booked at what Replicate charges, signed
webhooks verified at /v1/callbacks/replicate, and the output fetched while its URL is good. Prices are
config.yaml's: minimax/video-01 $0.50 a video, Runway gen4.5 12 credits/s ($0.72 for 6 s)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from adapters.emulators.replicate import ReplicateEmulator
from adapters.emulators.sandbox import Sandbox, start_sandbox
from broker.api.app import create_app
from broker.config import BrokerConfig, load_config
from broker.settings import Settings
from tests.support.adapters import CONFIG_PATH
from tests.support.api import wait_for_status
from tests.support.deployment import TEST_ENV, auth, fast_sleep

MINIMAX, GEN45 = "replicate/minimax/video-01", "runway/gen4.5"
CLIP = {"prompt": "a lighthouse at dusk, slow push in", "duration_s": 6}


def config(sandbox: Sandbox) -> BrokerConfig:
    catalog = {route.key: route for route in load_config(CONFIG_PATH).routes}
    endpoints = [sandbox.endpoints[name] for name in ("replicate", "runway")]
    providers = {
        e.provider: {
            "base_url": e.base_url,
            "api_key_env": e.api_key_env,
            "webhook_secret_env": e.webhook_secret_env,
        }
        for e in endpoints
    }
    return BrokerConfig.model_validate(
        {
            "providers": providers,
            "routes": [catalog[MINIMAX], catalog[GEN45]],
            "admin": {"api_key_env": "BROKER_ADMIN_KEY"},
            "teams": [{"name": "growth", "api_key_env": "BROKER_KEY_GROWTH", "policy": "growth"}],
            "policies": {"default": {"max_attempts": 3}, "growth": {"daily_budget_usd": "20.00"}},
        }
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Rig:
    client: TestClient[Any, Any]
    sandbox: Sandbox

    @property
    def replicate(self) -> ReplicateEmulator:
        emulator = self.sandbox.endpoints["replicate"].emulator
        assert isinstance(emulator, ReplicateEmulator)
        return emulator

    async def job(self) -> dict[str, Any]:
        response = await self.client.post("/v1/jobs", json=CLIP, headers=auth())
        assert response.status == 202, await response.text()
        job: dict[str, Any] = await response.json()
        return job


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    port = free_port()
    async with await start_sandbox(render_seconds=0.1) as sandbox:
        settings = Settings(
            store_url=f"sqlite:///{tmp_path}/broker.db",
            data_dir=tmp_path / "data",
            public_url=f"http://127.0.0.1:{port}",  # where the emulator sends its webhooks
        )
        app = create_app(settings, config(sandbox), env={**TEST_ENV, **sandbox.env()}, sleep=fast_sleep)
        async with TestClient(TestServer(app, host="127.0.0.1", port=port)) as client:
            yield Rig(client, sandbox)


async def webhooks_of(emulator: ReplicateEmulator, count: int) -> list[Any]:
    for _ in range(500):
        if len(emulator.webhooks) >= count:
            break
        await asyncio.sleep(0.01)
    return emulator.webhooks


async def test_the_cheapest_route_is_replicate_and_its_output_is_fetched_in_time(rig: Rig) -> None:
    quote = await (await rig.client.post("/v1/quotes", json=CLIP, headers=auth())).json()
    assert [(r["provider"], r["cost_usd"]) for r in quote["routes"]] == [
        ("replicate", "0.500000"),
        ("runway", "0.720000"),
    ]
    job = await rig.job()
    assert job["route"]["provider"] == "replicate" and job["estimated_cost_usd"] == "0.500000"
    done = await wait_for_status(rig.client, job["id"], "succeeded", "failed")
    assert done["status"] == "succeeded", done
    assert done["cost_usd"] == "0.500000"  # billed per output: the published price, nothing reported
    assert rig.replicate.charges() == {done["attempts"][0]["provider_job_id"]: 500_000}
    # The broker fetched the file while its URL was good, once; the clip is in its own store now.
    [fetched] = rig.replicate.recorder.of("download")
    expires = int(fetched.path.split("/")[4])
    assert expires > rig.replicate.clock()
    video = await rig.client.get(done["output"]["url"], headers=auth())
    assert video.status == 200 and len(await video.read()) == done["output"]["bytes"] > 0


async def test_a_failing_replicate_hands_the_job_to_runway(rig: Rig) -> None:
    rig.replicate.inject("server_error", "submit", count=None, status=503)
    done = await wait_for_status(rig.client, (await rig.job())["id"], "succeeded", "failed")
    attempts = [(a["provider"], a["status"], a["cost_usd"]) for a in done["attempts"]]
    assert attempts == [("replicate", "failed", "0.000000"), ("runway", "succeeded", "0.720000")]
    assert done["attempts"][0]["error"]["code"] == "provider_unavailable"
    assert rig.replicate.tasks == {}  # every submit was refused: nothing to pay for


async def test_a_cancelled_job_is_cancelled_at_replicate_and_booked_at_nothing(rig: Rig) -> None:
    rig.replicate.inject("never_finish")
    job = await rig.job()
    for _ in range(500):
        if rig.replicate.tasks:
            break
        await asyncio.sleep(0.01)
    [prediction] = rig.replicate.tasks.values()
    await asyncio.sleep(0.05)  # past the emulated queue: the prediction is processing
    response = await rig.client.delete(f"/v1/jobs/{job['id']}", headers=auth())
    assert response.status in (200, 202), await response.text()
    done = await wait_for_status(rig.client, job["id"], "cancelled")
    assert rig.replicate.recorder.of("cancel"), "the broker asked Replicate to cancel"
    assert rig.replicate.prediction(prediction)["status"] == "canceled"
    assert done["cost_usd"] == "0.000000" and done["attempts"][0]["cost_usd"] == "0.000000"
    assert rig.replicate.charges() == {prediction.id: 0}  # the broker's books match Replicate's


async def test_signed_webhooks_are_verified_and_forged_ones_refused(rig: Rig) -> None:
    done = await wait_for_status(rig.client, (await rig.job())["id"], "succeeded", "failed")
    [good] = await webhooks_of(rig.replicate, 1)
    assert good.url.endswith("/v1/callbacks/replicate") and good.status == 200
    assert good.json["id"] == done["attempts"][0]["provider_job_id"]
    assert good.headers["webhook-signature"].startswith("v1,")

    rig.replicate.inject("forge_webhook")
    await wait_for_status(rig.client, (await rig.job())["id"], "succeeded", "failed")
    forged = (await webhooks_of(rig.replicate, 2))[1]
    assert forged.status is not None and 400 <= forged.status < 500
