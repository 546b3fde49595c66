"""The cost report after a mixed workload through the API: fake providers and the Runway emulator,
with a plain success, a fallback, a charged failure, a refunded failure and a cancel.

`Workload` and `workload_client` are reused by the metrics and log tests.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from adapters import runway
from adapters.base import AdapterFactory
from adapters.emulators.runway import RunwayEmulator
from adapters.emulators.runway import create_app as create_runway_app
from adapters.errors import ContentRejected, ProviderUnavailable, RateLimited
from broker.app import create_app
from broker.config import BrokerConfig, parse_config
from broker.settings import Settings
from pricing.money import Money
from tests.conftest import ADMIN_KEY, GROWTH_KEY, STUDIO_KEY, TEST_ENV, auth, fake_route, fast_sleep
from tests.fakes import FakeProvider, Script
from tests.test_adapter_support import png_bytes, serving
from tests.test_api_jobs import wait_for_status

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


workload_client = pytest.fixture(serve_workload)


def money_by(jobs: list[dict[str, Any]], field: str) -> dict[str, Money]:
    """Sum of attempts' costs by an attempt field, straight from the job bodies."""
    sums: dict[str, Money] = defaultdict(Money.zero)
    for job in jobs:
        for attempt in job["attempts"]:
            sums[attempt[field]] += Money.parse(attempt["cost_usd"] or "0")
    return dict(sums)


async def report(client: Client, key: str, query: str) -> dict[str, Any]:
    response = await client.get(f"/v1/reports/costs?{query}", headers=auth(key))
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_report_by_provider_and_team_equals_the_jobs_costs(workload_client: MakeWorkload) -> None:
    work = await workload_client()
    await work.run()
    jobs = await work.jobs()
    assert len(jobs) == 5
    by_provider = await report(work.client, ADMIN_KEY, "group_by=provider")
    spend = {g["provider"]: Money.parse(g["spend_usd"]) for g in by_provider["groups"]}
    assert spend == money_by(jobs, "provider")
    assert {p: str(m) for p, m in spend.items()} == {
        "cheap": "0.170000",
        "runway": "0.250000",
        "dear": "0.500000",
    }

    by_team = await report(work.client, ADMIN_KEY, "group_by=team")
    team_spend: dict[str, Money] = defaultdict(Money.zero)
    for job in jobs:
        team_spend[job["team"]] += Money.parse(job["cost_usd"])
    assert {g["team"]: Money.parse(g["spend_usd"]) for g in by_team["groups"]} == team_spend
    total = sum(team_spend.values(), Money.zero())
    assert by_team["totals"]["spend_usd"] == by_provider["totals"]["spend_usd"] == str(total) == "0.920000"
    assert (by_team["totals"]["succeeded"], by_team["totals"]["failed"], by_team["totals"]["cancelled"]) == (
        3,
        1,
        1,
    )


async def test_savings_positive_where_the_cheaper_route_was_chosen_and_refunds_show_as_unbilled(
    workload_client: MakeWorkload,
) -> None:
    work = await workload_client()
    await work.run()
    body = await report(work.client, ADMIN_KEY, "group_by=provider,team")
    groups = {(g["provider"], g["team"]): g for g in body["groups"]}
    # The plain job went to cheap (0.10) instead of the 0.50 baseline.
    assert Money.parse(groups["cheap", "growth"]["savings_usd"]) == Money.parse("0.40")
    assert Money.parse(groups["runway", "studio"]["savings_usd"]) == Money.parse("0.25")
    assert Money.parse(body["totals"]["savings_usd"]) > Money.zero()
    # Runway refunded the failed render of the three-attempt job: its estimate shows as unbilled.
    assert groups["runway", "growth"]["unbilled_usd"] == "0.250000"
    assert groups["runway", "growth"]["spend_usd"] == "0.000000"
    # ... and the report says it was a refund, with the amount given back.
    assert groups["runway", "growth"]["refunds_usd"] == "0.250000"
    assert groups["cheap", "growth"]["refunds_usd"] == "0.000000"


async def test_csv_and_json_agree_and_team_keys_see_only_their_team(workload_client: MakeWorkload) -> None:
    work = await workload_client()
    await work.run()
    query = "group_by=provider,model,team,day"
    as_json = await report(work.client, ADMIN_KEY, query)
    response = await work.client.get(f"/v1/reports/costs?{query}&format=csv", headers=auth(ADMIN_KEY))
    assert response.status == 200 and response.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(await response.text())))
    expected = [{k: "" if v is None else str(v) for k, v in g.items()} for g in as_json["groups"]]
    assert rows[:-1] == expected
    assert rows[-1]["spend_usd"] == as_json["totals"]["spend_usd"] and rows[-1]["team"] == "(total)"

    studio = await report(work.client, STUDIO_KEY, "group_by=team")
    assert [g["team"] for g in studio["groups"]] == ["studio"] and studio["team"] == "studio"
    assert studio["totals"]["jobs"] == 2 and studio["totals"]["spend_usd"] == "0.250000"
    other = await work.client.get("/v1/reports/costs?team=growth", headers=auth(STUDIO_KEY))
    assert other.status == 403
    admin_growth = await report(work.client, ADMIN_KEY, "team=growth&group_by=team")
    assert [g["team"] for g in admin_growth["groups"]] == ["growth"]


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("group_by=provider,cost", "group_by"),
        ("group_by=team,team", "group_by"),
        ("format=xml", "format"),
        ("from=last-week", "from"),
        ("to=2026-02-30", "to"),
        ("from=2026-11-21&to=2026-11-01", "from"),
        ("from=2020-01-01&to=2026-01-01", "to"),
    ],
)
async def test_bad_parameters_are_400_naming_the_parameter(
    make_client: Callable[..., Awaitable[Client]], query: str, param: str
) -> None:
    client = await make_client()
    response = await client.get(f"/v1/reports/costs?{query}", headers=auth())
    body = await response.json()
    assert response.status == 400, body
    assert body["error"]["code"] == "invalid_request"
    assert body["error"]["details"][0]["field"] == param and body["error"]["message"].startswith(param)


async def test_report_needs_a_key(make_client: Callable[..., Awaitable[Client]]) -> None:
    client = await make_client()
    assert (await client.get("/v1/reports/costs")).status == 401


async def test_openapi_lists_the_report_and_metrics(make_client: Callable[..., Awaitable[Client]]) -> None:
    client = await make_client()
    paths = (await (await client.get("/openapi.json")).json())["paths"]
    report_get = paths["/v1/reports/costs"]["get"]
    assert {p["name"] for p in report_get["parameters"]} == {"from", "to", "group_by", "format", "team"}
    assert paths["/metrics"]["get"]["security"] == []
