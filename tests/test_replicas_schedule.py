"""Scheduling through the Redis `due` index: an unfinished job is in it at its next due time (or its
lease's end while a step holds it), leaves it when it ends, and is never taken from a live owner,
whichever replica asks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from broker.schema import JobStatus
from broker.store.redis import RedisStore
from tests.support.deployment import REDIS_URL
from tests.support.factories import job_record


@pytest.fixture
async def raw() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


def _due(store: RedisStore) -> str:
    return f"{{{store.prefix}:jobs}}:due"


async def test_job_is_due_until_it_ends(replicas: list[RedisStore], raw: aioredis.Redis) -> None:
    a = replicas[0]
    record, _ = await a.create_job(job_record())
    assert await raw.zscore(_due(a), record.id) == 0  # due at once
    claimed = await replicas[1].claim_job("replica-b", 1_000.0, 30)
    assert claimed is not None and claimed.id == record.id
    assert await raw.zscore(_due(a), record.id) == 1_030.0  # held until its lease ends
    assert await raw.hget(f"{{{a.prefix}:jobs}}:job:{record.id}", "o") == "=replica-b"
    done = await replicas[2].replace_job(
        claimed.evolve(status=JobStatus.SUCCEEDED).model_copy(
            update={"lease_owner": None, "lease_until": None}
        )
    )
    assert done is not None
    assert await raw.zcard(_due(a)) == 0
    assert await a.claim_job("replica-c", 2_000.0, 30) is None


async def test_dead_owners_job_moves_to_the_claimer(replicas: list[RedisStore]) -> None:
    a, b, c = replicas
    record, _ = await a.create_job(job_record())
    first = await b.claim_job("dead", 1_000.0, 10)
    assert first is not None
    assert await c.claim_job("alive", 1_009.0, 10) is None  # the lease still runs
    taken = await c.claim_job("alive", 1_011.0, 10)
    assert taken is not None and taken.id == record.id and taken.lease_owner == "alive"
    # The dead owner's late write loses: the version moved on.
    assert await b.replace_job(first.evolve(status=JobStatus.FAILED)) is None


async def test_a_parked_job_waits_for_its_due_time_on_every_replica(replicas: list[RedisStore]) -> None:
    a, b, c = replicas
    await a.create_job(job_record())
    held = await a.claim_job("step", 1_000.0, 10)
    assert held is not None
    parked = await a.replace_job(
        held.model_copy(update={"lease_owner": None, "lease_until": None, "due_at": 1_060.0})
    )
    assert parked is not None
    assert await a.next_due_at() == 1_060.0
    assert await b.claim_job("early", 1_059.0, 10) is None
    taken = await c.claim_job("on-time", 1_060.0, 10)
    assert taken is not None and taken.id == held.id


async def test_a_batch_claim_takes_the_longest_due_first_up_to_its_limit(replicas: list[RedisStore]) -> None:
    a, b, _ = replicas
    dues = [1_030.0, 1_010.0, 1_020.0, 2_000.0]
    ids = []
    for due in dues:
        record, _ = await a.create_job(job_record().model_copy(update={"due_at": due}))
        ids.append(record.id)
    first = await b.claim_due("batch", 1_500.0, 30, limit=2)
    assert [r.id for r in first] == [ids[1], ids[2]]
    rest = await b.claim_due("batch", 1_500.0, 30, limit=10)
    assert [r.id for r in rest] == [ids[0]]  # the job due at 2000 is not due yet


async def test_live_owner_renewing_keeps_its_job(replicas: list[RedisStore]) -> None:
    a, b, _ = replicas
    await a.create_job(job_record())
    held = await a.claim_job("owner", 1_000.0, 10)
    assert held is not None
    for now in (1_008.0, 1_016.0, 1_024.0):
        renewed = await a.replace_job(held.model_copy(update={"lease_until": now + 10}))
        assert renewed is not None
        held = renewed
        assert await b.claim_job("thief", now + 5, 10) is None


async def test_job_ended_before_its_first_claim_is_never_claimed(
    replicas: list[RedisStore], raw: aioredis.Redis
) -> None:
    a, b, _ = replicas
    cancelled, _ = await a.create_job(job_record())
    kept, _ = await a.create_job(job_record())
    assert await a.replace_job(cancelled.evolve(status=JobStatus.CANCELLED)) is not None
    claimed = await b.claim_job("w", 1_000.0, 30)
    assert claimed is not None and claimed.id == kept.id
    assert await b.claim_job("w", 1_000.0, 30) is None
    assert await raw.zcard(_due(a)) == 1  # only the claimed job is left


async def test_job_written_with_a_live_lease_waits_for_it_to_run_out(replicas: list[RedisStore]) -> None:
    a, b, _ = replicas
    record = job_record().model_copy(update={"lease_owner": "crashed", "lease_until": 1_050.0})
    await a.create_job(record)
    assert await b.claim_job("w", 1_000.0, 30) is None  # its lease is live
    assert await b.claim_job("w", 1_040.0, 30) is None
    taken = await b.claim_job("w", 1_051.0, 30)
    assert taken is not None and taken.id == record.id and taken.lease_owner == "w"


async def test_released_job_is_claimed_again_before_new_ones(replicas: list[RedisStore]) -> None:
    a, b, c = replicas
    older, _ = await a.create_job(job_record())
    await a.create_job(job_record())
    claimed = await b.claim_job("w1", 1_000.0, 30)
    assert claimed is not None and claimed.id == older.id
    released = await b.replace_job(
        claimed.evolve(status=JobStatus.RUNNING).model_copy(update={"lease_owner": None, "lease_until": None})
    )
    assert released is not None
    again = await c.claim_job("w2", 1_000.0, 30)
    assert again is not None and again.id == older.id and again.lease_owner == "w2"


async def test_many_claimers_on_three_replicas_take_each_job_once(replicas: list[RedisStore]) -> None:
    for _ in range(60):
        await replicas[0].create_job(job_record())
    claims = await asyncio.gather(*(replicas[i % 3].claim_job(f"r{i % 3}", 1_000.0, 30) for i in range(90)))
    ids = [c.id for c in claims if c is not None]
    assert len(ids) == 60 and len(set(ids)) == 60
