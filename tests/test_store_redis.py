"""What only the Redis store must show: its key layout fits Redis Cluster, outages become
`StoreUnavailable` and heal by themselves, and a write whose reply was lost is never applied twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from broker.api.middleware import status_for
from broker.schema import JobStatus
from broker.store import BudgetWindow, StoreUnavailable
from broker.store.redis import RedisStore
from tests.support.deployment import REDIS_URL
from tests.support.factories import job_record
from tests.support.redis_proxy import TcpProxy, free_port, fresh_prefix, host_port
from tests.support.stores import open_redis_store

AT = datetime(2026, 11, 21, tzinfo=UTC)


@pytest.fixture
async def redis_store() -> AsyncIterator[RedisStore]:
    async with open_redis_store() as store:
        yield store


@pytest.fixture
async def proxied() -> AsyncIterator[tuple[RedisStore, TcpProxy]]:
    """A store that reaches Redis through a proxy, and the proxy."""
    proxy = TcpProxy(host_port(REDIS_URL))
    await proxy.start()
    prefix = fresh_prefix()
    store = RedisStore.from_url(proxy.url, prefix=prefix)
    await store.open()
    try:
        yield store, proxy
    finally:
        await store.close()
        if proxy.running:
            await proxy.stop()
        cleaner = RedisStore.from_url(REDIS_URL, prefix=prefix)
        await cleaner.open()
        await cleaner.drop_all_keys()
        await cleaner.close()


async def _all_keys(prefix: str) -> list[str]:
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        return [key async for key in client.scan_iter(match=f"{{{prefix}:*")]
    finally:
        await client.aclose()


# Key layout ---------------------------------------------------------------------------------------
async def test_every_key_sits_in_the_slot_of_its_scripts() -> None:
    prefix = fresh_prefix()
    store = RedisStore.from_url(REDIS_URL, prefix=prefix)
    await store.open()
    try:
        record, _ = await store.create_job(job_record(idempotency_key="k", team="growth"))
        await store.create_job(job_record(team="studio"))
        claimed = await store.claim_job("w1", 1_000.0, 30)
        assert claimed is not None
        await store.replace_job(claimed.evolve(status=JobStatus.SUCCEEDED))
        await store.reserve_budget(
            "job-1", 10, [BudgetWindow("growth:day", 100), BudgetWindow("x:month", 50)]
        )
        await store.settle_budget("job-1", 5)
        await store.reserve_budget("job-2", 10, [BudgetWindow("growth:day", 100)])
        await store.put_policy("growth", {"a": 1}, expected_version=0, actor="ops", at=AT)
        await store.put_policy("studio", {"a": 1}, expected_version=0, actor="ops", at=AT)

        keys = await _all_keys(prefix)
        families: dict[str, set[int]] = {}
        for key in keys:
            tag = key[1 : key.index("}")]
            families.setdefault(tag, set()).add(key_slot(key.encode()))
        assert set(families) == {
            f"{prefix}:jobs",
            f"{prefix}:budget",
            f"{prefix}:policy:growth",
            f"{prefix}:policy:studio",
        }
        # One slot per family: every script's keys share the slot of the keys it was given.
        assert all(len(slots) == 1 for slots in families.values())
        assert f"{{{prefix}:jobs}}:job:{record.id}" in keys
        assert f"{{{prefix}:budget}}:w:growth:day" in keys
    finally:
        await store.drop_all_keys()
        await store.close()


async def test_drop_all_keys_keeps_other_prefixes(redis_store: RedisStore) -> None:
    other = RedisStore.from_url(REDIS_URL, prefix=fresh_prefix())
    await other.open()
    try:
        kept, _ = await redis_store.create_job(job_record())
        dropped, _ = await other.create_job(job_record())
        await other.drop_all_keys()
        assert await other.get_job(dropped.id) is None
        assert await redis_store.get_job(kept.id) == kept
    finally:
        await other.close()


def test_prefix_may_not_break_hash_tags() -> None:
    with pytest.raises(ValueError, match="hash tags"):
        RedisStore.from_url(REDIS_URL, prefix="a}b")


# Indexes ------------------------------------------------------------------------------------------
async def test_transitions_move_jobs_between_status_indexes(redis_store: RedisStore) -> None:
    record, _ = await redis_store.create_job(job_record())
    running = await redis_store.replace_job(record.evolve(status=JobStatus.RUNNING))
    assert running is not None
    assert (
        await redis_store.count_jobs(JobStatus.QUEUED),
        await redis_store.count_jobs(JobStatus.RUNNING),
    ) == (
        0,
        1,
    )
    failed = await redis_store.replace_job(running.evolve(status=JobStatus.FAILED))
    assert failed is not None
    page, _ = await redis_store.list_jobs(team="growth", status=JobStatus.FAILED)
    assert [r.id for r in page] == [record.id]
    assert (await redis_store.list_jobs(status=JobStatus.RUNNING))[0] == []
    assert await redis_store.claim_job("w", 1_000.0, 10) is None


async def test_released_lease_is_claimable_at_once_and_renewed_lease_is_not(redis_store: RedisStore) -> None:
    await redis_store.create_job(job_record())
    claimed = await redis_store.claim_job("w1", 1_000.0, 30)
    assert claimed is not None and claimed.lease_until == 1_030.0
    renewed = await redis_store.replace_job(claimed.model_copy(update={"lease_until": 1_100.0}))
    assert renewed is not None
    assert await redis_store.claim_job("w2", 1_050.0, 30) is None
    released = await redis_store.replace_job(
        renewed.model_copy(update={"lease_owner": None, "lease_until": None})
    )
    assert released is not None
    again = await redis_store.claim_job("w2", 1_050.0, 30)
    assert again is not None and again.id == claimed.id and again.lease_owner == "w2"


async def test_lease_is_judged_by_each_claimers_clock(redis_store: RedisStore) -> None:
    first, _ = await redis_store.create_job(job_record())
    second, _ = await redis_store.create_job(job_record())
    assert (await redis_store.claim_job("a", 1_000.0, 10)) is not None  # first, until 1010
    assert (await redis_store.claim_job("b", 1_000.0, 20)) is not None  # second, until 1020
    # A claimer at 1025 sees both leases expired and takes the older job.
    late = await redis_store.claim_job("c", 1_025.0, 10)
    assert late is not None and late.id == first.id
    # A claimer whose clock reads 1015 still sees the second job's lease (until 1020) as live.
    assert await redis_store.claim_job("d", 1_015.0, 10) is None
    taken = await redis_store.claim_job("d", 1_021.0, 10)
    assert taken is not None and taken.id == second.id


async def test_jobs_created_between_filters_by_team(redis_store: RedisStore) -> None:
    growth, _ = await redis_store.create_job(job_record(team="growth", created_at=AT))
    await redis_store.create_job(job_record(team="studio", created_at=AT))
    found = await redis_store.jobs_created_between(AT, datetime(2026, 11, 22, tzinfo=UTC), team="growth")
    assert [r.id for r in found] == [growth.id]
    assert len(await redis_store.jobs_created_between(AT, datetime(2026, 11, 22, tzinfo=UTC))) == 2


async def test_lease_owner_survives_round_trip_even_when_empty(redis_store: RedisStore) -> None:
    record, _ = await redis_store.create_job(job_record())
    stored = await redis_store.replace_job(record.model_copy(update={"lease_owner": "", "lease_until": 5.5}))
    assert stored is not None
    fetched = await redis_store.get_job(record.id)
    assert fetched is not None and fetched.lease_owner == "" and fetched.lease_until == 5.5


async def test_empty_idempotency_key_is_still_a_key(redis_store: RedisStore) -> None:
    # As in SQLite, only None means "no key".
    first, _ = await redis_store.create_job(job_record(idempotency_key=""))
    again, created = await redis_store.create_job(job_record(idempotency_key=""))
    assert not created and again.id == first.id
    _, created_without_key = await redis_store.create_job(job_record())
    assert created_without_key


async def test_second_reservation_of_a_job_adds_to_its_first(redis_store: RedisStore) -> None:
    window = BudgetWindow("t:day", 100)
    assert (await redis_store.reserve_budget("job-1", 30, [window])).ok
    second = await redis_store.reserve_budget("job-1", 20, [window])
    assert second.ok and second.remaining_micros == {"t:day": 50}
    await redis_store.settle_budget("job-1", 10)
    assert await redis_store.budget_usage(["t:day"]) == {"t:day": (10, 0)}


async def test_three_replicas_share_budgets_and_claims_exactly(redis_store: RedisStore) -> None:
    # Separate clients (separate connection pools), as three broker processes would have.
    replicas = [RedisStore.from_url(REDIS_URL, prefix=redis_store.prefix) for _ in range(3)]
    for replica in replicas:
        await replica.open()
    try:
        window = BudgetWindow("growth:day", 1_000)
        reservations = await asyncio.gather(
            *(replicas[i % 3].reserve_budget(f"job-{i}", 100, [window]) for i in range(45))
        )
        assert sum(r.ok for r in reservations) == 10
        assert await redis_store.budget_usage(["growth:day"]) == {"growth:day": (0, 1_000)}
        for _ in range(20):
            await redis_store.create_job(job_record())
        claims = await asyncio.gather(*(replicas[i % 3].claim_job(f"r{i}", 1_000.0, 30) for i in range(30)))
        claimed = [c.id for c in claims if c is not None]
        assert len(claimed) == 20 and len(set(claimed)) == 20
    finally:
        for replica in replicas:
            await replica.close()


# Outages ------------------------------------------------------------------------------------------
@pytest.mark.timeout(15)
async def test_closed_port_is_store_unavailable_not_a_hang() -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", prefix=fresh_prefix())
    await store.open()
    try:
        calls = [
            store.ping(),
            store.get_job("job_x"),
            store.create_job(job_record()),
            store.claim_job("w", 1.0, 1.0),
            store.reserve_budget("job-1", 1, [BudgetWindow("t:day", 10)]),
            store.put_policy("growth", {}, expected_version=0, actor="ops", at=AT),
        ]
        for call in calls:
            with pytest.raises(StoreUnavailable) as caught:
                await call
            assert status_for(type(caught.value)) == 503
            assert "127.0.0.1" not in caught.value.message
    finally:
        await store.close()


@pytest.mark.timeout(15)
async def test_silent_server_times_out_as_store_unavailable() -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", prefix=fresh_prefix(), socket_timeout=0.2)
    await store.open()
    try:
        with pytest.raises(StoreUnavailable, match="TimeoutError"):
            await store.get_job("job_x")
    finally:
        await store.close()
        server.close()
        await server.wait_closed()


@pytest.mark.timeout(15)
async def test_store_recovers_by_itself_when_redis_returns(proxied: tuple[RedisStore, TcpProxy]) -> None:
    store, proxy = proxied
    record, _ = await store.create_job(job_record())
    await proxy.stop()
    with pytest.raises(StoreUnavailable):
        await store.get_job(record.id)
    with pytest.raises(StoreUnavailable):
        await store.claim_job("w", 1_000.0, 10)
    await proxy.start()
    assert await store.get_job(record.id) == record
    claimed = await store.claim_job("w", 1_000.0, 10)
    assert claimed is not None and claimed.id == record.id


# A reply lost after Redis ran the script: redis-py resends it, and the resend must change nothing.
async def test_lost_reply_to_replace_still_reports_the_write(proxied: tuple[RedisStore, TcpProxy]) -> None:
    store, proxy = proxied
    record, _ = await store.create_job(job_record())
    warm = await store.replace_job(record.evolve(status=JobStatus.RUNNING))  # loads the script
    assert warm is not None
    proxy.drop_next_reply = True
    done = await store.replace_job(warm.evolve(status=JobStatus.SUCCEEDED))
    assert done is not None and done.version == warm.version + 1
    assert await store.get_job(record.id) == done


async def test_lost_reply_to_claim_returns_the_same_job(proxied: tuple[RedisStore, TcpProxy]) -> None:
    store, proxy = proxied
    older, _ = await store.create_job(job_record())
    newer, _ = await store.create_job(job_record())
    assert await store.claim_job("warm", 1_000.0, 0.5) is not None  # loads the script
    proxy.drop_next_reply = True
    claimed = await store.claim_job("w1", 1_001.0, 30)
    other = await store.claim_job("w2", 1_001.0, 30)
    # The resent claim reported the job its first run took, so each job went to one claimer.
    assert claimed is not None and other is not None
    assert {claimed.id, other.id} == {older.id, newer.id}
    assert (await store.get_job(claimed.id)).lease_owner == "w1"  # type: ignore[union-attr]


async def test_lost_reply_to_reserve_reserves_once(proxied: tuple[RedisStore, TcpProxy]) -> None:
    store, proxy = proxied
    window = BudgetWindow("t:day", 100)
    assert (await store.reserve_budget("job-0", 10, [window])).ok
    proxy.drop_next_reply = True
    second = await store.reserve_budget("job-1", 60, [window])
    assert second.ok and second.remaining_micros == {"t:day": 30}
    assert await store.budget_usage(["t:day"]) == {"t:day": (0, 70)}


async def test_lost_reply_to_create_still_creates(proxied: tuple[RedisStore, TcpProxy]) -> None:
    store, proxy = proxied
    await store.create_job(job_record())  # loads the script
    proxy.drop_next_reply = True
    record, created = await store.create_job(job_record())
    assert created and await store.get_job(record.id) == record
    assert await store.count_jobs(JobStatus.QUEUED) == 2


async def test_lost_reply_to_policy_write_keeps_one_version(proxied: tuple[RedisStore, TcpProxy]) -> None:
    store, proxy = proxied
    await store.put_policy("growth", {"a": 1}, expected_version=0, actor="ops", at=AT)  # loads the script
    proxy.drop_next_reply = True
    v2 = await store.put_policy("growth", {"a": 2}, expected_version=1, actor="ops", at=AT)
    assert v2.version == 2
    assert [v.version for v in await store.policy_history("growth")] == [1, 2]


# Redis Cluster ------------------------------------------------------------------------------------
