"""The cost report over the default deployment's catalog, every remote provider an emulator speaking
its real protocol (the sandbox), with refunded failures, fallbacks across providers and a failed job.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from adapters.emulators.emulator import ProviderEmulator
from adapters.emulators.sandbox import Sandbox, start_sandbox
from adapters.registry import FACTORIES
from broker.app import create_app
from broker.config import load_config
from broker.settings import Settings
from pricing.money import Money
from tests.conftest import ADMIN_KEY, GROWTH_KEY, STUDIO_KEY, TEST_ENV, auth, fast_sleep
from tests.test_api_jobs import wait_for_status
from tests.test_reports_workload import IMAGE, money_by

CONFIG = Path(__file__).resolve().parent.parent / "config.yaml"
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


rig = pytest.fixture(sandbox_rig)


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


async def test_report_over_the_emulated_providers_equals_the_jobs_costs(rig: Rig) -> None:
    cheapest = (await run_mixed(rig))["cheapest"]
    jobs = (await (await rig.client.get("/v1/jobs", headers=auth(ADMIN_KEY))).json())["jobs"]
    by_provider = await (
        await rig.client.get("/v1/reports/costs?group_by=provider", headers=auth(ADMIN_KEY))
    ).json()
    reported = {g["provider"]: Money.parse(g["spend_usd"]) for g in by_provider["groups"]}
    attempted = money_by(jobs, "provider")
    assert reported == attempted and set(reported) == {"pixelapi", "fal"}
    assert reported["pixelapi"] == Money.parse(cheapest["cost_usd"]) > Money.zero()

    url = "/v1/reports/costs?group_by=team,provider"
    by_team = await (await rig.client.get(url, headers=auth(ADMIN_KEY))).json()
    team_spend: dict[str, Money] = defaultdict(Money.zero)
    for group in by_team["groups"]:
        team_spend[group["team"]] += Money.parse(group["spend_usd"])
    for team in ("growth", "studio"):
        assert team_spend[team] == sum(
            (Money.parse(j["cost_usd"]) for j in jobs if j["team"] == team), Money.zero()
        )
    totals = by_team["totals"]
    assert totals["spend_usd"] == str(sum((Money.parse(j["cost_usd"]) for j in jobs), Money.zero()))
    assert (totals["jobs"], totals["succeeded"], totals["failed"], totals["attempts"]) == (4, 3, 1, 7)
    # Refunded attempts cost nothing and show their estimates as unbilled.
    assert Money.parse(totals["unbilled_usd"]) > Money.zero()
    growth = {g["provider"]: g for g in by_team["groups"] if g["team"] == "growth"}
    assert Money.parse(growth["pixelapi"]["savings_usd"]) > Money.zero()  # cheapest route beat the baseline

    response = await rig.client.get(url + "&format=csv", headers=auth(ADMIN_KEY))
    rows = list(csv.DictReader(io.StringIO(await response.text())))
    assert rows[:-1] == [{k: "" if v is None else str(v) for k, v in g.items()} for g in by_team["groups"]]
    assert rows[-1]["spend_usd"] == totals["spend_usd"]
