"""The shared HTTP layer: Retry-After, status classes, bounded retries, transport failures, downloads."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.errors import (
    AuthFailed,
    InsufficientFunds,
    OutputInvalid,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    Rejected,
    RequestInvalid,
    SubmissionUncertain,
)
from adapters.http import (
    RetryPolicy,
    download,
    retry_after_seconds,
    send,
    status_error,
)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(" 2.5 ") == 2.5
    assert retry_after_seconds("Sat, 21 Nov 2026 12:00:30 GMT", now) == 30.0
    assert retry_after_seconds("Sat, 21 Nov 2026 11:00:00 GMT", now) == 0.0
    assert retry_after_seconds("-4") == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (429, RateLimited),
        (401, AuthFailed),
        (403, AuthFailed),
        (402, InsufficientFunds),
        (400, RequestInvalid),
        (422, RequestInvalid),
        (409, Rejected),
        (500, ProviderUnavailable),
        (503, ProviderUnavailable),
        (408, ProviderUnavailable),
        (404, ProviderError),
    ],
)
def test_status_error_classes(status: int, error_class: type[ProviderError]) -> None:
    error = status_error("runway", status, "boom", provider_code="X", retry_after_s=3.0)
    assert type(error) is error_class
    assert (error.provider, error.status, error.provider_code) == ("runway", status, "X")
    if isinstance(error, RateLimited):
        assert error.retry_after_s == 3.0


class Flaky:
    """Fails with the given errors in turn, then returns "done"."""

    def __init__(self, *errors: ProviderError) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def test_retry_honours_retry_after() -> None:
    policy = RetryPolicy(attempts=3)
    assert policy.delay_before_next(1, RateLimited("slow down", retry_after_s=4.0), 0.0) == 4.0
    assert policy.delay_before_next(2, RateLimited("slow down", retry_after_s=2.0), 4.0) == 2.0
    assert policy.delay_before_next(3, RateLimited("slow down", retry_after_s=2.0), 6.0) is None


def test_retry_backs_off_then_gives_up_after_its_attempts() -> None:
    policy = RetryPolicy(attempts=3, base_delay_s=1.0)
    down = ProviderUnavailable("down")
    assert [policy.delay_before_next(tries, down, 0.0) for tries in (1, 2, 3)] == [1.0, 2.0, None]


def test_retry_after_longer_than_allowed_goes_straight_up() -> None:
    policy = RetryPolicy(attempts=5, max_delay_s=30.0)
    assert policy.delay_before_next(1, RateLimited("daily limit", retry_after_s=3600.0), 0.0) is None


def test_retry_is_bounded_in_time() -> None:
    policy = RetryPolicy(attempts=10, max_elapsed_s=50.0, max_delay_s=30.0)
    wait = RateLimited("wait", retry_after_s=20.0)
    assert policy.delay_before_next(1, wait, 0.0) == 20.0
    assert policy.delay_before_next(2, wait, 20.0) == 20.0
    assert policy.delay_before_next(3, wait, 40.0) is None  # a third wait would end past 50 s


def test_retry_never_repeats_a_rejection_or_an_uncertain_submit() -> None:
    for error in (Rejected("bad input"), SubmissionUncertain("lost")):
        assert RetryPolicy(attempts=3).delay_before_next(1, error, 0.0) is None


async def _drop(request: web.Request) -> web.StreamResponse:
    assert request.transport is not None
    request.transport.close()
    await asyncio.sleep(0.05)
    return web.Response()


async def _slow(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(2)
    return web.json_response({})


async def _ok(request: web.Request) -> web.StreamResponse:
    return web.json_response({"id": "t1"})


async def _video(request: web.Request) -> web.StreamResponse:
    return web.Response(body=b"\x00" * 5000, content_type="video/mp4")


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_post("/drop", _drop)
    app.router.add_post("/slow", _slow)
    app.router.add_get("/video", _video)
    app.router.add_get("/ok", _ok)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    try:
        yield test_server
    finally:
        await test_server.close()


async def test_send_reads_a_reply(server: TestServer, session: aiohttp.ClientSession) -> None:
    reply = await send(session, "GET", str(server.make_url("/ok")), provider="p",
                       uncertain_if_lost=True, timeout_s=5)
    assert reply.ok and reply.json_object() == {"id": "t1"}


@pytest.mark.parametrize(
    ("uncertain", "error_class"), [(True, SubmissionUncertain), (False, ProviderUnavailable)]
)
async def test_a_dropped_answer_is_uncertain_only_for_submits(
    server: TestServer, session: aiohttp.ClientSession, uncertain: bool, error_class: type[ProviderError]
) -> None:
    with pytest.raises(error_class) as caught:
        await send(session, "POST", str(server.make_url("/drop")), provider="p",
                   uncertain_if_lost=uncertain, timeout_s=5)
    assert type(caught.value) is error_class


async def test_a_timed_out_submit_is_uncertain(server: TestServer, session: aiohttp.ClientSession) -> None:
    with pytest.raises(SubmissionUncertain):
        await send(session, "POST", str(server.make_url("/slow")), provider="p",
                   uncertain_if_lost=True, timeout_s=0.2)


async def test_a_refused_connection_is_unavailable_even_for_a_submit(session: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ProviderUnavailable) as caught:
        await send(session, "POST", f"http://127.0.0.1:{port}/x", provider="p",
                   uncertain_if_lost=True, timeout_s=5)
    assert not isinstance(caught.value, SubmissionUncertain)


async def test_an_invalid_url_is_a_plain_provider_error(session: aiohttp.ClientSession) -> None:
    with pytest.raises(ProviderError) as caught:
        await send(session, "POST", "http://[not-a-host/x", provider="p", uncertain_if_lost=True, timeout_s=5)
    assert type(caught.value) is ProviderError


async def test_download_streams_to_the_file(
    server: TestServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    dest = tmp_path / "out.mp4"
    size = await download(session, str(server.make_url("/video")), dest, provider="p",
                          max_bytes=10_000, timeout_s=5)
    assert size == 5000 and dest.read_bytes() == b"\x00" * 5000


async def test_download_refuses_an_oversized_output(
    server: TestServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    dest = tmp_path / "out.mp4"
    with pytest.raises(OutputInvalid):
        await download(session, str(server.make_url("/video")), dest, provider="p",
                       max_bytes=4000, timeout_s=5)
    assert list(tmp_path.iterdir()) == []


async def test_download_maps_an_error_status(
    server: TestServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    with pytest.raises(ProviderError) as caught:
        await download(session, str(server.make_url("/missing")), tmp_path / "o.mp4", provider="p",
                       max_bytes=10_000, timeout_s=5)
    assert caught.value.status == 404
