"""The outbound URL policy: what a caller-given URL may reach, checked without DNS, after DNS, and on
connect — proved against a listener on 127.0.0.1 that counts every connection it gets."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.base import ImageAcceptance
from adapters.outbound import IpAddress, OutboundPolicy, OutboundRefused, Resolver
from tests.support.adapters import png_bytes
from tests.support.api import wait_for_status
from tests.support.deployment import auth
from tests.support.fakes import FakeAdapter, FakeProvider

HOSTILE_URLS = [
    "https://127.0.0.1/x.png",
    "https://169.254.169.254/latest/meta-data/",
    "https://localhost/x.png",
    "https://api.localhost/x.png",
    "https://[::1]/x.png",
    "https://0x7f000001/x.png",
    "https://2130706433/x.png",
    "https://127.1/x.png",
    "https://[::ffff:127.0.0.1]/x.png",
    "https://10.0.0.1/x.png",
    "https://user:pass@127.0.0.1/x.png",
    "https://user:pass@images.example.com/x.png",
    "https://192.168.1.20/x.png",
    "https://[fe80::1]/x.png",
    "https://[fd00:ec2::254]/x.png",
    "https://0.0.0.0/x.png",
    "https://224.0.0.1/x.png",
    "http://images.example.com/x.png",
    "ftp://images.example.com/x.png",
    "file:///etc/passwd",
]


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_hostile_urls_are_refused_without_dns(url: str) -> None:
    with pytest.raises(OutboundRefused):
        OutboundPolicy().check_url(url)


def test_public_https_urls_pass_and_the_reason_is_readable() -> None:
    policy = OutboundPolicy()
    assert policy.check_url("https://images.example.com/x.png").host == "images.example.com"
    assert policy.check_url("https://93.184.216.34/x.png").host == "93.184.216.34"
    with pytest.raises(OutboundRefused, match=r"loopback address \(127\.0\.0\.1\)"):
        policy.check_url("https://127.0.0.1/x.png")
    with pytest.raises(OutboundRefused, match="cloud metadata"):
        policy.check_url("https://169.254.169.254/")
    with pytest.raises(OutboundRefused, match=r"loopback address \(127\.0\.0\.1\)"):
        policy.check_url("https://2130706433/")
    with pytest.raises(OutboundRefused, match="non-standard form"):
        policy.check_url("https://0x5db8d822/")  # 93.184.216.34, public, but not written as such


def test_the_allow_list_admits_hosts_and_networks_but_never_metadata() -> None:
    policy = OutboundPolicy.parse("images.internal, 10.20.0.0/16,127.0.0.1, 169.254.0.0/16")
    assert policy.allow_list == ["images.internal", "10.20.0.0/16", "127.0.0.1/32", "169.254.0.0/16"]
    policy.check_url("http://images.internal/x.png")  # an admitted host may use plain http
    policy.check_url("http://10.20.3.4:8080/x.png")
    policy.check_url("https://127.0.0.1:9000/hook")
    with pytest.raises(OutboundRefused):
        policy.check_url("https://10.21.0.1/x.png")
    with pytest.raises(OutboundRefused, match="metadata"):
        policy.check_url("https://169.254.169.254/")
    assert not policy.address_allowed(ipaddress.ip_address("169.254.169.254"))
    assert policy.address_allowed(ipaddress.ip_address("169.254.1.1"))


@pytest.mark.parametrize("entry", ["http://images.internal", "images.internal:8080", "10.0.0.0/99", "a b"])
def test_a_bad_allow_list_entry_is_named(entry: str) -> None:
    with pytest.raises(ValueError, match="is n"):
        OutboundPolicy.parse(entry)


def resolving_to(*answers: str) -> Resolver:
    """A resolver that gives each answer in turn (the last one from then on)."""
    queue = list(answers)

    async def resolve(host: str, port: int) -> list[IpAddress]:
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        return [ipaddress.ip_address(answer)]

    return resolve


async def test_names_are_checked_after_resolution() -> None:
    with pytest.raises(OutboundRefused, match=r"images\.example\.com resolves to a cloud metadata address"):
        await OutboundPolicy(resolver=resolving_to("169.254.169.254")).check("https://images.example.com/")
    with pytest.raises(OutboundRefused, match="private"):
        await OutboundPolicy(resolver=resolving_to("10.1.1.1")).check("https://images.example.com/")
    await OutboundPolicy(resolver=resolving_to("93.184.216.34")).check("https://images.example.com/")
    # Plain http to a name: only where every address is in an allowed network.
    internal = OutboundPolicy.parse("10.0.0.0/8", resolver=resolving_to("10.1.1.1"))
    await internal.check("http://cdn.internal/x.png")
    with pytest.raises(OutboundRefused, match="https"):
        await OutboundPolicy.parse("10.0.0.0/8", resolver=resolving_to("93.184.216.34")).check(
            "http://cdn.example.com/x.png"
        )


class Listener:
    """A TCP listener on 127.0.0.1 that counts connections and answers each with HTTP 204."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    counting = Listener()
    server = await asyncio.start_server(counting._serve, "127.0.0.1", 0)
    counting.port = server.sockets[0].getsockname()[1]
    try:
        yield counting
    finally:
        server.close()
        await server.wait_closed()


