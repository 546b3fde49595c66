"""The cost report after a mixed workload through the API: fake providers and the Runway emulator,
with a plain success, a fallback, a charged failure, a refunded failure and a cancel.

`Workload` and `workload_client` are reused by the metrics and log tests.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pricing.money import Money
from tests.support.deployment import ADMIN_KEY, STUDIO_KEY, auth
from tests.support.workload import (
    Client,
    MakeWorkload,
    money_by,
    serve_workload,
)

workload_client = pytest.fixture(serve_workload)


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
