"""The cost report over the default deployment's catalog, every remote provider an emulator speaking
its real protocol (the sandbox), with refunded failures, fallbacks across providers and a failed job.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict

import pytest

from pricing.money import Money
from tests.support.deployment import ADMIN_KEY, auth
from tests.support.sandbox_rig import Rig, run_mixed, sandbox_rig
from tests.support.workload import money_by

rig = pytest.fixture(sandbox_rig)


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
