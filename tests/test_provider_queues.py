"""Provider queues (`broker.jobs.queues`): who gets a freed slot, in both homes — this process's
`LocalSlots` and Redis's `RedisSlots` shared by replicas — by weighted fair share across teams, FIFO
and interactive-before-batch within a team, each grant waking its job and holding its slot."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from broker.config import ProviderConfig
from broker.jobs.capacity import Capacity
from broker.jobs.queues import GRANT_S, QueueView, Seat, predicted_wait_s
from broker.jobs.redis_capacity import RedisSlots
from broker.jobs.slots import LocalSlots, Slots
from broker.request_types import Priority
from broker.store.redis import RedisStore
from tests.support.adapters import FakeTime

Homes = Callable[[int], list[Slots]]
TTL_S = 1e6  # slots and grants the tests hold outlive every render they model


class Woken:
    """The wake callback: which jobs each grant woke, in order."""

    def __init__(self) -> None:
        self.jobs: list[str] = []

    async def __call__(self, provider: str, job_ids: list[str]) -> None:
        self.jobs += job_ids


@pytest.fixture(params=["local", "redis"])
async def home(request: pytest.FixtureRequest, replicas: list[RedisStore]) -> AsyncIterator[Any]:
    """(time, woken, slots): three handles on one home of the slots (three replicas on Redis; one
    process's slots, three times, in memory), each following a provider `p` capped at 4."""
    time, woken = FakeTime(), Woken()
    if request.param == "local":
        shared = LocalSlots(Capacity(time.clock))
        pools: list[Slots] = [shared, shared, shared]
    else:
        pools = [RedisSlots(store, time.clock) for store in replicas]
    for pool in pools:
        pool.follow({"p": ProviderConfig(max_concurrency=4)}, ["a", "b", "c"])
        pool.on_grant(woken)
    yield time, woken, pools


async def fill(
    pools: list[Slots], team: str, count: int, *, start: int = 0, provider: str = "p", **seat: Any
) -> list[bool]:
    taken = []
    for i in range(start, start + count):
        job = Seat(f"{team}{i}", team, since=1000.0 + i, **seat)
        taken.append(await pools[i % 3].try_acquire(provider, f"att_{team}{i}", job, TTL_S))
    return taken


async def run_one(
    home: Any, held: list[str], ends: random.Random | None = None, provider: str = "p", step_s: float = 15.0
) -> str:
    """`step_s` passes (4 slots of 60 s renders: one ends every 15 s), then the oldest running attempt
    ends (or one drawn by `ends`: renders of uneven length); the job its slot is granted to takes it.
    Returns that job."""
    time, woken, pools = home
    time.now += step_s
    ended = held.pop(ends.randrange(len(held)) if ends else 0)
    before = len(woken.jobs)
    await pools[1].release(provider, ended)
    assert len(woken.jobs) == before + 1, "a freed slot wakes exactly one queued job"
    job = woken.jobs[-1]
    team = job.rstrip("0123456789")
    assert await pools[2].try_acquire(provider, f"att_{job}", Seat(job, team), TTL_S)
    held.append(f"att_{job}")
    return job


async def test_a_team_arriving_behind_another_s_backlog_gets_the_next_slots(home: Any) -> None:
    _, _, pools = home
    assert await fill(pools, "a", 30) == [True] * 4 + [False] * 26
    assert await fill(pools, "b", 2) == [False, False]  # queued behind a's 26
    held = [f"att_a{i}" for i in range(4)]
    # b holds no slot: the next two freed slots go to b's two jobs, then a's queue goes on in order.
    assert [await run_one(home, held) for _ in range(4)] == ["b0", "b1", "a4", "a5"]


async def test_a_slot_granted_to_a_queued_job_is_not_taken_by_a_newcomer(home: Any) -> None:
    time, woken, pools = home
    await fill(pools, "a", 5)
    await pools[0].release("p", "att_a0")
    assert woken.jobs == ["a4"] and await pools[1].granted("p", "a4")
    assert not await pools[2].try_acquire("p", "att_new", Seat("c9", "c", since=1.0), 600)  # c queues
    time.now += GRANT_S + 1  # a4 never came for it: the grant lapses and goes by the rule again
    assert not await pools[0].granted("p", "a4")
    assert not await pools[1].try_acquire("p", "att_late", Seat("b9", "b", since=2.0), 600)
    # Teams b and c hold no slot: the lapsed slot goes to one of them (b's job is the older), not to a.
    assert woken.jobs[-1] in {"b9", "c9"} and await pools[0].granted("p", woken.jobs[-1])


async def test_interactive_goes_before_batch_within_a_team_then_fifo(home: Any) -> None:
    _, _, pools = home
    await fill(pools, "a", 4)
    await fill(pools, "a", 2, start=10, priority=Priority.BATCH)
    await fill(pools, "a", 2, start=20)
    held = [f"att_a{i}" for i in range(4)]
    assert [await run_one(home, held) for _ in range(4)] == ["a20", "a21", "a10", "a11"]


async def test_weights_three_to_one_share_the_grants_three_to_one(home: Any) -> None:
    _, _, pools = home
    await fill(pools, "a", 200, weight=3.0)
    await fill(pools, "b", 200, weight=1.0)
    held = [f"att_a{i}" for i in range(4)]
    granted = [await run_one(home, held) for _ in range(80)]
    share = sum(job.startswith("a") for job in granted) / len(granted)
    assert 0.70 <= share <= 0.80, share


async def test_a_team_under_its_guaranteed_slots_goes_first(home: Any) -> None:
    _, _, pools = home
    await fill(pools, "a", 10)
    await fill(pools, "b", 3, guaranteed=2)
    await fill(pools, "c", 3)
    held = [f"att_a{i}" for i in range(4)]
    first = [await run_one(home, held) for _ in range(2)]
    assert first == ["b0", "b1"]  # b is under its 2 guaranteed slots, c under none


async def test_a_job_that_leaves_the_queue_passes_its_grant_on(home: Any) -> None:
    _, woken, pools = home
    await fill(pools, "a", 6)
    await pools[0].release("p", "att_a0")
    assert woken.jobs == ["a4"]
    await pools[1].leave("p", Seat("a4", "a"))  # cancelled, or moved to another route
    assert woken.jobs == ["a4", "a5"] and await pools[2].granted("p", "a5")
    assert await pools[0].waiting("p") == 1 and await pools[0].depths() == {"p": {"a": 1}}


async def test_a_quote_sees_the_jobs_ahead_under_the_fair_share(home: Any) -> None:
    _, _, pools = home
    await fill(pools, "a", 24)  # 4 running, 20 waiting
    views = await pools[0].views(["p", "unlisted"], Seat("new", "a", since=5000.0))
    assert list(views) == ["p"]
    view = views["p"]
    assert (view.cap, view.busy, view.waiting, view.team_ahead) == (4, 4, 20, 20)
    # Behind a's 20 jobs, with 4 slots of 60 s renders: 21 slots to free, 5.25 renders' time.
    assert predicted_wait_s(view, 60.0) == pytest.approx(21 * 60 / 4)
    fresh = (await pools[1].views(["p"], Seat("new", "b", since=5000.0)))["p"]
    assert fresh.team_ahead == 0 and predicted_wait_s(fresh, 60.0) == pytest.approx(15.0)


def test_a_free_slot_means_no_wait_and_others_stretch_a_team_s_turn() -> None:
    assert predicted_wait_s(QueueView(10, 8, 0, 0, 1.0, 0.0), 75.0) == 0.0
    mine = QueueView(cap=10, busy=10, waiting=40, team_ahead=10, team_weight=1.0, waiting_weight=1.0)
    assert mine.ahead() == 20  # another team takes every other slot meanwhile
    assert predicted_wait_s(mine, 75.0) == pytest.approx(21 * 75 / 10)


async def test_slots_in_use_are_counted_per_team_and_only_for_capped_providers(home: Any) -> None:
    _, woken, pools = home
    assert await fill(pools, "a", 3) == [True] * 3
    assert await fill(pools, "b", 3) == [True, False, False]
    await pools[0].hold("u", "att_u", Seat("u0", "c"), 600)  # a provider with no cap: not counted
    assert await pools[1].in_use() == {"p": {"a": 3, "b": 1}}
    assert await pools[2].depths() == {"p": {"b": 2}}
    await pools[0].release("p", "att_a0")
    assert woken.jobs[-1] == "b1"  # granted, not yet in use: a grant is no attempt at the provider
    assert await pools[1].in_use() == {"p": {"a": 2, "b": 1}}
    assert await pools[2].try_acquire("p", "att_b1", Seat("b1", "b"), 600)
    assert await pools[0].in_use() == {"p": {"a": 2, "b": 2}}
    for attempt in ("att_a1", "att_a2", "att_b0", "att_b1"):
        await pools[1].release("p", attempt)
    assert await pools[2].in_use() == {}


async def test_slots_a_team_took_alone_do_not_cost_it_its_share_later(home: Any) -> None:
    _, _, pools = home
    for pool in pools:  # ten slots among three teams: one is always left over for the tie-break
        pool.follow({"p": ProviderConfig(max_concurrency=4), "q": ProviderConfig(max_concurrency=10)}, "abc")
    await fill(pools, "a", 300, provider="q")  # a alone first: it takes all 10 slots, then queues
    await fill(pools, "b", 300, provider="q")
    await fill(pools, "c", 300, provider="q")
    held = [f"att_a{i}" for i in range(10)]
    ends = random.Random(7)  # renders of uneven length: a random one of the ten ends each time
    occupancy = dict.fromkeys("abc", 0)
    for step in range(400):
        await run_one(home, held, ends, provider="q")
        if step >= 40:  # once the slots a took alone have ended
            for attempt in held:
                occupancy[attempt.removeprefix("att_")[0]] += 1
    total = sum(occupancy.values())
    shares = {team: count / total for team, count in occupancy.items()}
    assert all(0.31 <= share <= 0.36 for share in shares.values()), shares


async def test_a_late_team_s_jobs_all_start_in_the_next_round_even_when_they_fill_the_cap(home: Any) -> None:
    _, _, pools = home
    await fill(pools, "a", 200)
    held = [f"att_a{i}" for i in range(4)]
    assert {await run_one(home, held) for _ in range(40)} <= {f"a{i}" for i in range(200)}  # ten rounds
    await fill(pools, "b", 4)
    # b's four jobs take the four slots freed in the next round (an equal split would start two of
    # them a round later); then a's queue goes on.
    assert [await run_one(home, held) for _ in range(6)] == ["b0", "b1", "b2", "b3", "a44", "a45"]


async def test_a_team_idle_for_long_is_served_ahead_for_a_round_not_for_its_idle_time(home: Any) -> None:
    _, _, pools = home
    await fill(pools, "a", 300)
    await fill(pools, "c", 300)
    held = [f"att_a{i}" for i in range(4)]
    for _ in range(100):  # 25 rounds of a and c while b is idle
        await run_one(home, held)
    await fill(pools, "b", 300)
    granted = [await run_one(home, held) for _ in range(36)]
    teams = [job[0] for job in granted]
    assert teams[:3] == ["b"] * 3 and teams[:8].count("b") <= 5, teams  # about a round ahead...
    later = teams[8:]
    assert 0.25 <= later.count("b") / len(later) <= 0.42, teams  # ...then a third, not 25 rounds of all


async def test_slots_freed_at_once_are_spread_across_teams_by_the_hold_each_is_promised(home: Any) -> None:
    _, woken, pools = home
    await fill(pools, "a", 100)
    await fill(pools, "b", 100)
    held = [f"att_a{i}" for i in range(4)]
    for _ in range(16):
        await run_one(home, held)
    before = len(woken.jobs)
    pools[0].follow({"p": ProviderConfig(max_concurrency=8)}, ["a", "b", "c"])  # four slots at once
    for _ in range(20):
        if len(woken.jobs) >= before + 4:
            break
        await asyncio.sleep(0.01)
    teams = sorted(job[0] for job in woken.jobs[before:])
    assert teams == ["a", "a", "b", "b"], woken.jobs[before:]
