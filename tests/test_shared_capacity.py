"""Capacity slots and circuit breakers in Redis: replicas (separate store clients on one prefix) count
against one limit, share one breaker verdict, and send at most one half-open probe."""

from __future__ import annotations

from adapters.errors import ProviderUnavailable
from broker.config import ProviderConfig
from broker.jobs.provider_health import BreakerSettings, ProviderHealth
from broker.jobs.queues import Seat
from broker.jobs.redis_capacity import RedisSlots
from broker.jobs.redis_circuits import RedisCircuits
from broker.store.redis import RedisStore
from tests.support.adapters import FakeTime


async def test_three_replicas_take_no_more_slots_than_the_limit(replicas: list[RedisStore]) -> None:
    time = FakeTime()
    slots = [RedisSlots(store, time.clock) for store in replicas]
    for pool in slots:
        pool.follow({"runway": ProviderConfig(max_concurrency=2)})
    taken = [
        await slots[i % 3].try_acquire("runway", f"att_{i}", Seat(f"job_{i}", "t", since=i), 60)
        for i in range(5)
    ]
    assert taken == [True, True, False, False, False]
    assert await slots[2].saturated() == {"runway": "provider runway at capacity (2 of 2 running)"}
    assert await slots[1].try_acquire(
        "runway", "att_0", Seat("job_0", "t"), 60
    )  # a resend holds its own slot
    await slots[1].release("runway", "att_0")
    # The freed slot is granted to the queue's first job (job_2), whichever replica asks next.
    assert not await slots[2].try_acquire("runway", "att_9", Seat("job_9", "t"), 60)
    assert await slots[0].try_acquire("runway", "att_2", Seat("job_2", "t"), 60)


async def test_a_slot_nobody_renews_lapses(replicas: list[RedisStore]) -> None:
    time = FakeTime()
    a, b = RedisSlots(replicas[0], time.clock), RedisSlots(replicas[1], time.clock)
    for pool in (a, b):
        pool.follow({"runway": ProviderConfig(max_concurrency=1)})
    assert await a.try_acquire("runway", "att_dead", Seat("job_1", "t"), 30)  # its replica dies after this
    time.now += 20
    assert not await b.try_acquire("runway", "att_2", Seat("job_2", "t"), 30)
    await a.hold("runway", "att_dead", Seat("job_1", "t"), 30)  # renewed at a poll: still held at 45
    time.now += 25
    assert not await b.try_acquire("runway", "att_2", Seat("job_2", "t"), 30)
    time.now += 10  # no poll renewed it past 50
    assert await b.try_acquire("runway", "att_2", Seat("job_2", "t"), 30)


async def test_the_submit_rate_is_one_rolling_minute_for_all_replicas(replicas: list[RedisStore]) -> None:
    time = FakeTime()
    slots = [RedisSlots(store, time.clock) for store in replicas[:2]]
    for pool in slots:
        pool.follow({"fal": ProviderConfig(requests_per_minute=2)})
    assert await slots[0].try_acquire("fal", "a1", Seat("j1", "t"), 60)
    time.now += 10
    assert await slots[1].try_acquire("fal", "a2", Seat("j2", "t"), 60)
    assert not await slots[0].try_acquire("fal", "a3", Seat("j3", "t"), 60)
    assert await slots[1].free_in("fal") == 50
    time.now += 50
    assert await slots[0].try_acquire("fal", "a3", Seat("j3", "t"), 60)


async def test_replicas_share_one_breaker_and_one_probe(replicas: list[RedisStore]) -> None:
    time = FakeTime()
    settings = BreakerSettings(min_calls=3, failure_ratio=0.5, cooldown_s=30)
    health = [
        ProviderHealth(time.clock, settings, shared=RedisCircuits(store, ["pixelapi"], settings))
        for store in replicas
    ]
    for index in range(3):  # one failure seen by each replica: together they open the breaker
        assert await health[index].admit("pixelapi")
        await health[index].report_failure("pixelapi", ProviderUnavailable("503", provider="pixelapi"))
    for replica in health:
        assert not await replica.admit("pixelapi")
        reason = (await replica.unavailable_now())["pixelapi"]
        assert reason.startswith("circuit open: 3 of the last 3 attempts failed")
    time.now += 31  # half-open: exactly one replica gets the probe
    admitted = [await replica.admit("pixelapi") for replica in health]
    assert admitted.count(True) == 1
    prober = health[admitted.index(True)]
    await prober.report_success("pixelapi", "pixelapi/m1", 12.0)
    assert all([await replica.admit("pixelapi") for replica in health])
    assert await health[0].unavailable_now() == {}
