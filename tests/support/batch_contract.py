"""The batch part of the store contract (`store_contract.py` takes these cases in): a batch and its
jobs, idempotency by team and key, bulk reads, the all-or-none reservation of every item, and a
batch's expiry once none of its jobs is left."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from broker.schema import JobStatus
from broker.store import BudgetWindow, IdempotencyConflict, Store
from broker.store.batches import BatchExpiry, BatchRecord
from broker.store.retention import Expiry
from tests.support.factories import job_record

CREATED = datetime(2026, 11, 21, tzinfo=UTC)


def _batch(
    batch_id: str,
    job_ids: list[str],
    *,
    key: str | None = None,
    digest: str = "h1",
    created_at: datetime = CREATED,
) -> BatchRecord:
    return BatchRecord(
        id=batch_id,
        team="growth",
        created_at=created_at,
        job_ids=job_ids,
        estimated_cost_usd="0.300000",
        request_hash=digest,
        idempotency_key=key,
    )


async def test_batch_creates_its_jobs_and_reads_them_back_in_order(store: Store) -> None:
    jobs = [job_record(prompt=f"item {i}") for i in range(3)]
    batch = _batch("bat_1", [job.id for job in reversed(jobs)], key="b1")
    stored, created = await store.create_batch(batch, jobs)
    assert created and stored == batch
    assert await store.get_batch("bat_1") == batch
    assert await store.get_batch("bat_missing") is None
    found = await store.get_jobs([*batch.job_ids, "job_missing"])
    assert [r.id if r else None for r in found] == [*batch.job_ids, None]
    assert found[0] is not None and found[0].job.request.prompt == "item 2"
    assert await store.find_idempotent_batch("growth", "b1") == batch
    assert await store.find_idempotent_batch("studio", "b1") is None


async def test_batch_idempotency_key_returns_the_first_batch_or_conflicts(store: Store) -> None:
    first_jobs = [job_record() for _ in range(2)]
    first = _batch("bat_1", [job.id for job in first_jobs], key="k")
    await store.create_batch(first, first_jobs)
    again_jobs = [job_record() for _ in range(2)]
    same, created = await store.create_batch(_batch("bat_2", [j.id for j in again_jobs], key="k"), again_jobs)
    assert not created and same == first
    # The replay created none of its own jobs.
    assert await store.get_jobs([j.id for j in again_jobs]) == [None, None]
    with pytest.raises(IdempotencyConflict):
        await store.create_batch(_batch("bat_3", [], key="k", digest="other body"), [])
    assert await store.get_batch("bat_3") is None


async def test_batch_reservation_is_all_or_none_over_the_sum(store: Store) -> None:
    day, month = BudgetWindow("t:day", 100), BudgetWindow("t:month", 1_000)
    refused = await store.reserve_budgets({"job-a": 60, "job-b": 50}, [day, month])
    assert not refused.ok and refused.remaining_micros == {"t:day": 100, "t:month": 1_000}
    assert await store.budget_usage(["t:day", "t:month"]) == {"t:day": (0, 0), "t:month": (0, 0)}
    assert await store.open_reservations(float("inf")) == []
    taken = await store.reserve_budgets({"job-a": 60, "job-b": 30}, [day, month])
    assert taken.ok and taken.remaining_micros == {"t:day": 10, "t:month": 910}
    assert sorted(await store.open_reservations(float("inf"))) == ["job-a", "job-b"]
    # Each job's reservation is its own: settling one books it and releases only its part.
    await store.settle_budget("job-a", 20)
    assert await store.budget_usage(["t:day"]) == {"t:day": (20, 30)}
    await store.settle_budget("job-b", 0)
    assert await store.budget_usage(["t:day", "t:month"]) == {"t:day": (20, 0), "t:month": (20, 0)}


async def test_batch_expires_only_once_none_of_its_jobs_is_left(store: Store) -> None:
    jobs = [job_record(status=JobStatus.SUCCEEDED) for _ in range(2)]
    batch = _batch("bat_1", [job.id for job in jobs], key="k")
    newer = _batch("bat_2", [], created_at=CREATED + timedelta(days=1))
    await store.create_batch(batch, jobs)
    await store.create_batch(newer, [])
    assert await store.batch_teams() == ["growth"]
    # The index: by creation time, oldest first, paged; none created before the first.
    later = CREATED + timedelta(days=2)
    assert [b.id for b in await store.old_batches("growth", later, limit=10)] == ["bat_1", "bat_2"]
    assert [b.id for b in await store.old_batches("growth", later, limit=1, skip=1)] == ["bat_2"]
    assert await store.old_batches("growth", CREATED, limit=10) == []
    assert await store.old_batches("studio", later, limit=10) == []
    # Kept while any of its jobs is stored.
    assert await store.expire_batch(batch) is BatchExpiry.JOBS_LEFT
    assert await store.expire_job(jobs[0], []) is Expiry.EXPIRED
    assert await store.expire_batch(batch) is BatchExpiry.JOBS_LEFT
    assert await store.get_batch("bat_1") == batch
    assert await store.expire_job(jobs[1], []) is Expiry.EXPIRED
    # Then deleted with its key and its index entry, once: a second sweep finds it gone.
    assert await store.expire_batch(batch) is BatchExpiry.EXPIRED
    assert await store.expire_batch(batch) is BatchExpiry.GONE
    assert await store.get_batch("bat_1") is None
    assert await store.find_idempotent_batch("growth", "k") is None
    assert [b.id for b in await store.old_batches("growth", later, limit=10)] == ["bat_2"]
    # The key makes a new batch now.
    again, created = await store.create_batch(_batch("bat_3", [], key="k"), [])
    assert created and again.id == "bat_3"
    assert await store.find_idempotent_batch("growth", "k") == again
