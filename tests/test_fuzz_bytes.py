"""Byte-level fuzz over raw sockets (no client that normalizes headers): non-UTF-8 and NUL bytes in
every header the broker reads, overlong numbers, bogus charsets, part floods, malformed multipart and
truncated bodies. Not one answer is a 5xx, and after each case a normal job still succeeds, on SQLite
and on Redis. The number of cases is asserted (and printed with -s) so a shrinking list shows.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from broker.appkeys import STORE
from tests.support.api import wait_for_status
from tests.support.deployment import ADMIN_KEY, GROWTH_KEY, REDIS_URL, auth
from tests.support.stores import STORE_KINDS

Client = TestClient[Any, Any]
KEY = GROWTH_KEY.encode()
# Bytes no header value may carry as text: invalid UTF-8, a lone surrogate encoded, NUL, ESC, DEL.
BAD_BYTES = [b"gr\xf6wth", b"k\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"a\x00b", b"\x1b[31m", b"\x7f"]
JSON_BODY = b'{"prompt": "a calm sea"}'
MIN_CASES = 150


@dataclass(frozen=True)
class Case:
    name: str
    raw: bytes
    half_close: bool = False  # send EOF after the bytes: a body that ends before its length
    reset: bool = False  # then drop the connection (RST) without reading: a caller gone mid-body


def request(
    method: str,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
    *,
    length: int | None = None,
) -> bytes:
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    if body or length is not None:
        lines.append(b"Content-Length: " + str(len(body) if length is None else length).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def bearer(key: bytes = KEY) -> tuple[bytes, bytes]:
    return (b"Authorization", b"Bearer " + key)


JSON_TYPE = (b"Content-Type", b"application/json")


def multipart(parts: list[tuple[bytes, bytes]], boundary: bytes = b"fuzzboundary") -> tuple[bytes, bytes]:
    """(Content-Type value, body) of a multipart body of (part headers, part body) pairs."""
    body = b"".join(b"--" + boundary + b"\r\n" + head + b"\r\n\r\n" + data + b"\r\n" for head, data in parts)
    return b"multipart/form-data; boundary=" + boundary, body + b"--" + boundary + b"--\r\n"


def field(name: bytes, value: bytes, extra: bytes = b"") -> tuple[bytes, bytes]:
    head = b'Content-Disposition: form-data; name="' + name + b'"' + (b"\r\n" + extra if extra else b"")
    return head, value


def post_multipart(parts: list[tuple[bytes, bytes]], boundary: bytes = b"fuzzboundary") -> bytes:
    content_type, body = multipart(parts, boundary)
    return request("POST", b"/v1/jobs", [bearer(), (b"Content-Type", content_type)], body)


def header_cases() -> Iterator[Case]:
    """Every header the broker reads, on the routes that read it, with each bad byte sequence."""
    for bad in BAD_BYTES:
        tag = bad.hex()
        yield Case(f"authorization {tag}", request("GET", b"/v1/jobs", [bearer(b"x" + bad)]))
        yield Case(f"authorization key+{tag}", request("GET", b"/v1/jobs", [bearer(KEY + bad)]))
        yield Case(
            f"authorization scheme {tag}", request("GET", b"/v1/jobs", [(b"Authorization", bad + KEY)])
        )
        post = [bearer(), JSON_TYPE, (b"Idempotency-Key", b"k" + bad)]
        yield Case(f"idempotency-key {tag}", request("POST", b"/v1/jobs", post, JSON_BODY))
        policy = [bearer(ADMIN_KEY.encode()), JSON_TYPE, (b"If-Match", b'"' + bad + b'"')]
        yield Case(f"if-match {tag}", request("PUT", b"/v1/policies/growth", policy, b"{}"))
        yield Case(f"x-request-id {tag}", request("GET", b"/v1/jobs", [bearer(), (b"X-Request-Id", bad)]))
        content_type = [bearer(), (b"Content-Type", b"application/json" + bad)]
        yield Case(f"content-type {tag}", request("POST", b"/v1/jobs", content_type, JSON_BODY))
        boundary = [bearer(), (b"Content-Type", b"multipart/form-data; boundary=b" + bad)]
        yield Case(f"boundary {tag}", request("POST", b"/v1/jobs", boundary, b"--b\r\n\r\n"))
        yield Case(
            f"callback header {tag}", request("POST", b"/v1/callbacks/cheap", [(b"X-Signature", bad)], b"{}")
        )
        yield Case(f"unread header {tag}", request("GET", b"/v1/jobs", [bearer(), (b"X-Anything", bad)]))
        yield Case(f"path {tag}", request("GET", b"/v1/jobs/" + bad, [bearer()]))
        yield Case(f"query {tag}", request("GET", b"/v1/jobs?cursor=" + bad, [bearer()]))
        yield Case(f"multipart field name {tag}", post_multipart([field(b"prompt" + bad, b"x")]))
        yield Case(f"multipart field value {tag}", post_multipart([field(b"prompt", b"sea " + bad)]))
        yield Case(
            f"multipart part header {tag}", post_multipart([field(b"prompt", b"x", b"X-Part: " + bad)])
        )
        yield Case(
            f"json prompt {tag}",
            request("POST", b"/v1/jobs", [bearer(), JSON_TYPE], b'{"prompt": "' + bad + b'"}'),
        )


def number_cases() -> Iterator[Case]:
    admin = [bearer(ADMIN_KEY.encode()), JSON_TYPE]
    for tag in (b"\xc2\xb2", b"\xd9\xa3", b"9" * 5000, b"-1", b"1e3", b"0x10", b" 1 "):
        name = tag[:12].decode("utf-8", "replace")
        yield Case(
            f"if-match {name}",
            request("PUT", b"/v1/policies/growth", [*admin, (b"If-Match", b'"' + tag + b'"')], b"{}"),
        )
        yield Case(f"inputs expires {name}", request("GET", b"/v1/inputs/x?sig=ab&expires=" + tag, []))
        yield Case(f"limit {name}", request("GET", b"/v1/jobs?limit=" + tag, [bearer()]))
    policy_version = b'{"version": ' + b"9" * 4000 + b"}"
    yield Case("policy version 4000 digits", request("PUT", b"/v1/policies/growth", admin, policy_version))
    for body in (
        b'{"prompt": "x", "seed": ' + b"9" * 5000 + b"}",
        b'{"prompt": "x", "seed": ' + b"9" * 100 + b"}",
        b'{"prompt": "x", "duration_s": true}',
        b'{"prompt": "x", "seed": false}',
        b'{"prompt": "x", "audio": 1}',
        b'{"prompt": "x", "duration_s": 1e400}',
        b'{"prompt": "x", "constraints": {"max_latency_s": true}}',
        b'{"prompt": ""}',
        b'{"prompt": "   "}',
        b'{"prompt": "\\u200b"}',
        b'{"prompt": "a\\u0000b"}',
    ):
        yield Case(f"json {body[:40]!r}", request("POST", b"/v1/jobs", [bearer(), JSON_TYPE], body))
    for length in (b"99999999999999999999", b"-1", b"1e3", b"\xc2\xb2", b"5, 6"):
        raw = b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: " + length
        yield Case(f"content-length {length[:12]!r}", raw + b"\r\n\r\n" + JSON_BODY)


def multipart_cases() -> Iterator[Case]:
    for charset in (b"bogus-xyz", b"utf-16", b"latin-1", b'"', b"\xff"):
        part = field(b"prompt", b"x", b"Content-Type: text/plain; charset=" + charset)
        yield Case(f"charset {charset!r}", post_multipart([part]))
    for encoding in (
        b"Content-Transfer-Encoding: base64",
        b"Content-Transfer-Encoding: quoted-printable",
        b"Content-Encoding: gzip",
        b"Content-Encoding: br",
    ):
        yield Case(f"encoding {encoding!r}", post_multipart([field(b"prompt", b"eA==", encoding)]))
    yield Case("part flood", post_multipart([field(b"metadata", b"{}")] * 20_000))
    yield Case("field twice", post_multipart([field(b"prompt", b"a"), field(b"prompt", b"b")]))
    yield Case("unknown field", post_multipart([field(b"nonsense", b"a")]))
    yield Case("no name", post_multipart([(b"Content-Disposition: form-data", b"a")]))
    yield Case("image empty", post_multipart([field(b"prompt", b"x"), field(b"image", b"")]))
    yield Case("image not an image", post_multipart([field(b"prompt", b"x"), field(b"image", b"\x00" * 100)]))
    yield Case("metadata not json", post_multipart([field(b"prompt", b"x"), field(b"metadata", b"{\xff")]))
    yield Case("metadata deep", post_multipart([field(b"prompt", b"x"), field(b"metadata", b"[" * 5000)]))
    yield Case("duration text", post_multipart([field(b"prompt", b"x"), field(b"duration_s", b"\xc2\xb2")]))
    nested_type, nested = multipart([field(b"prompt", b"x")], b"inner")
    yield Case(
        "nested multipart",
        post_multipart(
            [(b'Content-Disposition: form-data; name="x"\r\nContent-Type: ' + nested_type, nested)]
        ),
    )
    for content_type in (
        b"multipart/form-data",
        b"multipart/form-data; boundary=",
        b"multipart/mixed; boundary=a",
    ):
        yield Case(
            f"content-type {content_type!r}",
            request("POST", b"/v1/jobs", [bearer(), (b"Content-Type", content_type)], b"--a\r\n"),
        )
    yield Case(
        "no closing boundary",
        request(
            "POST",
            b"/v1/jobs",
            [bearer(), (b"Content-Type", b"multipart/form-data; boundary=a")],
            b'--a\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nx',
        ),
    )
    yield Case(
        "garbage after boundary",
        request(
            "POST",
            b"/v1/jobs",
            [bearer(), (b"Content-Type", b"multipart/form-data; boundary=a")],
            b"--a\r\n\xff\xfe\x00\r\n\r\n",
        ),
    )
    endless = b"X-H: " + b"a" * 70_000
    yield Case("endless part header", post_multipart([field(b"prompt", b"x", endless)]))


def truncated_cases() -> Iterator[Case]:
    content_type, body = multipart([field(b"prompt", b"x" * 1000)])
    yield Case(
        "multipart truncated",
        request(
            "POST", b"/v1/jobs", [bearer(), (b"Content-Type", content_type)], body[:300], length=len(body)
        ),
        half_close=True,
    )
    yield Case(
        "json truncated",
        request("POST", b"/v1/jobs", [bearer(), JSON_TYPE], JSON_BODY[:10], length=len(JSON_BODY)),
        half_close=True,
    )
    yield Case(
        "json cut mid-character", request("POST", b"/v1/jobs", [bearer(), JSON_TYPE], b'{"prompt": "\xc3')
    )
    yield Case(
        "policy truncated",
        request(
            "PUT",
            b"/v1/policies/growth",
            [bearer(ADMIN_KEY.encode()), JSON_TYPE, (b"If-Match", b'"0"')],
            b"{",
            length=100,
        ),
        half_close=True,
    )
    yield Case(
        "chunked truncated",
        b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + KEY
        + b'\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{"prompt"',
        half_close=True,
    )
    yield Case(
        "chunked bad size",
        b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + KEY
        + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"\xff\xff\r\n{}\r\n0\r\n\r\n",
    )
    big_type, big = multipart([field(b"prompt", b"x"), field(b"image", b"\x89PNG" + b"\x00" * 300_000)])
    yield Case(
        "multipart reset mid-body",
        request("POST", b"/v1/jobs", [bearer(), (b"Content-Type", big_type)], big[:100_000], length=len(big)),
        reset=True,
    )
    yield Case(
        "json reset mid-body",
        request("POST", b"/v1/jobs", [bearer(), JSON_TYPE], JSON_BODY[:10], length=10_000),
        reset=True,
    )
    yield Case("request line only", b"GET /v1/jobs HTTP/1.1\r\n", half_close=True)
    yield Case("headers cut", b"GET /v1/jobs HTTP/1.1\r\nAuthorization: Bearer " + KEY[:5], half_close=True)


def all_cases() -> list[Case]:
    return [*header_cases(), *number_cases(), *multipart_cases(), *truncated_cases()]


async def exchange(host: str, port: int, case: Case) -> tuple[int | None, bytes]:
    """Send the raw bytes; (status, first bytes of the answer), or (None, b"") if the connection
    closed without an answer (a request cut short may get none)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(case.raw)
        await writer.drain()
        if case.reset:
            await asyncio.sleep(0.05)  # the handler is reading the body by now
            writer.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            return None, b""
        if case.half_close:
            writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), timeout=20)  # Connection: close: to EOF
    except (ConnectionResetError, BrokenPipeError):
        return None, b""
    finally:
        writer.close()
    if not answer:
        return None, b""
    return int(answer.split(b" ", 2)[1]), answer


