"""The dashboard in a real headless Chromium, after a workload on the sandboxed providers.

The page's figures must be the API's: its spend per provider equals `GET /v1/reports/costs`, a team
key's page shows only that team, the console stays clean, and the admin can edit a policy. Its provider
queues (on fake providers, one render holding a capped provider's only slot) are `GET /v1/providers`'s.
Set DASHBOARD_SCREENSHOT=docs/dashboard.png to refresh the README's screenshot from this run.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from adapters.base import PollSchedule
from broker.api.app import create_app
from broker.cli.sandbox import start_sandboxed
from broker.config import ProviderConfig, load_config
from broker.settings import Settings
from tests.support.adapters import png_bytes as png
from tests.support.api import wait_for_status
from tests.support.browser import CHROMIUM, Browser, Page
from tests.support.deployment import (
    ADMIN_KEY,
    GROWTH_KEY,
    STUDIO_KEY,
    TEST_ENV,
    auth,
    fake_config,
    fast_sleep,
)
from tests.support.fakes import FakeAdapter, FakeProvider

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")

WORKLOAD = [
    (GROWTH_KEY, {"prompt": "a city at night", "constraints": {"providers": ["runway"]}}),
    (GROWTH_KEY, {"prompt": "waves at dawn", "constraints": {"providers": ["fal"]}}),
    (GROWTH_KEY, {"prompt": "a forest", "constraints": {"providers": ["pixelapi"]}}),
    (STUDIO_KEY, {"prompt": "a desert road", "constraints": {"providers": ["runway"]}}),
    (STUDIO_KEY, {"prompt": "rain on glass", "constraints": {"providers": ["fal"]}}),
]

# What the page shows, read from its tables.
READ_TABLE = """(id) => [...document.querySelectorAll(`#${id} tbody tr`)].map(
    (tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent))"""


@pytest.fixture
async def sandbox_server(aiohttp_client: Any, tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    config = load_config(Path("config.yaml"))
    sandbox, sandboxed, env = await start_sandboxed(config, TEST_ENV, render_seconds=0.05)
    try:
        settings = Settings(store_url=f"sqlite:///{tmp_path}/b.db", data_dir=tmp_path / "data")
        client: TestClient[Any, Any] = await aiohttp_client(
            create_app(settings, sandboxed, env=env, sleep=fast_sleep)
        )
        jobs = []
        for key, body in WORKLOAD:
            reply = await client.post("/v1/jobs", json=body, headers=auth(key))
            assert reply.status == 202, await reply.text()
            jobs.append(((await reply.json())["id"], key))
        image = {"image": png(), "prompt": "slow push in"}
        reply = await client.post("/v1/jobs", data=image, headers=auth(GROWTH_KEY))  # the local backend
        jobs.append(((await reply.json())["id"], GROWTH_KEY))
        for job_id, key in jobs:
            done = await wait_for_status(client, job_id, "succeeded", "failed", key=key)
            assert done["status"] == "succeeded", done
        yield client
    finally:
        await sandbox.close()


async def _api(client: TestClient[Any, Any], path: str, key: str) -> Any:
    reply = await client.get(path, headers=auth(key))
    assert reply.status == 200, await reply.text()
    return await reply.json()


async def _open(browser: Browser, client: TestClient[Any, Any], key: str) -> Page:
    page = await browser.open(f"{client.make_url('/dashboard')}#key={key}")
    await page.wait_for("document.body && (document.body.dataset.loaded || document.body.dataset.failed)")
    assert await page.evaluate("document.body.dataset.failed || null") is None
    return page


# Each provider's colour wherever the page shows one (chart legend, tables); a clash is an error.
READ_COLOURS = """() => {
    const seen = {};
    for (const node of document.querySelectorAll('[data-provider]')) {
        const colour = node.style.getPropertyValue('--swatch');
        if (seen[node.dataset.provider] && seen[node.dataset.provider] !== colour) return null;
        seen[node.dataset.provider] = colour;
    }
    for (const bar of document.querySelectorAll('#daily-chart rect')) {
        const provider = bar.textContent.split(' ')[1].replace(':', '');
        if (seen[provider] !== bar.getAttribute('fill')) return null;
    }
    return seen;
}"""


async def _colours(page: Page) -> dict[str, str]:
    colours: dict[str, str] | None = await page.evaluate(f"({READ_COLOURS})()")
    assert colours is not None, "a provider shows in two colours"
    return colours


async def _table(page: Page, table_id: str) -> list[list[str]]:
    rows: list[list[str]] = await page.evaluate(f"({READ_TABLE})({json.dumps(table_id)})")
    return rows


async def test_dashboard_totals_match_the_cost_report_and_the_console_is_clean(
    sandbox_server: TestClient[Any, Any], tmp_path: Path
) -> None:
    client = sandbox_server
    report = await _api(client, "/v1/reports/costs?group_by=provider", ADMIN_KEY)
    async with Browser.start(tmp_path) as browser:
        page = await _open(browser, client, ADMIN_KEY)
        by_provider = await _table(page, "by-provider")
        shown = {row[0]: row[3] for row in by_provider}
        expected = {group["provider"]: group["spend_usd"] for group in report["groups"]}
        assert {k: v for k, v in shown.items() if k != "total"} == expected
        assert shown["total"] == report["totals"]["spend_usd"] != "0.000000"
        assert {"runway", "fal", "pixelapi", "local"} <= set(expected)
        teams = {row[0] for row in await _table(page, "by-team")}
        assert teams == {"growth", "studio"}
        jobs = await _table(page, "jobs")
        assert len(jobs) == len(WORKLOAD) + 1 and all(row[8] == "MP4" for row in jobs)
        chart_bars = await page.evaluate("document.querySelectorAll('#daily-chart rect').length")
        assert chart_bars >= len(expected)
        health = {row[0]: row for row in await _table(page, "providers")}
        assert health["runway"][1] == "closed" and int(health["runway"][4]) > 0
        assert int(health["local"][4]) == 1  # the local render, though no HTTP call reached it
        assert {"runway", "fal", "pixelapi", "local"} <= set(await _colours(page))
        assert await page.evaluate("document.getElementById('scope').textContent") == "admin: every team"
        assert await page.evaluate("location.hash") == ""  # the key left the address bar
        csv = await client.get(
            "/v1/reports/costs?group_by=day,provider,team,model&format=csv", headers=auth(ADMIN_KEY)
        )
        assert await page.evaluate("csvText()") == await csv.text()  # what "Download CSV" saves
        await page.evaluate("document.getElementById('csv').click()")
        await page.evaluate("document.querySelector('#jobs a.output').click()")  # fetches the MP4
        await page.evaluate("new Promise((done) => setTimeout(done, 300))")
        assert await page.evaluate("document.getElementById('status').textContent") == ""
        shot = Path(os.environ.get("DASHBOARD_SCREENSHOT", tmp_path / "dashboard.png"))
        await page.screenshot(shot)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert page.console_errors == []


async def test_a_team_key_sees_only_its_team(sandbox_server: TestClient[Any, Any], tmp_path: Path) -> None:
    client = sandbox_server
    report = await _api(client, "/v1/reports/costs?group_by=provider", STUDIO_KEY)
    async with Browser.start(tmp_path) as browser:
        page = await _open(browser, client, STUDIO_KEY)
        shown = {row[0]: row[3] for row in await _table(page, "by-provider")}
        assert shown.pop("total") == report["totals"]["spend_usd"]
        assert shown == {group["provider"]: group["spend_usd"] for group in report["groups"]}
        assert set(shown) == {"runway", "fal"}
        assert [row[0] for row in await _table(page, "by-team")] == ["studio"]
        assert {row[1] for row in await _table(page, "jobs")} == {"studio"}
        assert {row[0] for row in await _table(page, "budget-table")} == {"studio"}
        assert await page.evaluate("document.getElementById('policy-editor').hidden") is True
        assert await page.evaluate("document.getElementById('scope').textContent") == "team studio"
        team_colours = await _colours(page)
        assert page.console_errors == []
    async with Browser.start(tmp_path) as browser:
        admin_colours = await _colours(await _open(browser, client, ADMIN_KEY))
    # One colour per provider: the same in the admin's and the team's view, in every place it shows.
    # (The team's view shows its spend's providers, and every provider in the health table.)
    assert team_colours.items() <= admin_colours.items() and {"runway", "fal"} <= set(team_colours)
    assert len(set(admin_colours.values())) == len(admin_colours)


async def test_the_admin_edits_a_policy_with_if_match(
    sandbox_server: TestClient[Any, Any], tmp_path: Path
) -> None:
    client = sandbox_server
    async with Browser.start(tmp_path) as browser:
        page = await _open(browser, client, ADMIN_KEY)
        await page.evaluate("document.getElementById('policy-team').value = 'studio'")
        await page.evaluate("document.getElementById('policy-team').dispatchEvent(new Event('change'))")
        edited = {"min_quality": "standard", "daily_budget_usd": "40.00"}
        await page.evaluate(
            f"document.getElementById('policy-text').value = {json.dumps(json.dumps(edited))}"
        )
        await page.evaluate("document.getElementById('policy-save').click()")
        result = await page.wait_for("document.getElementById('policy-result').textContent")
        assert result == "saved as version 1"
        stored = await _api(client, "/v1/policies/studio", ADMIN_KEY)
        assert stored["version"] == 1 and stored["policy"]["daily_budget_usd"] == "40.00"
        # Someone else saves first: the page's stale version is refused, not overwritten.
        reply = await client.put(
            "/v1/policies/studio",
            json={**edited, "max_attempts": 2},
            headers={**auth(ADMIN_KEY), "If-Match": '"1"'},
        )
        assert reply.status == 200
        await page.evaluate("document.getElementById('policy-save').click()")
        await page.wait_for("document.getElementById('policy-result').textContent.includes('409')")
        assert (await _api(client, "/v1/policies/studio", ADMIN_KEY))["version"] == 2
        # Chromium logs every 4xx answer; the refused save is the only one, and no script failed.
        assert page.console_errors == [
            "network: Failed to load resource: the server responded with a status of 409 (Conflict)"
        ]


async def test_the_page_shows_each_provider_s_queue_and_the_teams_shares(
    make_client: Any, providers: dict[str, FakeProvider], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    providers["cheap"].script.polls_to_finish = 10**6  # the first render holds cheap's one slot
    endless = replace(FakeAdapter.spec, poll_schedule=PollSchedule(0.01, 0.02, deadline_s=10**6))
    monkeypatch.setattr(FakeAdapter, "spec", endless)
    limits = {"cheap": ProviderConfig(max_concurrency=1), "dear": ProviderConfig()}
    client = await make_client(fake_config().model_copy(update={"providers": limits}))
    jobs = []
    for key in (GROWTH_KEY, GROWTH_KEY, STUDIO_KEY):
        reply = await client.post("/v1/jobs", json={"prompt": "a pan"}, headers=auth(key))
        jobs.append(((await reply.json())["id"], key))
        await wait_for_status(client, jobs[0][0], "running")
    while (await _api(client, "/v1/providers", ADMIN_KEY))["providers"][0]["waiting"] < 2:
        await asyncio.sleep(0.01)
    totals = ["cheap", "all teams", "2", "1 of 1", "—"]
    async with Browser.start(tmp_path) as browser:
        page = await _open(browser, client, ADMIN_KEY)
        assert await _table(page, "queue-table") == [
            ["cheap", "growth", "1", "1", "100.0 %"],
            ["cheap", "studio", "1", "0", "0.0 %"],
            totals,
        ]  # dear has neither a cap nor a queue
        assert page.console_errors == []
        page = await _open(browser, client, STUDIO_KEY)
        assert await _table(page, "queue-table") == [["cheap", "studio", "1", "0", "0.0 %"], totals]
        assert page.console_errors == []
    for job_id, key in jobs:
        assert (await client.delete(f"/v1/jobs/{job_id}", headers=auth(key))).status == 202
        await wait_for_status(client, job_id, "cancelled", key=key)
