"""What only the Redis store must show: its key layout fits Redis Cluster, outages become
`StoreUnavailable` and heal by themselves, and a write whose reply was lost is never applied twice."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime

import pytest
import redis as syncredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ResponseError

from broker.schema import JobStatus
from broker.store import BudgetWindow, StoreUnavailable
from broker.store.redis import RedisStore
from tests.support import store_contract as contract
from tests.support.deployment import REDIS_URL
from tests.support.factories import job_record
from tests.support.redis_proxy import TcpProxy, free_port, host_port

AT = datetime(2026, 11, 21, tzinfo=UTC)


def _prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    rng = random.Random()
    while True:
        port = rng.randrange(20_000, 30_000)
        try:
            for candidate in (port, port + 10_000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port


@pytest.fixture
async def redis_store() -> AsyncIterator[RedisStore]:
    store = RedisStore.from_url(REDIS_URL, prefix=_prefix())
    await store.open()
    try:
        yield store
    finally:
        await store.drop_all_keys()
        await store.close()


@pytest.fixture
async def proxied() -> AsyncIterator[tuple[RedisStore, TcpProxy]]:
    """A store that reaches Redis through a proxy, and the proxy."""
    proxy = TcpProxy(host_port(REDIS_URL))
    await proxy.start()
    prefix = _prefix()
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
    prefix = _prefix()
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
    other = RedisStore.from_url(REDIS_URL, prefix=_prefix())
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
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", prefix=_prefix())
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
            assert caught.value.http_status == 503
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
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", prefix=_prefix(), socket_timeout=0.2)
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
CLUSTER_SLOT_RANGES = [(0, 5460), (5461, 10922), (10923, 16383)]


@pytest.fixture(scope="module")
def cluster_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    """Three Redis Cluster primaries on loopback, each holding a third of the slots."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    workdir = tmp_path_factory.mktemp("redis-cluster")
    ports: list[int] = []
    while len(ports) < len(CLUSTER_SLOT_RANGES):
        if (port := _free_cluster_port()) not in ports:
            ports.append(port)
    processes = [
        subprocess.Popen(
            [
                server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{port}.conf",
                "--cluster-node-timeout",
                "2000",
                "--dir",
                str(workdir),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    nodes = [syncredis.Redis(port=port, decode_responses=True) for port in ports]
    try:
        _wait_for(lambda: all(_answers(node) for node in nodes), "the cluster nodes to start", processes)
        for port in ports[1:]:
            nodes[0].cluster("MEET", "127.0.0.1", str(port))
        for node, (first, last) in zip(nodes, CLUSTER_SLOT_RANGES, strict=True):
            node.cluster("ADDSLOTSRANGE", str(first), str(last))
        _wait_for(
            lambda: (
                all(node.cluster("info")["cluster_state"] == "ok" for node in nodes)
                and all(len(node.cluster("slots")) == len(ports) for node in nodes)
            ),
            "the cluster to agree on its slots",
            processes,
        )
        yield ports
    finally:
        for node in nodes:
            node.close()
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


def _answers(node: syncredis.Redis) -> bool:
    try:
        return bool(node.ping())
    except syncredis.ConnectionError:
        return False


def _wait_for(ready: Callable[[], bool], what: str, processes: list[subprocess.Popen[bytes]]) -> None:
    # Waiting on real processes: the one place these tests spend real time.
    deadline = time.monotonic() + 20
    while not ready():
        if any(process.poll() is not None for process in processes):
            raise AssertionError(f"a redis-server exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _prefix_spread_over_nodes() -> str:
    """A prefix whose job, budget and policy tags live on three different primaries."""

    def node(tag: str) -> int:
        slot = key_slot(f"{{{tag}}}".encode())
        return next(i for i, (first, last) in enumerate(CLUSTER_SLOT_RANGES) if first <= slot <= last)

    while True:
        prefix = _prefix()
        spots = {node(f"{prefix}:jobs"), node(f"{prefix}:budget"), node(f"{prefix}:policy:growth")}
        if len(spots) == 3:
            return prefix


@pytest.fixture
async def cluster_store(cluster_ports: list[int]) -> AsyncIterator[RedisStore]:
    store = RedisStore.from_url(
        f"redis://127.0.0.1:{cluster_ports[0]}", prefix=_prefix_spread_over_nodes(), cluster=True
    )
    await store.open()
    try:
        yield store
    finally:
        await store.drop_all_keys()
        await store.close()


@pytest.mark.parametrize("case", sorted(name for name in dir(contract) if name.startswith("test_")))
async def test_store_contract_on_a_three_node_cluster(cluster_store: RedisStore, case: str) -> None:
    await getattr(contract, case)(cluster_store)


async def test_drop_all_keys_reaches_every_cluster_node(
    cluster_store: RedisStore, cluster_ports: list[int]
) -> None:
    await cluster_store.create_job(job_record())
    await cluster_store.reserve_budget("job-1", 1, [BudgetWindow("t:day", 10)])
    await cluster_store.put_policy("growth", {"a": 1}, expected_version=0, actor="ops", at=AT)
    client = RedisCluster(host="127.0.0.1", port=cluster_ports[0], decode_responses=True)
    try:
        pattern = f"{{{cluster_store.prefix}:*"
        assert len([key async for key in client.scan_iter(match=pattern)]) > 3
        await cluster_store.drop_all_keys()
        assert [key async for key in client.scan_iter(match=pattern)] == []
    finally:
        await client.aclose()


async def test_cluster_refuses_a_script_that_leaves_its_slot(cluster_ports: list[int]) -> None:
    # The guard the layout relies on: a script touching a key held by another node fails, so the
    # contract passing above on a spread-out prefix means no store script ever does.
    prefix = _prefix_spread_over_nodes()
    client = RedisCluster(host="127.0.0.1", port=cluster_ports[0], decode_responses=True)
    try:
        with pytest.raises(ResponseError, match="non local key"):
            await client.eval(
                "return redis.call('GET', ARGV[1])", 1, f"{{{prefix}:jobs}}:ids", f"{{{prefix}:budget}}:w:x"
            )
    finally:
        await client.aclose()
