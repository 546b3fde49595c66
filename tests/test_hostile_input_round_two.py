"""Hostile input, round two (issue 21): the cases found after round one, each a named test, on SQLite
and on Redis where the store matters. The raw-byte fuzz is tests/test_fuzz_bytes.py, secrets in logs
tests/test_log_secrets.py."""

from __future__ import annotations

import asyncio
import base64
import errno
import ipaddress
import json
import pathlib
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry, Histogram

from adapters.outbound import IpAddress, OutboundPolicy, OutboundRefused
from broker.api import offload
from broker.appkeys import STORE
from broker.observability.loop_lag import LoopLagMonitor
from broker.store.base import VersionConflict
from broker.store.durability import APPENDONLY_OFF
from broker.store.sqlite_db import write_each
from tests.support.adapters import png_bytes
from tests.support.api import wait_for_status
from tests.support.deployment import ADMIN_KEY, REDIS_URL, auth
from tests.support.fakes import FakeProvider
from tests.support.stores import STORE_KINDS

Client = TestClient[Any, Any]
METADATA = ("169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254", "100.100.100.200")


def resolving_to(*addresses: str) -> Callable[[str, int], Awaitable[list[IpAddress]]]:
    async def resolve(host: str, port: int) -> list[IpAddress]:
        return [ipaddress.ip_address(a) for a in addresses]

    return resolve


@pytest.fixture(params=sorted(STORE_KINDS))
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def open_client(
    store_kind: str, make_client: Callable[..., Awaitable[Client]]
) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """Start the app on the parametrized store kind, with setting overrides; clean Redis after."""
    made: list[Client] = []

    async def start(**overrides: Any) -> Client:
        if store_kind == "redis":
            overrides |= {"store_url": REDIS_URL, "redis_prefix": f"test-{uuid.uuid4().hex[:12]}"}
        client = await make_client(**overrides)
        made.append(client)
        return client

    yield start
    for client in made:
        drop = getattr(client.app[STORE], "drop_all_keys", None)
        if drop is not None:
            await drop()


async def a_normal_job_succeeds(client: Client) -> None:
    response = await client.post("/v1/jobs", json={"prompt": "a calm sea"}, headers=auth())
    assert response.status == 202, await response.text()
    done = await wait_for_status(client, (await response.json())["id"], "succeeded", "failed")
    assert done["status"] == "succeeded", done


# Metadata addresses by name -------------------------------------------------------------------------
@pytest.mark.parametrize("address", METADATA)
async def test_an_allow_listed_name_resolving_to_metadata_is_refused_by_check_and_on_connect(
    address: str,
) -> None:
    policy = OutboundPolicy.parse("images.internal", resolver=resolving_to("127.0.0.1", address))
    with pytest.raises(OutboundRefused, match="cloud metadata"):
        await policy.check("https://images.internal/x.png")
    # On connect: the name's other address is a live listener, which the session must not reach either.
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with policy.open_session() as session:
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.get(f"http://images.internal:{port}/x.png")
        assert connections == 0
        # Without the metadata address the same name reaches the listener, as the allow-list says.
        admitted = OutboundPolicy.parse("images.internal", resolver=resolving_to("127.0.0.1"))
        async with (
            admitted.open_session() as session,
            session.get(f"http://images.internal:{port}/") as reply,
        ):
            assert reply.status == 204
        assert connections == 1
    finally:
        server.close()
        await server.wait_closed()


async def test_a_job_whose_allow_listed_image_host_resolves_to_metadata_fails_without_reaching_a_provider(
    open_client: Callable[..., Awaitable[Client]], providers: dict[str, FakeProvider]
) -> None:
    """The fake providers take image URLs: the broker checks the URL after DNS before handing it on."""
    client = await open_client(outbound_allow="images.internal", resolver=resolving_to("169.254.169.254"))
    body = {"prompt": "x", "image_url": "https://images.internal/still.png"}
    response = await client.post("/v1/jobs", json=body, headers=auth())
    assert response.status == 202, await response.text()  # the name is allow-listed: no DNS at submit
    done = await wait_for_status(client, (await response.json())["id"], "succeeded", "failed")
    assert done["status"] == "failed" and "cloud metadata" in done["error"]["message"], done
    assert all(task.image is None for fake in providers.values() for task in fake.submits)
    await a_normal_job_succeeds(client)


