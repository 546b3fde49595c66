"""A small mixed workload through the broker: fake providers and the Runway emulator."""

from __future__ import annotations

import asyncio
import base64
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from adapters import runway
from adapters.base import AdapterFactory
from adapters.emulators.runway import RunwayEmulator
from adapters.emulators.runway import create_app as create_runway_app
from adapters.errors import ContentRejected, ProviderUnavailable, RateLimited
from broker.api.app import create_app
from broker.config import BrokerConfig, parse_config
from broker.settings import Settings
from pricing.money import Money
from tests.support.adapters import png_bytes, serving
from tests.support.api import wait_for_status
from tests.support.deployment import ADMIN_KEY, GROWTH_KEY, STUDIO_KEY, TEST_ENV, auth, fake_route, fast_sleep
from tests.support.fakes import FakeProvider, Script

Client = TestClient[Any, Any]
RUNWAY_KEY = "runway-secret-0123456789abcdef"
PNG = png_bytes(64, 48)
IMAGE = "data:image/png;base64," + base64.b64encode(PNG).decode()


def workload_config(runway_url: str) -> BrokerConfig:
    """cheap (0.10) < runway gen4_turbo (5 credits/s: 0.25 for 5 s) < dear (0.50), for image jobs."""
    runway_route = {
        **fake_route("runway", "gen4_turbo", "0.25", latency=90),
        "modes": ["image_to_video"],
        "resolutions": ["720p"],
        "price": {"unit": "credits_per_second", "amount": "5", "usd_per_credit": "0.01"},
    }
    return parse_config(
        {
            "providers": {
                "cheap": {},
                "dear": {},
                "runway": {"base_url": runway_url, "api_key_env": "RUNWAYML_API_SECRET"},
            },
            "routes": [fake_route("cheap", "c1", "0.10"), runway_route, fake_route("dear", "d1", "0.50")],
            "admin": {"api_key_env": "BROKER_ADMIN_KEY"},
            "teams": [
                {"name": "growth", "api_key_env": "BROKER_KEY_GROWTH", "policy": "growth"},
                {"name": "studio", "api_key_env": "BROKER_KEY_STUDIO"},
            ],
            "policies": {"default": {"max_attempts": 3}, "growth": {"monthly_budget_usd": "500.00"}},
        },
        "workload-config",
    )


@dataclass
class Workload:
    client: Client
    providers: dict[str, FakeProvider]
    emulator: RunwayEmulator
    job_ids: dict[str, str]

    async def submit(self, key: str, name: str) -> str:
        response = await self.client.post(
            "/v1/jobs", json={"prompt": f"job {name}", "image_url": IMAGE}, headers=auth(key)
        )
        assert response.status == 202, await response.text()
        job_id: str = (await response.json())["id"]
        self.job_ids[name] = job_id
        return job_id

    async def run_one(self, key: str, name: str, script: Script, *ends: str) -> dict[str, Any]:
        self.providers["cheap"].script = script
        return await wait_for_status(self.client, await self.submit(key, name), *ends, key=key)

    async def run(self) -> None:
        """Five jobs, one at a time so each sees its own script."""
        cheap = self.providers["cheap"]
        ok = await self.run_one(GROWTH_KEY, "plain", Script(), "succeeded", "failed")
        assert ok["status"] == "succeeded" and ok["cost_usd"] == "0.100000"
        limited = Script(submit_error=RateLimited("slow down", provider="cheap"))
        fallback = await self.run_one(STUDIO_KEY, "fallback", limited, "succeeded", "failed")
        assert [a["provider"] for a in fallback["attempts"]] == ["cheap", "runway"], fallback
        rejected = Script(fail_with=ContentRejected("moderated", provider="cheap"), credits=Decimal(4))
        charged = await self.run_one(GROWTH_KEY, "charged", rejected, "failed", "succeeded")
        assert charged["status"] == "failed" and charged["cost_usd"] == "0.040000"
        self.emulator.inject("task_fail", code="INTERNAL_ERROR")
        down = Script(fail_with=ProviderUnavailable("down", provider="cheap"), credits=Decimal(3))
        three = await self.run_one(GROWTH_KEY, "three", down, "succeeded", "failed")
        assert [a["provider"] for a in three["attempts"]] == ["cheap", "runway", "dear"], three
        cheap.script = Script(polls_to_finish=10**6)
        job_id = await self.submit(STUDIO_KEY, "cancelled")
        await wait_for_status(self.client, job_id, "running", key=STUDIO_KEY)
        while len(cheap.submits) < 4:
            await asyncio.sleep(0.01)
        assert (await self.client.delete(f"/v1/jobs/{job_id}", headers=auth(STUDIO_KEY))).status == 202
        await wait_for_status(self.client, job_id, "cancelled", key=STUDIO_KEY)

    async def jobs(self) -> list[dict[str, Any]]:
        """Every job, as the admin reads it through the API."""
        body = await (await self.client.get("/v1/jobs?limit=200", headers=auth(ADMIN_KEY))).json()
        jobs: list[dict[str, Any]] = body["jobs"]
        return jobs


MakeWorkload = Callable[[], Awaitable[Workload]]


async def serve_workload(aiohttp_client: Any, tmp_path: Path) -> AsyncIterator[MakeWorkload]:
    """Build the broker on the workload config, with the Runway emulator serving on loopback.

    A module that needs it declares `workload_client = pytest.fixture(serve_workload)`."""
    emulator = RunwayEmulator(api_keys=(RUNWAY_KEY,), render_seconds=0.02)
    async with serving(create_runway_app(emulator)) as server:

        async def make() -> Workload:
            providers = {"cheap": FakeProvider("cheap"), "dear": FakeProvider("dear")}
            factories: dict[str, AdapterFactory] = {
                "runway": runway.build,
                **{n: p.build for n, p in providers.items()},
            }
            settings = Settings(
                store_url=f"sqlite:///{tmp_path}/broker.db", data_dir=tmp_path / "data", workers=2
            )
            app = create_app(
                settings,
                workload_config(str(server.make_url("")).rstrip("/")),
                env={**TEST_ENV, "RUNWAYML_API_SECRET": RUNWAY_KEY},
                factories=factories,
                sleep=fast_sleep,
            )
            client: Client = await aiohttp_client(app)
            return Workload(client, providers, emulator, {})

        yield make


def money_by(jobs: list[dict[str, Any]], field: str) -> dict[str, Money]:
    """Sum of attempts' costs by an attempt field, straight from the job bodies."""
    sums: dict[str, Money] = defaultdict(Money.zero)
    for job in jobs:
        for attempt in job["attempts"]:
            sums[attempt[field]] += Money.parse(attempt["cost_usd"] or "0")
    return dict(sums)
