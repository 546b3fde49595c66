"""The contract every `Store` implementation passes: each `test_*` coroutine takes an open store.

`tests/test_store_contract.py` runs every case on each store kind; `tests/test_store_redis.py` runs
them on a three-node Redis cluster."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from broker.schema import JobStatus
from broker.store import BudgetWindow, IdempotencyConflict, Store, VersionConflict
from tests.support.factories import job_record


async def test_create_and_get_round_trip(store: Store) -> None:
    record = job_record(prompt="pan left over the city")
    stored, created = await store.create_job(record)
    assert created
    fetched = await store.get_job(record.id)
    assert fetched == stored
    assert fetched is not None and fetched.job.request.prompt == "pan left over the city"
    assert await store.get_job("job_missing") is None


async def test_idempotency_key_returns_first_job_or_conflicts(store: Store) -> None:
    first, created = await store.create_job(job_record(idempotency_key="k1", prompt="one"))
    assert created
    again = job_record(idempotency_key="k1", prompt="one")
    same, created_again = await store.create_job(
        again.model_copy(update={"request_hash": first.request_hash})
    )
    assert not created_again and same.id == first.id
    with pytest.raises(IdempotencyConflict):
        await store.create_job(job_record(idempotency_key="k1", prompt="another body"))
    # The same key under another team is another job.
    other, created_other = await store.create_job(job_record(idempotency_key="k1", team="studio"))
    assert created_other and other.id != first.id


async def test_replace_is_compare_and_set(store: Store) -> None:
    record, _ = await store.create_job(job_record())
    winner = await store.replace_job(record.evolve(status=JobStatus.RUNNING))
    loser = await store.replace_job(record.evolve(status=JobStatus.CANCELLED))
    assert winner is not None and winner.version == record.version + 1
    assert loser is None
    current = await store.get_job(record.id)
    assert current is not None and current.status is JobStatus.RUNNING


async def test_concurrent_replaces_let_exactly_one_win(store: Store) -> None:
    record, _ = await store.create_job(job_record())
    results = await asyncio.gather(
        *(store.replace_job(record.evolve(status=JobStatus.RUNNING)) for _ in range(10))
    )
    assert sum(result is not None for result in results) == 1


async def test_claim_leases_oldest_job_once(store: Store) -> None:
    older, _ = await store.create_job(job_record())
    await store.create_job(job_record())
    now = 1_000.0
    first = await store.claim_job("worker-a", now, lease_s=30)
    second = await store.claim_job("worker-b", now, lease_s=30)
    third = await store.claim_job("worker-c", now, lease_s=30)
    assert first is not None and first.id == older.id and first.lease_owner == "worker-a"
    assert second is not None and second.id != older.id
    assert third is None


async def test_expired_lease_is_claimed_again(store: Store) -> None:
    await store.create_job(job_record())
    claimed = await store.claim_job("dead-worker", 1_000.0, lease_s=10)
    assert claimed is not None
    assert await store.claim_job("worker-b", 1_005.0, lease_s=10) is None
    reclaimed = await store.claim_job("worker-b", 1_011.0, lease_s=10)
    assert reclaimed is not None and reclaimed.id == claimed.id and reclaimed.lease_owner == "worker-b"


async def test_terminal_jobs_are_never_claimed(store: Store) -> None:
    record, _ = await store.create_job(job_record())
    done = await store.replace_job(record.evolve(status=JobStatus.SUCCEEDED))
    assert done is not None
    assert await store.claim_job("worker", 1_000.0, lease_s=10) is None


async def test_concurrent_claims_never_share_a_job(store: Store) -> None:
    for _ in range(5):
        await store.create_job(job_record())
    claims = await asyncio.gather(*(store.claim_job(f"w{i}", 1_000.0, 30) for i in range(12)))
    ids = [c.id for c in claims if c is not None]
    assert len(ids) == 5 and len(set(ids)) == 5


async def test_list_jobs_pages_newest_first_and_filters(store: Store) -> None:
    made = [(await store.create_job(job_record()))[0] for _ in range(5)]
    await store.create_job(job_record(team="studio"))
    page, cursor = await store.list_jobs(team="growth", limit=2)
    assert [r.id for r in page] == [made[4].id, made[3].id]
    assert cursor is not None
    rest, end = await store.list_jobs(team="growth", limit=10, cursor=cursor)
    assert [r.id for r in rest] == [made[2].id, made[1].id, made[0].id]
    assert end is None
    running = await store.replace_job(made[0].evolve(status=JobStatus.RUNNING))
    assert running is not None
    only_running, _ = await store.list_jobs(team="growth", status=JobStatus.RUNNING)
    assert [r.id for r in only_running] == [made[0].id]
    assert await store.count_jobs(JobStatus.QUEUED) == 5


async def test_jobs_created_between(store: Store) -> None:
    base = datetime(2026, 11, 1, tzinfo=UTC)
    inside = (await store.create_job(job_record(created_at=base + timedelta(hours=1))))[0]
    await store.create_job(job_record(created_at=base - timedelta(hours=1)))
    await store.create_job(job_record(created_at=base + timedelta(days=1)))
    found = await store.jobs_created_between(base, base + timedelta(days=1))
    assert [r.id for r in found] == [inside.id]


async def test_budget_reserve_is_all_or_nothing(store: Store) -> None:
    day, month = BudgetWindow("t:day", 100), BudgetWindow("t:month", 150)
    first = await store.reserve_budget("job-1", 80, [day, month])
    assert first.ok and first.remaining_micros == {"t:day": 20, "t:month": 70}
    second = await store.reserve_budget("job-2", 30, [day, month])
    assert not second.ok
    assert await store.budget_usage(["t:day", "t:month"]) == {"t:day": (0, 80), "t:month": (0, 80)}


async def test_budget_settle_books_actual_and_releases_rest(store: Store) -> None:
    window = BudgetWindow("t:day", 100)
    assert (await store.reserve_budget("job-1", 80, [window])).ok
    await store.settle_budget("job-1", 30)
    await store.settle_budget("job-1", 30)  # a second settle changes nothing
    assert await store.budget_usage(["t:day"]) == {"t:day": (30, 0)}
    assert (await store.reserve_budget("job-2", 70, [window])).ok
    assert not (await store.reserve_budget("job-3", 1, [window])).ok


async def test_concurrent_reservations_never_overspend(store: Store) -> None:
    window = BudgetWindow("t:day", 1_000)
    results = await asyncio.gather(*(store.reserve_budget(f"job-{i}", 100, [window]) for i in range(30)))
    assert sum(r.ok for r in results) == 10
    assert await store.budget_usage(["t:day"]) == {"t:day": (0, 1_000)}


async def test_policy_versions_are_compare_and_set_with_history(store: Store) -> None:
    at = datetime(2026, 11, 21, tzinfo=UTC)
    assert await store.get_policy("growth") is None
    v1 = await store.put_policy("growth", {"max_cost_usd": "1.00"}, expected_version=0, actor="ops", at=at)
    v2 = await store.put_policy("growth", {"max_cost_usd": "0.50"}, expected_version=1, actor="fin", at=at)
    assert (v1.version, v2.version) == (1, 2)
    assert v2.change == {"max_cost_usd": ["1.00", "0.50"]}
    with pytest.raises(VersionConflict):
        await store.put_policy("growth", {}, expected_version=1, actor="late", at=at)
    current = await store.get_policy("growth")
    assert current is not None and current.policy == {"max_cost_usd": "0.50"} and current.actor == "fin"
    history = await store.policy_history("growth")
    assert [h.version for h in history] == [1, 2]


async def test_repeated_reservation_adds_and_settle_releases_all(store: Store) -> None:
    window = BudgetWindow("t:day", 1_000)
    assert (await store.reserve_budget("job-1", 100, [window])).ok
    assert (await store.reserve_budget("job-1", 50, [window])).ok
    assert await store.budget_usage(["t:day"]) == {"t:day": (0, 150)}
    await store.settle_budget("job-1", 20)
    assert await store.budget_usage(["t:day"]) == {"t:day": (20, 0)}


async def test_duplicate_job_id_is_a_conflict(store: Store) -> None:
    record, _ = await store.create_job(job_record())
    with pytest.raises(VersionConflict):
        await store.create_job(record)


async def test_find_idempotent_job_by_team_and_key(store: Store) -> None:
    first, _ = await store.create_job(job_record(idempotency_key="order-7"))
    found = await store.find_idempotent_job("growth", "order-7")
    assert found is not None and found.id == first.id
    assert await store.find_idempotent_job("studio", "order-7") is None
    assert await store.find_idempotent_job("growth", "order-8") is None


async def test_open_reservations_lists_unsettled_jobs_until_settled(store: Store) -> None:
    window = BudgetWindow("t:day", 1_000)
    assert (await store.reserve_budget("job-1", 100, [window])).ok
    assert (await store.reserve_budget("job-2", 100, [window])).ok
    assert (await store.reserve_budget("job-1", 50, [window])).ok  # a top-up keeps its first time
    assert await store.open_reservations(time.time() + 1) == ["job-1", "job-2"]
    assert await store.open_reservations(time.time() - 3600) == []  # none made an hour ago
    await store.settle_budget("job-1", 20)
    assert await store.open_reservations(time.time() + 1) == ["job-2"]


async def test_reconcile_index_is_due_by_time_and_dropped(store: Store) -> None:
    await store.schedule_reconcile("job-1", 100.0)
    await store.schedule_reconcile("job-2", 50.0)
    assert await store.due_reconciles(99.0) == ["job-2"]
    assert await store.due_reconciles(100.0) == ["job-2", "job-1"]
    await store.schedule_reconcile("job-2", 500.0)  # asked again later
    assert await store.due_reconciles(100.0) == ["job-1"]
    await store.drop_reconcile("job-1")
    assert await store.due_reconciles(1_000.0) == ["job-2"]


async def test_settling_again_with_a_corrected_amount_books_the_difference(store: Store) -> None:
    window = BudgetWindow("t:day", 1_000)
    assert (await store.reserve_budget("job-1", 300, [window])).ok
    await store.settle_budget("job-1", 250)
    assert await store.budget_usage(["t:day"]) == {"t:day": (250, 0)}
    await store.settle_budget("job-1", 40)  # reconciled: the provider refunded most of it
    await store.settle_budget("job-1", 40)
    assert await store.budget_usage(["t:day"]) == {"t:day": (40, 0)}
    assert (await store.reserve_budget("job-1", 100, [window])).ok  # a later top-up, settled again
    await store.settle_budget("job-1", 90)
    assert await store.budget_usage(["t:day"]) == {"t:day": (90, 0)}


# Batches: their cases live in their own module, run here on every store kind.
from tests.support.batch_contract import (  # noqa: E402
    test_batch_creates_its_jobs_and_reads_them_back_in_order,
    test_batch_expires_only_once_none_of_its_jobs_is_left,
    test_batch_idempotency_key_returns_the_first_batch_or_conflicts,
    test_batch_reservation_is_all_or_none_over_the_sum,
)

__all__ = [
    "test_batch_creates_its_jobs_and_reads_them_back_in_order",
    "test_batch_expires_only_once_none_of_its_jobs_is_left",
    "test_batch_idempotency_key_returns_the_first_batch_or_conflicts",
    "test_batch_reservation_is_all_or_none_over_the_sum",
]