# A full disk, strict types, the X-Request-Id echo ------------------------------------------------------
async def test_a_full_disk_on_upload_is_507_and_leaves_no_file(
    open_client: Callable[..., Awaitable[Client]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The disk fills half-way through writing the upload: the caller gets a 507, nothing stays."""
    client = await open_client(data_dir=tmp_path / "full")
    real_write = pathlib.Path.write_bytes

    def write_half_then_fill(path: pathlib.Path, data: Any) -> int:
        real_write(path, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_bytes", write_half_then_fill)
    form = aiohttp.FormData({"prompt": "x"}, default_to_multipart=True)
    form.add_field("image", png_bytes(), filename="a.png", content_type="image/png")
    response = await client.post("/v1/jobs", data=form, headers=auth())
    body = await response.json()
    assert response.status == 507 and body["error"]["code"] == "insufficient_storage", body
    leftovers = [p for p in (tmp_path / "full").rglob("*") if p.is_file()]
    assert leftovers == []
    monkeypatch.setattr(pathlib.Path, "write_bytes", real_write)
    listing = await (await client.get("/v1/jobs", headers=auth())).json()
    assert listing["jobs"] == []  # no half-written job either
    await a_normal_job_succeeds(client)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "x", "duration_s": True}, "duration_s"),
        ({"prompt": "x", "seed": False}, "seed"),
        ({"prompt": "x", "audio": 1}, "audio"),
        ({"prompt": "x", "camera_fixed": 0}, "camera_fixed"),
        ({"prompt": "x", "constraints": {"max_latency_s": True}}, "constraints.max_latency_s"),
        ({"prompt": ""}, "body"),
        ({"prompt": " \u200b\u3000 "}, "body"),
        ({"prompt": "a\u0000b"}, "prompt"),
    ],
)
async def test_a_boolean_for_a_number_and_an_empty_prompt_are_400(
    open_client: Callable[..., Awaitable[Client]], body: dict[str, Any], field: str
) -> None:
    client = await open_client()
    for path in ("/v1/jobs", "/v1/quotes"):
        response = await client.post(path, json=body, headers=auth())
        error = (await response.json())["error"]
        assert response.status == 400 and error["details"][0]["field"] == field, error
    await a_normal_job_succeeds(client)


async def test_multipart_text_fields_still_take_numbers_and_booleans_as_text(
    open_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await open_client()
    fields = {"prompt": "x", "duration_s": "5", "seed": "7", "audio": "false"}
    form = aiohttp.FormData(fields, default_to_multipart=True)
    response = await client.post("/v1/quotes", data=form, headers=auth())
    assert response.status == 200, await response.text()


async def test_an_x_request_id_that_is_not_printable_ascii_is_replaced(
    open_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await open_client()
    response = await client.get("/healthz", headers={"X-Request-Id": "a" * 65})
    assert response.status == 200 and len(response.headers["X-Request-Id"]) == 16
    response = await client.get("/healthz", headers={"X-Request-Id": "trace-42"})
    assert response.headers["X-Request-Id"] == "trace-42"


# The store: durability reported, one failing write fails alone ------------------------------------------
async def test_readyz_reports_a_redis_without_appendonly(
    open_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await open_client()
    body = await (await client.get("/readyz")).json()
    if client.app[STORE].__class__.__name__ == "SQLiteStore":
        assert "warnings" not in body
        return
    redis = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        appendonly = (await redis.config_get("appendonly"))["appendonly"]
    finally:
        await redis.aclose()
    assert body["status"] == "ready"
    assert body.get("warnings") == ([APPENDONLY_OFF] if appendonly != "yes" else None), body


def test_one_failing_write_in_a_group_commit_fails_alone(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    db.execute("INSERT INTO t VALUES (2)")

    def insert(n: int) -> Callable[[sqlite3.Connection], int]:
        def write(conn: sqlite3.Connection) -> int:
            conn.execute("INSERT INTO t VALUES (?)", (n + 100,))  # a first statement, undone with its write
            conn.execute("INSERT INTO t VALUES (?)", (n,))
            return n

        return write

    results = write_each(db, [insert(1), insert(2), insert(3)])
    assert results[0] == 1 and results[2] == 3
    assert isinstance(results[1], VersionConflict)
    assert sorted(row[0] for row in db.execute("SELECT id FROM t")) == [1, 2, 3, 101, 103]
    assert not db.in_transaction


async def test_loop_lag_is_measured_with_an_injected_clock() -> None:
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds + 0.3  # each timer runs 300 ms late
        await asyncio.sleep(0)

    histogram = Histogram("lag_test_seconds", "lag", buckets=(0.1, 0.5), registry=CollectorRegistry())
    monitor = LoopLagMonitor(histogram, interval_s=0.1, clock=lambda: now[0], sleep=sleep)
    monitor.start()
    while monitor.samples < 3:
        await asyncio.sleep(0)
    await monitor.stop()
    assert monitor.take_max() == pytest.approx(0.3)
    assert monitor.take_max() == 0.0
    assert next(iter(histogram.collect())).samples[0].value == 0  # none under 100 ms


async def test_metrics_export_the_loop_lag(open_client: Callable[..., Awaitable[Client]]) -> None:
    client = await open_client()
    text = await (await client.get("/metrics")).text()
    assert "broker_event_loop_lag_seconds_bucket" in text and "broker_event_loop_lag_max_seconds" in text


async def test_a_policy_version_too_large_to_store_is_400(
    open_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await open_client()
    admin = {**auth(ADMIN_KEY), "Content-Type": "application/json"}
    response = await client.put("/v1/policies/growth", data='{"version": ' + "9" * 30 + "}", headers=admin)
    assert response.status == 400, await response.text()


# The named cases of the issue, through a client (the raw-byte ones are in tests/test_fuzz_bytes.py) ----
def _multipart(parts: list[tuple[str, str, bytes]]) -> tuple[bytes, dict[str, str]]:
    body = b"".join(
        f'--b\r\nContent-Disposition: form-data; name="{name}"\r\n{head}\r\n\r\n'.encode() + data + b"\r\n"
        for name, head, data in parts
    )
    return body + b"--b--\r\n", {**auth(), "Content-Type": "multipart/form-data; boundary=b"}


async def test_a_bogus_charset_and_a_part_flood_are_400_naming_them(
    open_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await open_client()
    body, headers = _multipart([("prompt", "Content-Type: text/plain; charset=bogus-xyz", b"x")])
    error = (await (await client.post("/v1/jobs", data=body, headers=headers)).json())["error"]
    assert error["details"][0]["field"] == "prompt" and "bogus-xyz" in error["message"], error
    body, headers = _multipart([("metadata", "X-Part: 1", b"{}")] * 200_000)
    response = await client.post("/v1/jobs", data=body, headers=headers)
    error = (await response.json())["error"]
    assert response.status == 400 and error["message"] == "metadata: sent twice", error  # at part 2
    body, headers = _multipart([(f"f{i}", "X-Part: 1", b"") for i in range(200_000)])
    error = (await (await client.post("/v1/jobs", data=body, headers=headers)).json())["error"]
    assert error["message"] == "f0: unknown field", error
    await a_normal_job_succeeds(client)


@pytest.mark.parametrize("tag", ["\u00b2", "9" * 5000, "\u0663", "-1"])
async def test_an_if_match_that_is_not_a_version_is_400(
    open_client: Callable[..., Awaitable[Client]], tag: str
) -> None:
    client = await open_client()
    headers = {**auth(ADMIN_KEY), "If-Match": f'"{tag}"'}
    response = await client.put("/v1/policies/growth", json={}, headers=headers)
    error = (await response.json())["error"]
    assert response.status == 400 and "If-Match" in error["message"], error


@pytest.mark.parametrize("expires", ["\u00b2", "9" * 5000, "\u0663"])
def test_a_hosted_input_expiry_that_is_not_a_number_is_refused_not_raised(expires: str) -> None:
    from broker.jobs.hosted_inputs import verify

    assert verify("job_1", expires, "ab" * 32, "s" * 32, now=0.0) == "the input URL needs expires and sig"


async def test_a_large_json_body_is_judged_in_the_worker_process_with_the_same_answers(
    open_client: Callable[..., Awaitable[Client]],
) -> None:
    """Bodies of a megabyte or more are decoded and validated in a worker process (broker.api.offload):
    a valid one is accepted, and an invalid one gets the same 400, details and all, as a small one."""
    client = await open_client()
    image = "data:image/png;base64," + base64.b64encode(png_bytes(64, 48) + b"\0" * 1_200_000).decode()
    headers = {**auth(), "Content-Type": "application/json"}
    response = await client.post(
        "/v1/quotes", data=json.dumps({"prompt": "x", "image_url": image}), headers=headers
    )
    assert response.status == 200, await response.text()
    bad = json.dumps({"prompt": "x", "image_url": image, "duration_s": True})
    error = (await (await client.post("/v1/jobs", data=bad, headers=headers)).json())["error"]
    assert error["details"][0]["field"] == "duration_s", error
    broken = b'{"prompt": "x", "metadata": ' + b"[" * 40 + b" " * 1_100_000
    error = (await (await client.post("/v1/jobs", data=broken, headers=headers)).json())["error"]
    assert error["details"][0]["field"] == "metadata", error
    work = client.app[offload.HEAVY_WORK]
    assert work.processes_started == 1 and work.process_usable  # judged there, not on a thread
    await a_normal_job_succeeds(client)