@pytest.fixture(params=sorted(STORE_KINDS))
async def client(
    request: pytest.FixtureRequest, make_client: Callable[..., Awaitable[Client]]
) -> AsyncIterator[Client]:
    overrides: dict[str, Any] = {}
    if request.param == "redis":
        overrides = {"store_url": REDIS_URL, "redis_prefix": f"test-{uuid.uuid4().hex[:12]}"}
    app_client = await make_client(**overrides)
    try:
        yield app_client
    finally:
        drop = getattr(app_client.app[STORE], "drop_all_keys", None)
        if drop is not None:
            await drop()


async def a_normal_job_succeeds(client: Client) -> None:
    response = await client.post("/v1/jobs", json={"prompt": "a calm sea"}, headers=auth())
    assert response.status == 202, await response.text()
    done = await wait_for_status(client, (await response.json())["id"], "succeeded", "failed")
    assert done["status"] == "succeeded", done


async def test_no_byte_sequence_gets_a_5xx_and_the_broker_keeps_working(client: Client) -> None:
    cases = all_cases()
    assert len(cases) >= MIN_CASES
    host, port = str(client.server.host), int(client.server.port or 0)
    answered: dict[int | None, int] = {}
    for case in cases:
        with capture_logs() as logged:
            status, answer = await exchange(host, port, case)
            await asyncio.sleep(0.01)  # the handler of a request cut short ends after the answer
        assert not [e for e in logged if e["log_level"] in ("error", "critical")], (case.name, logged)
        assert status is None or status < 500, (case.name, answer[:600])
        head, _, body = answer.partition(b"\r\n\r\n")
        if status is not None and 400 <= status < 500 and b"content-type: application/json" in head.lower():
            error = json.loads(body)["error"]
            assert error["code"] and error["message"], (case.name, error)
        answered[status] = answered.get(status, 0) + 1
        await a_normal_job_succeeds(client)
    print(f"\n{len(cases)} raw cases, answers by status: {answered}")
    assert sum(n for s, n in answered.items() if s is not None and 400 <= s < 500) > len(cases) * 0.9