async def _get(policy: OutboundPolicy, url: str) -> int:
    async with policy.open_session() as session, session.get(url) as response:
        return response.status


async def test_a_guarded_session_refuses_loopback_on_connect(listener: Listener) -> None:
    """No check before the request here: the connect itself refuses, whether the URL names the address
    or a name that resolves to it."""
    with pytest.raises(aiohttp.ClientConnectionError):
        await _get(OutboundPolicy(), f"http://127.0.0.1:{listener.port}/")
    with pytest.raises(aiohttp.ClientConnectionError):
        await _get(OutboundPolicy(resolver=resolving_to("127.0.0.1")), f"http://hooks.test:{listener.port}/")
    assert listener.connections == 0
    # The same listener is reachable once the allow-list names it: the refusal above was the policy's.
    assert await _get(OutboundPolicy.parse("127.0.0.1"), f"http://127.0.0.1:{listener.port}/") == 204
    allowed_name = OutboundPolicy.parse("hooks.test", resolver=resolving_to("127.0.0.1"))
    assert await _get(allowed_name, f"http://hooks.test:{listener.port}/") == 204
    assert listener.connections == 2


async def test_a_dns_answer_that_changes_after_the_check_reaches_nothing(listener: Listener) -> None:
    """Rebinding: the check sees a public address, the connect would get loopback."""
    policy = OutboundPolicy.parse("10.9.9.0/24", resolver=resolving_to("10.9.9.9", "127.0.0.1"))
    url = f"http://rebind.test:{listener.port}/"
    await policy.check(url)
    with pytest.raises(aiohttp.ClientConnectionError):
        await _get(policy, url)
    assert listener.connections == 0


async def test_an_allow_listed_internal_image_host_is_fetched_and_others_are_not(
    make_client: Any, providers: dict[str, FakeProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: with 127.0.0.1 allow-listed, the runner fetches the image from a plain-http internal
    host for a provider that takes bytes only; without the allow-list the same URL is a 400."""
    url_less = replace(FakeAdapter.spec, image_acceptance=ImageAcceptance(url=False, file_max_bytes=10**7))
    monkeypatch.setattr(FakeAdapter, "spec", url_less)
    image = png_bytes(64, 48)

    async def serve_png(request: web.Request) -> web.Response:
        return web.Response(body=image, content_type="image/png")

    app = web.Application()
    app.router.add_get("/still.png", serve_png)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        url = f"http://127.0.0.1:{server.port}/still.png"
        closed = await make_client()
        refused = await closed.post("/v1/jobs", json={"prompt": "x", "image_url": url}, headers=auth())
        assert refused.status == 400
        assert (await refused.json())["error"]["details"][0]["field"] == "image_url"
        client = await make_client(outbound_allow="127.0.0.1")
        response = await client.post("/v1/jobs", json={"prompt": "x", "image_url": url}, headers=auth())
        assert response.status == 202, await response.text()
        done = await wait_for_status(client, (await response.json())["id"], "succeeded", "failed")
        assert done["status"] == "succeeded", done
        sent = providers["cheap"].submits[-1].image
        assert sent is not None and sent.data == image
    finally:
        await server.close()
