"""Provider health: the circuit breaker's states on a fake clock, observed latency, and both as quotes
show them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from adapters.errors import ContentRejected, ProviderUnavailable, RateLimited
from broker.api.app import create_app
from broker.appkeys import RUNNER
from broker.errors import InvalidRequest
from broker.jobs.provider_health import (
    BreakerSettings,
    BreakerState,
    CircuitBreaker,
    LatencyTracker,
    ProviderHealth,
)
from broker.settings import Settings
from tests.support.adapters import FakeTime
from tests.support.api import wait_for_status
from tests.support.deployment import TEST_ENV, auth, fake_config, fast_sleep
from tests.support.fakes import FakeProvider, Script

SETTINGS = BreakerSettings(window_s=60, min_calls=4, failure_ratio=0.5, cooldown_s=30, probe_timeout_s=300)


def breaker(time: FakeTime) -> CircuitBreaker:
    return CircuitBreaker(SETTINGS, time.clock)


def state(circuit: CircuitBreaker) -> BreakerState:
    """Read afresh each time: the state moves with the clock."""
    return circuit.state


def test_opens_when_the_failure_share_reaches_the_ratio_over_enough_calls() -> None:
    time = FakeTime()
    circuit = breaker(time)
    for ok in (False, False, False):
        circuit.record(ok)
    assert state(circuit) is BreakerState.CLOSED  # three calls: below min_calls
    circuit.record(True)
    assert state(circuit) is BreakerState.OPEN  # 3 of 4 failed
    reason = circuit.blocked()
    assert reason is not None and reason.startswith("circuit open: 3 of the last 4 attempts failed")


def test_stays_closed_while_most_calls_succeed() -> None:
    circuit = breaker(FakeTime())
    for ok in (True, False, True, True, False, True, True):
        circuit.record(ok)
    assert state(circuit) is BreakerState.CLOSED and circuit.blocked() is None


def test_failures_older_than_the_window_do_not_count() -> None:
    time = FakeTime()
    circuit = breaker(time)
    for _ in range(3):
        circuit.record(False)
    time.now += 61
    circuit.record(False)
    assert state(circuit) is BreakerState.CLOSED  # only one failure is in the window


def test_half_open_lets_one_probe_through_and_its_success_closes() -> None:
    time = FakeTime()
    circuit = breaker(time)
    for _ in range(4):
        circuit.record(False)
    time.now += 29
    assert state(circuit) is BreakerState.OPEN
    time.now += 1
    assert state(circuit) is BreakerState.HALF_OPEN and circuit.blocked() is None
    circuit.started()
    assert circuit.blocked() == "circuit half-open: a probe attempt is in flight"
    circuit.record(True)
    assert state(circuit) is BreakerState.CLOSED and circuit.blocked() is None


def test_a_failed_probe_opens_the_circuit_for_another_cooldown() -> None:
    time = FakeTime()
    circuit = breaker(time)
    for _ in range(4):
        circuit.record(False)
    time.now += 30
    circuit.started()
    circuit.record(False)
    assert state(circuit) is BreakerState.OPEN
    time.now += 30
    assert state(circuit) is BreakerState.HALF_OPEN


def test_a_probe_that_never_reports_stops_blocking_after_its_timeout() -> None:
    time = FakeTime()
    circuit = breaker(time)
    for _ in range(4):
        circuit.record(False)
    time.now += 30
    circuit.started()
    time.now += 299
    assert circuit.blocked() is not None
    time.now += 1
    assert circuit.blocked() is None


def test_input_rejections_count_as_successes_and_our_own_errors_not_at_all() -> None:
    health = ProviderHealth(FakeTime().clock, SETTINGS)
    for _ in range(4):
        health.failed("p", ContentRejected("moderated", provider="p"))
        health.failed("p", InvalidRequest("the image would not decode"))
    assert health.states()["p"] is BreakerState.CLOSED
    for _ in range(4):
        health.failed("p", RateLimited("busy", provider="p"))
    assert health.states()["p"] is BreakerState.OPEN  # 4 of 8 failed
    assert set(health.unavailable()) == {"p"}


def test_latency_is_an_exponentially_weighted_average_in_whole_seconds() -> None:
    tracker = LatencyTracker(alpha=0.5)
    assert tracker.expected() == {}
    tracker.observe("p/m", 10)
    tracker.observe("p/m", 20)
    tracker.observe("q/n", 0.2)
    assert tracker.expected() == {"p/m": 15, "q/n": 1}


async def quote(client: Any, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/quotes", json={"prompt": "a pan", **body}, headers=auth())
    assert response.status == 200, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


async def test_repeated_failures_open_the_circuit_and_quotes_say_so(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    providers["cheap"].script.submit_error = ProviderUnavailable("503", provider="cheap", status=503)
    client = await make_client()
    for _ in range(BreakerSettings().min_calls):
        before = await quote(client)
        assert before["chosen"]["provider"] == "cheap"
        job = await (await client.post("/v1/jobs", json={"prompt": "a pan"}, headers=auth())).json()
        await wait_for_status(client, job["id"], "succeeded", "failed")
    after = await quote(client)
    assert after["chosen"]["provider"] == "dear"
    reasons = {r["provider"]: r["reasons"] for r in after["rejected"]}
    assert reasons["cheap"][0].startswith("circuit open: 5 of the last 5 attempts failed")
    job = await (await client.post("/v1/jobs", json={"prompt": "a pan"}, headers=auth())).json()
    assert job["route"]["provider"] == "dear"  # submits now skip the open circuit
    done = await wait_for_status(client, job["id"], "succeeded", "failed")
    assert [a["provider"] for a in done["attempts"]] == ["dear"]


async def test_observed_latency_replaces_the_catalogs_in_quotes(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    client = await make_client()
    fast = {"constraints": {"max_latency_s": 10}}
    before = await quote(client, **fast)
    assert before["chosen"] is None  # the catalog says 30 s for every route
    job = await (await client.post("/v1/jobs", json={"prompt": "a pan"}, headers=auth())).json()
    await wait_for_status(client, job["id"], "succeeded")
    after = await quote(client, **fast)
    assert after["chosen"]["provider"] == "cheap"
    assert after["chosen"]["expected_latency_s"] < 10  # the fake renders in well under a second
    assert [r["provider"] for r in after["rejected"]] == ["dear"]  # no data yet: still 30 s


async def test_after_the_cooldown_one_probe_goes_through_and_its_success_closes_the_circuit(
    aiohttp_client: Any, tmp_path: Path, providers: dict[str, FakeProvider]
) -> None:
    fake = FakeTime(start=time.time())
    settings = Settings(store_url=f"sqlite:///{tmp_path}/broker.db", data_dir=tmp_path / "data", workers=2)
    factories = {name: provider.build for name, provider in providers.items()}
    app = create_app(
        settings, fake_config(), env=TEST_ENV, factories=factories, clock=fake.clock, sleep=fast_sleep
    )
    client = await aiohttp_client(app)
    cheap = providers["cheap"]
    cheap.script.submit_error = ProviderUnavailable("503", provider="cheap", status=503)
    for _ in range(BreakerSettings().min_calls):
        job = await (await client.post("/v1/jobs", json={"prompt": "a pan"}, headers=auth())).json()
        await wait_for_status(client, job["id"], "succeeded")
    assert (await quote(client))["chosen"]["provider"] == "dear"

    fake.now += BreakerSettings().cooldown_s
    cheap.script = Script(polls_to_finish=10**6)  # healthy again, and the probe stays in flight
    probe = await (await client.post("/v1/jobs", json={"prompt": "probe"}, headers=auth())).json()
    assert probe["route"]["provider"] == "cheap"
    await wait_for_status(client, probe["id"], "running")
    while not cheap.submits:
        await asyncio.sleep(0.01)
    during = await quote(client)
    assert during["chosen"]["provider"] == "dear"
    assert {r["provider"]: r["reasons"] for r in during["rejected"]}["cheap"] == [
        "circuit half-open: a probe attempt is in flight"
    ]
    cheap.script.polls_to_finish = 1
    done = await wait_for_status(client, probe["id"], "succeeded", "failed")
    assert [a["provider"] for a in done["attempts"]] == ["cheap"]
    assert (await quote(client))["chosen"]["provider"] == "cheap"  # closed again
    assert app[RUNNER].health.states()["cheap"] is BreakerState.CLOSED
