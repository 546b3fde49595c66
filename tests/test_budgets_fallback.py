"""A fallback to a pricier route reserves the difference first; if the budget cannot take it, the job
ends with budget_exceeded instead of spending past the budget."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from adapters.errors import ProviderUnavailable
from broker.appkeys import STORE
from tests.support.api import wait_for_status
from tests.support.deployment import auth, fake_config
from tests.support.fakes import FakeProvider


def today() -> str:
    return f"growth:day:{datetime.now(UTC):%Y-%m-%d}"


async def test_a_fallback_that_fits_reserves_the_difference(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    providers["cheap"].script.fail_with = ProviderUnavailable("cheap is down", provider="cheap")
    client = await make_client(fake_config(growth={"daily_budget_usd": "0.60"}))
    job = await (await client.post("/v1/jobs", json={"prompt": "x"}, headers=auth())).json()
    assert job["estimated_cost_usd"] == "0.100000"
    done = await wait_for_status(client, job["id"], "succeeded", "failed")
    assert done["status"] == "succeeded", done
    assert [a["provider"] for a in done["attempts"]] == ["cheap", "dear"]
    assert done["cost_usd"] == "0.500000"
    usage = await client.app[STORE].budget_usage([today()])
    assert usage[today()] == (500_000, 0)  # all spent, nothing left reserved


async def test_a_fallback_over_the_budget_ends_the_job_without_spending(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    providers["cheap"].script.fail_with = ProviderUnavailable("cheap is down", provider="cheap")
    client = await make_client(fake_config(growth={"daily_budget_usd": "0.30"}))
    job = await (await client.post("/v1/jobs", json={"prompt": "x"}, headers=auth())).json()
    done = await wait_for_status(client, job["id"], "succeeded", "failed")
    assert done["status"] == "failed" and done["error"]["code"] == "budget_exceeded"
    assert providers["dear"].submits == []
    assert done["cost_usd"] == "0.000000"
    usage = await client.app[STORE].budget_usage([today()])
    assert usage[today()] == (0, 0)
