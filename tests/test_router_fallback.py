"""Fallback through the API with fake providers: which failures move a job to the next cheapest route,
which stop it, what each attempt costs, and how many attempts a policy allows."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from adapters.errors import (
    AuthFailed,
    ContentRejected,
    InsufficientFunds,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    Rejected,
)
from broker.appkeys import STORE
from broker.config import BrokerConfig, parse_config
from pricing.money import Money
from tests.support.api import wait_for_status
from tests.support.deployment import auth, fake_config, fake_route
from tests.support.fakes import FakeProvider

DAILY = "10.00"


def budgeted() -> BrokerConfig:
    return fake_config(growth={"daily_budget_usd": DAILY})


async def usage(client: Any) -> tuple[int, int]:
    """(spent, reserved) in micro-USD of growth's budget today."""
    key = f"growth:day:{datetime.now(UTC):%Y-%m-%d}"
    found: dict[str, tuple[int, int]] = await client.app[STORE].budget_usage([key])
    return found.get(key, (0, 0))


async def submit(client: Any, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/jobs", json={"prompt": "a slow pan", **body}, headers=auth())
    assert response.status == 202, await response.text()
    job: dict[str, Any] = await response.json()
    return job


def summary(job: dict[str, Any]) -> list[tuple[str, str, str | None, str | None]]:
    return [
        (a["provider"], a["status"], a["cost_usd"], a["error"]["code"] if a["error"] else None)
        for a in job["attempts"]
    ]


async def test_each_failure_another_route_could_fix_falls_back_to_the_next_cheapest(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    client = await make_client(budgeted())
    errors = [
        (ProviderUnavailable("503 from upstream", provider="cheap", status=503), "provider_unavailable"),
        (RateLimited("slow down", provider="cheap", retry_after_s=120), "rate_limited"),
        (InsufficientFunds("out of credits", provider="cheap"), "insufficient_funds"),
        (AuthFailed("key revoked", provider="cheap"), "auth_failed"),
    ]
    for error, code in errors:
        providers["cheap"].script.submit_error = error
        job = await submit(client)
        assert job["route"]["provider"] == "cheap"
        done = await wait_for_status(client, job["id"], "succeeded", "failed")
        assert done["status"] == "succeeded", done
        expected = [("cheap", "failed", "0.000000", code), ("dear", "succeeded", "0.500000", None)]
        assert summary(done) == expected
        assert done["cost_usd"] == "0.500000"
    assert providers["cheap"].submits == []  # none was ever accepted
    assert len(providers["dear"].submits) == len(errors)  # one submit per job, never repeated
    assert await usage(client) == (Money.parse("2.00").micros, 0)


async def test_a_failed_render_is_booked_at_its_reported_cost_and_the_job_moves_on(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    providers["cheap"].script.fail_with = ProviderUnavailable("render crashed", provider="cheap")
    providers["cheap"].script.credits = Decimal(3)  # the provider charged 3 credits for the failure
    client = await make_client(budgeted())
    done = await wait_for_status(client, (await submit(client))["id"], "succeeded", "failed")
    assert summary(done) == [
        ("cheap", "failed", "0.030000", "provider_unavailable"),
        ("dear", "succeeded", "0.500000", None),
    ]
    assert done["cost_usd"] == "0.530000"
    assert await usage(client) == (530_000, 0)


async def test_content_rejection_stops_the_job_without_falling_back(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    providers["cheap"].script.fail_with = ContentRejected("SAFETY.INPUT.TEXT", provider="cheap")
    client = await make_client(budgeted())
    done = await wait_for_status(client, (await submit(client))["id"], "succeeded", "failed")
    assert done["status"] == "failed"
    assert done["error"]["code"] == "content_rejected"
    assert summary(done) == [("cheap", "failed", "0.000000", "content_rejected")]
    assert providers["dear"].submits == []
    assert await usage(client) == (0, 0)  # the reservation is released


async def test_an_invalid_input_rejection_stops_the_job(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    providers["cheap"].script.submit_error = Rejected("seed out of range", provider="cheap", status=400)
    client = await make_client(budgeted())
    done = await wait_for_status(client, (await submit(client))["id"], "succeeded", "failed")
    assert done["status"] == "failed" and done["error"]["code"] == "rejected"
    assert len(done["attempts"]) == 1 and providers["dear"].submits == []
    assert await usage(client) == (0, 0)


async def test_attempts_are_bounded_by_the_policy(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    providers["cheap"].script.submit_error = ProviderUnavailable("down", provider="cheap")
    client = await make_client(fake_config(growth={"max_attempts": 1, "daily_budget_usd": DAILY}))
    done = await wait_for_status(client, (await submit(client))["id"], "succeeded", "failed")
    assert done["status"] == "failed" and done["error"]["code"] == "provider_unavailable"
    assert summary(done) == [("cheap", "failed", "0.000000", "provider_unavailable")]
    assert providers["dear"].submits == []
    assert await usage(client) == (0, 0)


async def test_every_route_failing_tries_each_once_and_fails_with_the_last_error(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    providers["cheap"].script.submit_error = ProviderUnavailable("down", provider="cheap")
    providers["dear"].script.submit_error = RateLimited("busy", provider="dear")
    client = await make_client(budgeted())
    done = await wait_for_status(client, (await submit(client))["id"], "succeeded", "failed")
    assert done["status"] == "failed" and done["error"]["code"] == "rate_limited"
    assert [(a["provider"], a["model"]) for a in done["attempts"]] == [("cheap", "c1"), ("dear", "d1")]
    assert await usage(client) == (0, 0)


def three_routes() -> BrokerConfig:
    return parse_config(
        {
            "providers": {"cheap": {}, "dear": {}},
            "routes": [
                fake_route("cheap", "c1", "0.10"),
                fake_route("cheap", "c2", "0.20"),
                fake_route("dear", "d1", "0.50"),
            ],
            "admin": {"api_key_env": "BROKER_ADMIN_KEY"},
            "teams": [{"name": "growth", "api_key_env": "BROKER_KEY_GROWTH"}],
            "policies": {"default": {"max_attempts": 2}},
        },
        "three-routes",
    )


async def test_the_same_route_is_never_tried_twice_and_the_policy_caps_the_count(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    # A route-level failure (not the provider's: that would leave every cheap route at once).
    providers["cheap"].script.submit_error = ProviderError("glitch", provider="cheap")
    client = await make_client(three_routes())
    done = await wait_for_status(client, (await submit(client))["id"], "succeeded", "failed")
    assert done["status"] == "failed"
    assert [a["model"] for a in done["attempts"]] == ["c1", "c2"]  # two routes, two attempts, no d1
    assert providers["dear"].submits == []
