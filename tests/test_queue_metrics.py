"""What operators see of the provider queues, on both stores: `/metrics` carries each capped provider's
jobs waiting and slots in use per team, and the queue wait of every job that got its slot;
`GET /v1/providers` (the dashboard's source) the same per provider, a team key seeing its own row."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.base import PollSchedule
from broker.api.app import create_app
from broker.api.provider_status import team_queues
from broker.appkeys import RUNNER
from broker.config import BrokerConfig, ProviderConfig
from broker.settings import Settings
from tests.support.api import PATIENCE_S, wait_for_status
from tests.support.deployment import (
    ADMIN_KEY,
    GROWTH_KEY,
    REDIS_URL,
    STUDIO_KEY,
    TEST_ENV,
    auth,
    fake_config,
    fast_sleep,
)
from tests.support.fakes import FakeAdapter, FakeProvider

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
SHIFT_S = 20.0  # how far the broker's clock jumps while two jobs wait


def one_slot() -> BrokerConfig:
    """`cheap` takes one render at a time; `dear` has no limit of the broker's own (and no queue)."""
    providers = {"cheap": ProviderConfig(max_concurrency=1), "dear": ProviderConfig()}
    return fake_config().model_copy(update={"providers": providers})


async def scrape(client: Any) -> Samples:
    text = await (await client.get("/metrics")).text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def labelled(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def at(provider: str, team: str) -> tuple[tuple[str, str], ...]:
    return (("provider", provider), ("team", team))


async def submit(client: Any, key: str) -> str:
    reply = await client.post("/v1/jobs", json={"prompt": "a pan"}, headers=auth(key))
    assert reply.status == 202, await reply.text()
    job_id: str = (await reply.json())["id"]
    return job_id


async def until(check: Any) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not await check():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.01)


@pytest.fixture(params=["sqlite", "redis"])
async def queued(
    request: pytest.FixtureRequest,
    aiohttp_client: Any,
    settings: Settings,
    providers: dict[str, FakeProvider],
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    """(client, clock shift, job ids): growth's render holds cheap's one slot and never ends; one more
    growth job and one studio job wait in cheap's queue."""
    providers["cheap"].script.polls_to_finish = 10**6
    endless = replace(FakeAdapter.spec, poll_schedule=PollSchedule(0.01, 0.02, deadline_s=10**6))
    monkeypatch.setattr(FakeAdapter, "spec", endless)
    shift = [0.0]
    overrides = {} if request.param == "sqlite" else {"store_url": REDIS_URL, "redis_prefix": prefix}
    app = create_app(
        Settings(**{**settings.model_dump(), **overrides}),
        one_slot(),
        env=TEST_ENV,
        factories={name: fake.build for name, fake in providers.items()},
        clock=lambda: time.time() + shift[0],
        sleep=fast_sleep,
    )
    client = await aiohttp_client(app)
    running = await submit(client, GROWTH_KEY)
    await wait_for_status(client, running, "running")
    jobs = {"running": running, "growth": await submit(client, GROWTH_KEY)}
    jobs["studio"] = await submit(client, STUDIO_KEY)

    async def both_wait() -> bool:
        depth = labelled(await scrape(client), "broker_provider_queue_depth")
        return depth.get(at("cheap", "growth")) == 1 and depth.get(at("cheap", "studio")) == 1

    await until(both_wait)
    return client, shift, jobs


async def test_metrics_show_each_team_s_queue_and_slots_and_the_wait_once_a_slot_frees(queued: Any) -> None:
    client, shift, jobs = queued
    samples = await scrape(client)
    assert labelled(samples, "broker_provider_queue_depth") == {
        at("cheap", "growth"): 1,
        at("cheap", "studio"): 1,
    }  # dear has no limit: no queue, no series
    assert labelled(samples, "broker_provider_slots_in_use") == {
        at("cheap", "growth"): 1,
        at("cheap", "studio"): 0,
    }
    assert not any(n.startswith("broker_queue_wait_seconds") for n, _ in samples)  # nobody got a slot yet

    shift[0] += SHIFT_S  # the waiters wait that long, on the broker's clock
    assert (await client.delete(f"/v1/jobs/{jobs['running']}", headers=auth(GROWTH_KEY))).status == 202
    await wait_for_status(client, jobs["running"], "cancelled", key=GROWTH_KEY)
    # Equal slots in use (none), and growth was granted one before: studio's job is next.
    await wait_for_status(client, jobs["studio"], "running", key=STUDIO_KEY)

    samples = await scrape(client)
    assert labelled(samples, "broker_provider_queue_depth") == {
        at("cheap", "growth"): 1,
        at("cheap", "studio"): 0,
    }
    assert labelled(samples, "broker_provider_slots_in_use") == {
        at("cheap", "growth"): 0,
        at("cheap", "studio"): 1,
    }
    studio = (("team", "studio"),)
    waited = samples["broker_queue_wait_seconds_sum", studio]
    assert SHIFT_S <= waited < SHIFT_S + PATIENCE_S
    assert samples["broker_queue_wait_seconds_count", studio] == 1
    assert samples["broker_queue_wait_seconds_bucket", (("le", "15.0"), ("team", "studio"))] == 0
    assert samples["broker_queue_wait_seconds_bucket", (("le", "+Inf"), ("team", "studio"))] == 1
    assert ("broker_queue_wait_seconds_count", (("team", "growth"),)) not in samples  # still waiting
    # The running job, queued no longer, is observed once: a later write to it adds nothing.
    assert (await client.delete(f"/v1/jobs/{jobs['studio']}", headers=auth(STUDIO_KEY))).status == 202
    await wait_for_status(client, jobs["growth"], "running")
    again = await scrape(client)
    assert again["broker_queue_wait_seconds_count", studio] == 1
    assert again["broker_queue_wait_seconds_count", (("team", "growth"),)] == 1
    assert (await client.delete(f"/v1/jobs/{jobs['growth']}", headers=auth(GROWTH_KEY))).status == 202
    await wait_for_status(client, jobs["growth"], "cancelled")
    assert await client.app[RUNNER].slots.in_use() == {}


async def test_providers_show_each_queue_to_the_admin_and_a_team_its_own_row(queued: Any) -> None:
    client, _, _ = queued
    admin = await (await client.get("/v1/providers", headers=auth(ADMIN_KEY))).json()
    cheap, dear = admin["providers"]
    assert (cheap["provider"], cheap["max_concurrency"], cheap["in_flight"], cheap["waiting"]) == (
        "cheap",
        1,
        1,
        2,
    )
    assert cheap["teams"] == [
        {"team": "growth", "waiting": 1, "in_use": 1, "share": 1.0},
        {"team": "studio", "waiting": 1, "in_use": 0, "share": 0.0},
    ]
    assert (dear["waiting"], dear["teams"]) == (0, [])
    studio = await (await client.get("/v1/providers", headers=auth(STUDIO_KEY))).json()
    cheap = studio["providers"][0]
    assert cheap["waiting"] == 2 and cheap["in_flight"] == 1  # the totals, as any key sees them
    assert cheap["teams"] == [{"team": "studio", "waiting": 1, "in_use": 0, "share": 0.0}]


def test_a_team_s_share_is_of_the_slots_in_use() -> None:
    rows = team_queues({"a": 3, "c": 0}, {"a": 1, "b": 3})
    assert [(r.team, r.waiting, r.in_use, r.share) for r in rows] == [("a", 3, 1, 0.25), ("b", 0, 3, 0.75)]
    assert [(r.team, r.share) for r in team_queues({"a": 2}, {})] == [("a", None)]
