"""The router against the real fal and Runway adapters talking to their emulators (the sandbox):
fallback after a provider's 503s, no fallback on a content rejection, and a circuit opened by repeated
failures showing in quotes. Prices are config.yaml's: fal Wan 2.5 text-to-video ($0.05/s) is the
cheapest route for a 5 s clip, Runway gen4.5 (12 credits/s) the next."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from adapters import fal, runway
from adapters.base import Adapter, AdapterContext, AdapterFactory
from adapters.emulators.fal import CONTENT_POLICY
from adapters.emulators.sandbox import Sandbox, start_sandbox
from broker.api.app import create_app
from broker.config import BrokerConfig, load_config
from broker.jobs.provider_health import BreakerSettings
from broker.settings import Settings
from tests.support.adapters import CONFIG_PATH
from tests.support.api import wait_for_status
from tests.support.deployment import TEST_ENV, auth, fast_sleep

FAL_WAN = "fal/fal-ai/wan-25-preview/text-to-video"
RUNWAY_GEN45 = "runway/gen4.5"
CLIP = {"prompt": "a lighthouse at dusk, slow push in", "duration_s": 5}


def router_config(sandbox: Sandbox) -> BrokerConfig:
    catalog = {route.key: route for route in load_config(CONFIG_PATH).routes}
    endpoints = [sandbox.endpoints[name] for name in ("fal", "runway")]
    providers = {e.provider: {"base_url": e.base_url, "api_key_env": e.api_key_env} for e in endpoints}
    return BrokerConfig.model_validate(
        {
            "providers": providers,
            "routes": [catalog[FAL_WAN], catalog[RUNWAY_GEN45]],
            "admin": {"api_key_env": "BROKER_ADMIN_KEY"},
            "teams": [{"name": "growth", "api_key_env": "BROKER_KEY_GROWTH", "policy": "growth"}],
            "policies": {"default": {"max_attempts": 3}, "growth": {"daily_budget_usd": "20.00"}},
        }
    )


@dataclass
class Rig:
    client: TestClient[Any, Any]
    sandbox: Sandbox
    retry_sleeps: list[float]

    def emulator(self, name: str) -> Any:
        return self.sandbox.endpoints[name].emulator


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    retry_sleeps: list[float] = []

    async def record_sleep(seconds: float) -> None:  # the adapters' retry back-off, not waited out
        retry_sleeps.append(seconds)
        await asyncio.sleep(0)

    def quick(build: AdapterFactory) -> AdapterFactory:
        def factory(ctx: AdapterContext) -> Adapter:
            return build(replace(ctx, sleep=record_sleep))

        return factory

    async with await start_sandbox(render_seconds=0.05) as sandbox:
        store_url = f"sqlite:///{tmp_path}/broker.db"
        settings = Settings(store_url=store_url, data_dir=tmp_path / "data", workers=2)
        app = create_app(
            settings,
            router_config(sandbox),
            env={**TEST_ENV, **sandbox.env()},
            factories={"fal": quick(fal.build), "runway": quick(runway.build)},
            sleep=fast_sleep,
        )
        # The broker stops before the emulators do, so no poll is cut off mid-request.
        async with TestClient(TestServer(app)) as client:
            yield Rig(client, sandbox, retry_sleeps)


async def test_a_503ing_cheapest_provider_hands_the_job_to_the_next_cheapest(rig: Rig) -> None:
    fal_emulator, runway_emulator = rig.emulator("fal"), rig.emulator("runway")
    fal_emulator.inject("server_error", "submit", count=None, status=503)
    response = await rig.client.post("/v1/jobs", json=CLIP, headers=auth())
    job = await response.json()
    assert response.status == 202 and job["route"]["provider"] == "fal"
    assert job["estimated_cost_usd"] == "0.250000"

    done = await wait_for_status(rig.client, job["id"], "succeeded", "failed")
    assert done["status"] == "succeeded", done
    attempts = [(a["provider"], a["status"], a["cost_usd"]) for a in done["attempts"]]
    assert attempts == [("fal", "failed", "0.000000"), ("runway", "succeeded", "0.600000")]
    assert done["attempts"][0]["error"]["code"] == "provider_unavailable"
    assert done["cost_usd"] == "0.600000"

    # fal's submit was retried as its policy bounds it, each answered 503, so none created a task.
    assert fal_emulator.submit_count() == fal.SPEC.submit_retry.attempts == 3 and fal_emulator.tasks == {}
    assert rig.retry_sleeps == []  # each 503 parked the job until due: no adapter slept in a request
    # Runway got exactly one submit, and it is the one task it holds: nothing accepted was resent.
    assert runway_emulator.submit_count() == 1 and len(runway_emulator.tasks) == 1
    video = await rig.client.get(done["output"]["url"], headers=auth())
    assert video.status == 200 and len(await video.read()) == done["output"]["bytes"]


async def test_a_content_rejection_is_not_retried_elsewhere(rig: Rig) -> None:
    fal_emulator = rig.emulator("fal")
    fal_emulator.inject("task_fail", code=CONTENT_POLICY)
    job = await (await rig.client.post("/v1/jobs", json=CLIP, headers=auth())).json()
    done = await wait_for_status(rig.client, job["id"], "succeeded", "failed")
    assert done["status"] == "failed" and done["error"]["code"] == "content_rejected"
    assert [a["provider"] for a in done["attempts"]] == ["fal"]
    assert fal_emulator.submit_count() == 1
    assert rig.emulator("runway").submit_count() == 0


async def test_a_circuit_opened_by_repeated_failures_shows_in_quotes(rig: Rig) -> None:
    rig.emulator("fal").inject("server_error", "submit", count=None, status=503)
    for _ in range(BreakerSettings().min_calls):
        job = await (await rig.client.post("/v1/jobs", json=CLIP, headers=auth())).json()
        assert job["route"]["provider"] == "fal"
        assert (await wait_for_status(rig.client, job["id"], "succeeded", "failed"))["status"] == "succeeded"
    quote = await (await rig.client.post("/v1/quotes", json=CLIP, headers=auth())).json()
    assert quote["chosen"]["provider"] == "runway"
    [rejected] = quote["rejected"]
    assert rejected["provider"] == "fal" and rejected["reasons"][0].startswith("circuit open")
    submits_before = rig.emulator("fal").submit_count()
    job = await (await rig.client.post("/v1/jobs", json=CLIP, headers=auth())).json()
    done = await wait_for_status(rig.client, job["id"], "succeeded", "failed")
    assert [a["provider"] for a in done["attempts"]] == ["runway"]
    assert rig.emulator("fal").submit_count() == submits_before  # the open circuit spared fal
