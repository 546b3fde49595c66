"""Provider capacity: concurrency and submit-rate slots; a job waits in the cheapest route's queue
unless its max_latency_s cannot wait that long (then the cheapest route that fits), and a queued job
fails when its max_latency_s runs out."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from adapters.base import PollSchedule
from broker.api.app import create_app
from broker.appkeys import RUNNER, STORE
from broker.config import BrokerConfig, ProviderConfig, parse_config
from broker.jobs.capacity import Capacity, Limits
from broker.jobs.queues import Seat
from broker.settings import Settings
from tests.support.adapters import FakeTime
from tests.support.api import wait_for_status
from tests.support.deployment import REDIS_URL, TEST_ENV, auth, fake_route
from tests.support.fakes import FakeAdapter, FakeProvider


def seat(job_id: str, team: str = "t") -> Seat:
    return Seat(job_id=job_id, team=team)


def test_a_provider_takes_no_more_than_its_concurrency() -> None:
    capacity = Capacity(FakeTime().clock, {"p": Limits(max_concurrency=2)})
    assert capacity.try_acquire("p", "a1", seat("j1"))[0] and capacity.try_acquire("p", "a2", seat("j2"))[0]
    assert capacity.try_acquire("p", "a3", seat("j3")) == (False, [])  # j3 waits in the queue
    assert capacity.saturated() == {"p": "provider p at capacity (2 of 2 running)"}
    assert capacity.release("a1") == ["j3"]  # the freed slot is granted to the queue's next job
    assert capacity.release("a1") == []  # twice is harmless
    assert not capacity.try_acquire("p", "a4", seat("j4"))[0]  # a newcomer cannot take j3's slot
    assert capacity.in_flight("p") == 1 and capacity.try_acquire("p", "a3", seat("j3"))[0]
    capacity.release_job("j3")
    capacity.release_job("j2")
    assert capacity.in_flight("p") == 0 and capacity.granted("p", "j4")  # j4 was next in the queue
    assert capacity.try_acquire("p", "a4", seat("j4"))[0] and capacity.release("a4") == []
    assert capacity.in_flight("p") == 0 and capacity.saturated() == {}
    assert capacity.try_acquire("unlimited", "a5", seat("j5"))[0]  # no limits configured: never saturated


def test_the_submit_rate_is_a_rolling_minute() -> None:
    time = FakeTime()
    capacity = Capacity(time.clock, {"p": Limits(max_concurrency=5, requests_per_minute=2)})
    for attempt in ("a1", "a2"):
        assert capacity.try_acquire("p", attempt, seat(f"j{attempt}"))[0]
        capacity.release(attempt)
        time.now += 10
    assert capacity.blocked("p") == "provider p at its rate limit (2 submits a minute)"
    assert capacity.free_in("p") == 40
    capacity.hold("p", "resumed", seat("j"), new_submit=False)  # already at the provider: not a new submit
    time.now += 40
    assert capacity.blocked("p") is None and capacity.free_in("p") is None


def test_limits_follow_config_and_held_slots_survive_a_change() -> None:
    capacity = Capacity(FakeTime().clock)
    providers = {"p": ProviderConfig(max_concurrency=1)}
    capacity.follow(providers)
    assert (
        capacity.try_acquire("p", "a1", seat("j1"))[0] and not capacity.try_acquire("p", "a2", seat("j2"))[0]
    )
    assert capacity.follow({"p": ProviderConfig(max_concurrency=2)}) == ["j2"]  # the raised limit's slot
    assert capacity.in_flight("p") == 1 and capacity.try_acquire("p", "a2", seat("j2"))[0]


async def test_a_waiter_wakes_when_a_slot_is_given_back() -> None:
    capacity = Capacity(FakeTime().clock, {"p": Limits(max_concurrency=1)})
    capacity.hold("p", "a1", seat("j1"))
    never = asyncio.Event()

    async def no_timeout(seconds: float) -> None:
        await never.wait()

    waiter = asyncio.create_task(capacity.wait_for_change(60, no_timeout))
    await asyncio.sleep(0)
    assert not waiter.done()
    capacity.release("a1")
    await asyncio.wait_for(waiter, 1)
    assert capacity.blocked("p") is None


def limited_config(**cheap: Any) -> BrokerConfig:
    return parse_config(
        {
            "providers": {"cheap": cheap, "dear": {}},
            "routes": [fake_route("cheap", "c1", "0.10"), fake_route("dear", "d1", "0.50")],
            "admin": {"api_key_env": "BROKER_ADMIN_KEY"},
            "teams": [{"name": "growth", "api_key_env": "BROKER_KEY_GROWTH", "policy": "growth"}],
            "policies": {"default": {"max_attempts": 3}, "growth": {"daily_budget_usd": "10.00"}},
        },
        "limited",
    )


async def submit(client: Any, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/jobs", json={"prompt": "a pan", **body}, headers=auth())
    assert response.status == 202, await response.text()
    job: dict[str, Any] = await response.json()
    return job


async def job(client: Any, job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = await (await client.get(f"/v1/jobs/{job_id}", headers=auth())).json()
    return body


@pytest.fixture(params=["sqlite", "redis"])
def store_settings(request: pytest.FixtureRequest, prefix: str) -> dict[str, Any]:
    """Settings overrides for each store: the queues live in this process, or in Redis."""
    return {} if request.param == "sqlite" else {"store_url": REDIS_URL, "redis_prefix": prefix}


async def test_a_job_waits_in_the_cheap_queue_unless_its_latency_limit_cannot_wait(
    make_client: Any,
    providers: dict[str, FakeProvider],
    store_settings: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cheap = providers["cheap"]
    cheap.script.polls_to_finish = 10**6
    # The first render outlasts the test: its deadline must not pass on the test's fast clock.
    endless = replace(FakeAdapter.spec, poll_schedule=PollSchedule(0.01, 0.02, deadline_s=10**6))
    monkeypatch.setattr(FakeAdapter, "spec", endless)
    client = await make_client(limited_config(max_concurrency=1), workers=3, **store_settings)
    first = await submit(client)
    await wait_for_status(client, first["id"], "running")
    while not cheap.submits:
        await asyncio.sleep(0.01)

    # One render (30 s) ahead in a queue of one slot: a 30 s wait before cheap's own 30 s render.
    quote = await (await client.post("/v1/quotes", json={"prompt": "a pan"}, headers=auth())).json()
    assert quote["chosen"]["provider"] == "cheap" and quote["chosen"]["predicted_wait_s"] == 30
    hurried = {"prompt": "a pan", "constraints": {"max_latency_s": 45}}
    quote = await (await client.post("/v1/quotes", json=hurried, headers=auth())).json()
    assert quote["chosen"]["provider"] == "dear" and quote["chosen"]["predicted_wait_s"] == 0
    assert quote["rejected"] == [
        {
            "provider": "cheap",
            "model": "c1",
            "reasons": [
                "expected latency 30 s after a predicted 30 s wait for a slot is above max_latency_s 45"
            ],
        }
    ]
    skipped = await submit(client, constraints={"max_latency_s": 45})
    assert skipped["route"]["provider"] == "dear"
    assert (await wait_for_status(client, skipped["id"], "succeeded"))["attempts"][0]["provider"] == "dear"

    waiting = await submit(client)  # no limit: the cheapest route, however long its queue
    assert waiting["route"]["provider"] == "cheap"
    for _ in range(20):
        await asyncio.sleep(0.01)
        assert (await job(client, waiting["id"]))["status"] == "queued"
        assert (await job(client, first["id"]))["status"] == "running"
    assert len(cheap.submits) == 1

    assert (await client.delete(f"/v1/jobs/{first['id']}", headers=auth())).status == 202
    await wait_for_status(client, first["id"], "cancelled")
    moved = await wait_for_status(client, waiting["id"], "running")  # the freed slot's grant woke it
    assert [a["provider"] for a in moved["attempts"]] == ["cheap"]
    while len(cheap.submits) < 2:
        await asyncio.sleep(0.01)
    assert (await client.delete(f"/v1/jobs/{waiting['id']}", headers=auth())).status == 202
    await wait_for_status(client, waiting["id"], "cancelled")
    assert await client.app[RUNNER].slots.in_flight("cheap") == 0


async def test_the_submit_rate_limit_is_waited_for_unless_the_latency_limit_cannot_wait(
    make_client: Any, providers: dict[str, FakeProvider], store_settings: dict[str, Any]
) -> None:
    client = await make_client(limited_config(requests_per_minute=1), **store_settings)
    first = await submit(client)
    assert (await wait_for_status(client, first["id"], "succeeded"))["attempts"][0]["provider"] == "cheap"
    hurried = await submit(client, constraints={"max_latency_s": 60})  # the window refills in ~60 s
    assert hurried["route"]["provider"] == "dear"
    await wait_for_status(client, hurried["id"], "succeeded")
    patient = await submit(client)
    assert patient["route"]["provider"] == "cheap"
    await asyncio.sleep(0.2)
    assert (await job(client, patient["id"]))["status"] == "queued"
    assert len(providers["cheap"].submits) == 1
    assert (await client.delete(f"/v1/jobs/{patient['id']}", headers=auth())).status == 202
    await wait_for_status(client, patient["id"], "cancelled")


async def test_a_job_waiting_for_capacity_fails_when_its_max_latency_runs_out(
    aiohttp_client: Any, tmp_path: Path, providers: dict[str, FakeProvider]
) -> None:
    fake = FakeTime(start=time.time())
    settings = Settings(store_url=f"sqlite:///{tmp_path}/broker.db", data_dir=tmp_path / "data", workers=1)
    app = create_app(
        settings,
        limited_config(max_concurrency=1),
        env=TEST_ENV,
        factories={name: fake_provider.build for name, fake_provider in providers.items()},
        clock=fake.clock,
        sleep=fake.sleep,
    )
    client = await aiohttp_client(app)
    app[RUNNER].capacity.hold("cheap", "att_elsewhere", seat("job_elsewhere"))  # cheap is busy throughout

    # Predicted: a 30 s wait (one render ahead of it) and its own 30 s render, within 70 s: accepted.
    waiting = await submit(client, constraints={"providers": ["cheap"], "max_latency_s": 70})
    done = await wait_for_status(client, waiting["id"], "failed")
    assert done["attempts"] == [] and done["error"]["code"] == "timed_out"
    assert "max_latency_s (70 s)" in done["error"]["message"]
    assert fake.sleeps and max(fake.sleeps) <= 30.0  # a queued job with a limit looks again every 30 s
    assert providers["cheap"].submits == []
    key = f"growth:day:{done['created_at'][:10]}"
    assert await app[STORE].budget_usage([key]) == {key: (0, 0)}
