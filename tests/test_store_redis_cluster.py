"""The Redis store on a three-node Redis Cluster: the store contract passes on a prefix spread over
the nodes, every key of a script sits in its slot, and teardown reaches every node."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime

import pytest
import redis as syncredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ResponseError

from broker.store import BudgetWindow
from broker.store.redis import RedisStore
from tests.support import store_contract as contract
from tests.support.factories import job_record
from tests.support.redis_proxy import fresh_prefix
from tests.support.stores import open_redis_store

AT = datetime(2026, 11, 21, tzinfo=UTC)


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
        prefix = fresh_prefix()
        spots = {node(f"{prefix}:jobs"), node(f"{prefix}:budget"), node(f"{prefix}:policy:growth")}
        if len(spots) == 3:
            return prefix


@pytest.fixture
async def cluster_store(cluster_ports: list[int]) -> AsyncIterator[RedisStore]:
    url = f"redis://127.0.0.1:{cluster_ports[0]}"
    async with open_redis_store(url, prefix=_prefix_spread_over_nodes(), cluster=True) as store:
        yield store


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
