"""Unpriced routes: never chosen unless a policy's `allow_unpriced_max_usd` admits them at a ceiling,
which is then quoted, reserved and booked as an upper bound marked `unpriced`, never as 0; and
doitong priced by config like any other route."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from broker.api.app import create_app
from broker.appkeys import STORE
from broker.cli.sandbox import start_sandboxed
from broker.config import BrokerConfig, load_config, parse_config
from broker.observability.reports import Tally
from broker.schema import Attempt, AttemptStatus, JobRequest
from broker.settings import Settings
from pricing.money import Money
from pricing.quote import quote
from pricing.units import CostUnit, ReportedCost
from pricing.unpriced import book_unpriced
from tests.support.adapters import CONFIG_PATH
from tests.support.api import wait_for_status
from tests.support.deployment import ADMIN_KEY, STUDIO_KEY, TEST_ENV, auth, fast_sleep

CEILING = "0.40"
IMAGE_JOB = {
    "prompt": "slow push in on a lighthouse",
    "image_url": "https://images.example.com/lighthouse.png",
    "constraints": {"providers": ["doitong"]},
}
DOITONG_PRICE = {"unit": "credits_per_video", "amount": "50", "usd_per_credit": "0.005"}


def test_an_unpriced_attempt_books_its_ceiling_and_keeps_the_providers_figure_beside_it() -> None:
    ceiling = Money.parse(CEILING)
    credits = ReportedCost(Decimal("42"), CostUnit.CREDITS)
    delivered = book_unpriced(ceiling, credits, succeeded=True, refunded=False)
    assert (delivered.cost, delivered.reported) == (ceiling, "42 credits")
    assert book_unpriced(ceiling, None, succeeded=True, refunded=False).cost == ceiling  # never 0
    charged_failure = book_unpriced(ceiling, credits, succeeded=False, refunded=False)
    assert charged_failure.cost == ceiling
    assert book_unpriced(ceiling, credits, succeeded=False, refunded=True).cost == Money.zero()
    assert book_unpriced(ceiling, None, succeeded=False, refunded=False).cost == Money.zero()


def test_the_quote_admits_an_unpriced_route_only_at_a_ceiling_and_judges_that_ceiling() -> None:
    catalog = [route for route in load_config(CONFIG_PATH).routes if route.provider == "doitong"]
    request = JobRequest.model_validate(IMAGE_JOB)
    refused = quote(request, catalog)
    assert refused.chosen is None
    assert any("allow_unpriced_max_usd" in reason for reason in refused.rejected[0].reasons)

    allowed = quote(request, catalog, unpriced_ceiling=Money.parse(CEILING))
    assert allowed.chosen is not None and allowed.chosen.unpriced
    assert allowed.to_json()["chosen"]["cost_usd"] == "0.400000"
    assert allowed.to_json()["chosen"]["unpriced"] is True

    capped = JobRequest.model_validate({**IMAGE_JOB, "constraints": {"max_cost_usd": "0.30"}})
    over = quote(capped, catalog, unpriced_ceiling=Money.parse(CEILING))
    assert over.chosen is None and "above max_cost_usd" in " ".join(over.rejected[0].reasons)


def test_reports_count_unpriced_spend_apart() -> None:
    now = datetime.now(UTC)
    tally = Tally()
    for unpriced, cost in ((True, CEILING), (False, "0.25")):
        tally.add_attempt(
            Attempt(
                id=f"a{unpriced}",
                job_id="j",
                provider="doitong",
                model="runway-i2v",
                status=AttemptStatus.SUCCEEDED,
                started_at=now,
                cost_usd=cost,
                unpriced=unpriced,
            )
        )
    figures = tally.to_json()
    assert figures["spend_usd"] == "0.650000"
    assert (figures["unpriced_attempts"], figures["unpriced_usd"]) == (1, "0.400000")


def _config(*, doitong_price: dict[str, str] | None = None, ceiling: str | None = None) -> BrokerConfig:
    raw = load_config(CONFIG_PATH).model_dump(mode="json", exclude_none=True)
    for route in raw["routes"]:
        if route["provider"] == "doitong" and doitong_price is not None:
            route["price"] = doitong_price
    if ceiling is not None:
        raw["policies"]["studio"]["allow_unpriced_max_usd"] = ceiling
    return parse_config(raw, "test catalog")


async def _run(aiohttp_client: Any, tmp_path: Path, config: BrokerConfig) -> tuple[Any, Any, dict[str, Any]]:
    # Without the sandbox's own doitong price: these tests are about the config's (or its absence).
    sandbox, pointed, env = await start_sandboxed(
        config, TEST_ENV, render_seconds=0.05, emulator_prices=False
    )
    # The emulators take the image URL without fetching it; the test admits its made-up host.
    settings = Settings(
        store_url=f"sqlite:///{tmp_path}/b.db",
        data_dir=tmp_path / "data",
        outbound_allow="images.example.com",
    )
    client = await aiohttp_client(create_app(settings, pointed, env=env, sleep=fast_sleep))
    response = await client.post("/v1/jobs", json=IMAGE_JOB, headers=auth(STUDIO_KEY))
    assert response.status == 202, await response.text()
    return client, sandbox, await response.json()


async def _reserved(client: Any) -> int:
    key = f"studio:day:{datetime.now(UTC):%Y-%m-%d}"
    usage: dict[str, tuple[int, int]] = await client.app[STORE].budget_usage([key])
    spent, reserved = usage.get(key, (0, 0))
    return spent + reserved


async def _doitong_report(client: Any) -> dict[str, Any]:
    response = await client.get("/v1/reports/costs?group_by=provider", headers=auth(ADMIN_KEY))
    groups = (await response.json())["groups"]
    return next(group for group in groups if group["provider"] == "doitong")


async def test_a_doitong_job_priced_by_config_reserves_and_books_its_price(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client, sandbox, job = await _run(aiohttp_client, tmp_path, _config(doitong_price=DOITONG_PRICE))
    try:
        assert job["estimated_cost_usd"] == "0.250000" and job["route"]["unpriced"] is False
        assert await _reserved(client) == Money.parse("0.25").micros
        done = await wait_for_status(client, job["id"], "succeeded", "failed", key=STUDIO_KEY)
        assert done["status"] == "succeeded", done
        assert done["cost_usd"] == "0.250000"  # doitong's creditCost (50) at the operator's rate
        assert done["attempts"][0]["unpriced"] is False
        report = await _doitong_report(client)
        assert (report["spend_usd"], report["unpriced_usd"]) == ("0.250000", "0.000000")
    finally:
        await sandbox.close()


async def test_an_unpriced_route_under_a_ceiling_is_quoted_and_reserved_at_the_ceiling(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client, sandbox, job = await _run(aiohttp_client, tmp_path, _config(ceiling=CEILING))
    try:
        assert job["route"] == {
            "provider": "doitong",
            "model": "runway-i2v",
            "estimated_cost_usd": "0.400000",
            "unpriced": True,
        }
        assert job["estimated_cost_usd"] == "0.400000"
        assert await _reserved(client) == Money.parse(CEILING).micros
    finally:
        await sandbox.close()


async def test_an_unpriced_route_under_a_ceiling_books_the_ceiling_marked_unpriced(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client, sandbox, job = await _run(aiohttp_client, tmp_path, _config(ceiling=CEILING))
    try:
        done = await wait_for_status(client, job["id"], "succeeded", "failed", key=STUDIO_KEY)
        assert done["status"] == "succeeded", done
        attempt = done["attempts"][0]
        assert (attempt["estimated_cost_usd"], attempt["cost_usd"]) == ("0.400000", "0.400000")
        assert attempt["unpriced"] is True and attempt["reported_cost"] == "50 credits"
        assert done["cost_usd"] == "0.400000"
        assert await _reserved(client) == Money.parse(CEILING).micros  # settled at the ceiling
        report = await _doitong_report(client)
        assert (report["spend_usd"], report["unpriced_usd"], report["unpriced_attempts"]) == (
            "0.400000",
            "0.400000",
            1,
        )
    finally:
        await sandbox.close()
