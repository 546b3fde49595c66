"""Image inputs: address refusal after DNS, size caps, image checks, and per-provider feasibility."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.base import ImageAcceptance, ImageInput
from adapters.images import (
    FetchPolicy,
    ImageFetchFailed,
    ImageTooLarge,
    InvalidImage,
    check_image,
    data_uri_size,
    fetch_image,
    image_infeasibility,
    to_data_uri,
)
from adapters.outbound import IpAddress, OutboundPolicy, Resolver
from broker.schema import decode_data_uri
from tests.support.adapters import LOOPBACK, loopback_policy, png_bytes

PNG = png_bytes(64, 48)


def resolver_to(*addresses: str, seen: list[str] | None = None) -> Resolver:
    async def resolve(host: str, port: int) -> list[IpAddress]:
        if seen is not None:
            seen.append(host)
        return [ipaddress.ip_address(a) for a in addresses]

    return resolve


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.9",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.100.100.200",  # Alibaba metadata, in shared address space
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "::ffff:127.0.0.1",
        "fe80::1",
        "fd00:ec2::254",  # AWS metadata over IPv6
    ],
)
async def test_fetch_refuses_a_host_that_resolves_to_a_non_public_address(address: str) -> None:
    seen: list[str] = []
    policy = FetchPolicy(outbound=OutboundPolicy(resolver=resolver_to(address, seen=seen)))
    with pytest.raises(ImageFetchFailed, match=r"images\.example\.com resolves to a [a-z -]+ address"):
        await fetch_image("https://images.example.com/cat.png", policy)
    assert seen == ["images.example.com"]  # the name was resolved, and the answer checked


async def test_fetch_refuses_when_any_resolved_address_is_private() -> None:
    policy = FetchPolicy(outbound=OutboundPolicy(resolver=resolver_to("93.184.216.34", "10.0.0.7")))
    with pytest.raises(ImageFetchFailed, match="private"):
        await fetch_image("https://images.example.com/cat.png", policy)


async def test_the_default_policy_refuses_literal_and_local_names() -> None:
    for url in ("https://127.0.0.1/cat.png", "https://[::1]/cat.png", "https://localhost/cat.png"):
        with pytest.raises(ImageFetchFailed, match="loopback"):
            await fetch_image(url)


async def test_fetch_refuses_plain_http_by_default() -> None:
    with pytest.raises(ImageFetchFailed, match="https"):
        policy = FetchPolicy(outbound=OutboundPolicy(resolver=resolver_to("8.8.8.8")))
        await fetch_image("http://images.example.com/cat.png", policy)


def test_public_addresses_pass_and_allowed_networks_open_private_ones() -> None:
    default, loopback = OutboundPolicy(), OutboundPolicy(allowed_networks=LOOPBACK)
    assert default.address_allowed(ipaddress.ip_address("93.184.216.34"))
    assert default.address_allowed(ipaddress.ip_address("2606:4700::1111"))
    assert not default.address_allowed(ipaddress.ip_address("127.0.0.1"))
    assert loopback.address_allowed(ipaddress.ip_address("127.0.0.1"))
    assert not loopback.address_allowed(ipaddress.ip_address("10.0.0.1"))


async def _image(request: web.Request) -> web.StreamResponse:
    return web.Response(body=PNG, content_type="image/png")


async def _chunked_big(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    for _ in range(40):
        await response.write(b"\x89" * 4096)
    return response


async def _text(request: web.Request) -> web.StreamResponse:
    return web.Response(text="<html>not an image</html>", content_type="image/png")


async def _redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(location=request.query["to"])


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_get("/cat.png", _image)
    app.router.add_get("/big", _chunked_big)
    app.router.add_get("/text", _text)
    app.router.add_get("/redirect", _redirect)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    try:
        yield test_server
    finally:
        await test_server.close()


def url_of(server: TestServer, path: str, host: str = "images.test") -> str:
    return f"http://{host}:{server.port}{path}"


async def test_fetch_downloads_and_checks_an_image(server: TestServer) -> None:
    url = url_of(server, "/cat.png")
    image = await fetch_image(url, loopback_policy())
    assert image == ImageInput(content_type="image/png", data=PNG, url=url)


async def test_fetch_caps_the_size(server: TestServer) -> None:
    with pytest.raises(ImageTooLarge):
        await fetch_image(url_of(server, "/cat.png"), loopback_policy(max_bytes=len(PNG) - 1))
    with pytest.raises(ImageTooLarge):  # no Content-Length: the stream is cut off at the cap
        await fetch_image(url_of(server, "/big"), loopback_policy(max_bytes=100_000))


async def test_fetch_refuses_bytes_that_are_not_an_image(server: TestServer) -> None:
    with pytest.raises(InvalidImage):
        await fetch_image(url_of(server, "/text"), loopback_policy())


async def test_fetch_rechecks_every_redirect_target(server: TestServer) -> None:
    async def resolve(host: str, port: int) -> list[IpAddress]:
        return [ipaddress.ip_address("127.0.0.1" if host == "images.test" else "10.0.0.5")]

    target = f"http://internal.test:{server.port}/cat.png"
    policy = loopback_policy(resolver=resolve)
    with pytest.raises(ImageFetchFailed, match=r"internal\.test"):
        await fetch_image(url_of(server, f"/redirect?to={target}"), policy)
    followed = await fetch_image(url_of(server, "/redirect?to=/cat.png"), policy)
    assert followed.data == PNG


def test_check_image_accepts_common_formats() -> None:
    assert check_image(png_bytes(64, 48)).content_type == "image/png"
    checked = check_image(png_bytes(120, 80, "JPEG"))
    assert (checked.content_type, checked.width, checked.height) == ("image/jpeg", 120, 80)
    assert check_image(png_bytes(32, 32, "WEBP")).content_type == "image/webp"


@pytest.mark.parametrize(
    ("data", "max_pixels"),
    [
        (b"plain text, not an image", 40_000_000),
        (png_bytes(64, 48)[:60], 40_000_000),  # truncated
        (png_bytes(8, 8), 40_000_000),  # too small to animate
        (png_bytes(9000, 20), 40_000_000),  # one side too long
        (png_bytes(400, 300), 100_000),  # more pixels than allowed
        (png_bytes(64, 48, "BMP"), 40_000_000),  # not an accepted format
    ],
)
def test_check_image_refuses_bad_images(data: bytes, max_pixels: int) -> None:
    with pytest.raises(InvalidImage):
        check_image(data, max_pixels=max_pixels)


def test_data_uri_round_trips_and_its_size_is_known() -> None:
    image = ImageInput(content_type="image/png", data=PNG)
    uri = to_data_uri(image)
    assert decode_data_uri(uri) == ("image/png", PNG)
    assert data_uri_size(len(PNG)) >= len(uri)


RUNWAY = ImageAcceptance(url=True, data_uri_max_bytes=5 * 1024 * 1024)
URL_ONLY = ImageAcceptance(url=True)
FILE_ONLY = ImageAcceptance(url=False, file_max_bytes=10 * 1024 * 1024)


@pytest.mark.parametrize(
    ("acceptance", "has_url", "has_bytes", "size", "reason"),
    [
        (URL_ONLY, False, False, None, None),  # text-to-video: nothing to carry
        (URL_ONLY, True, False, None, None),
        (URL_ONLY, False, True, 2_000, "only as an https URL"),
        (RUNWAY, False, True, 3 * 1024 * 1024, None),
        (RUNWAY, False, True, 4 * 1024 * 1024, "limit"),  # 4 MB is over 5 MB once base64-encoded
        (RUNWAY, True, False, None, None),
        (FILE_ONLY, True, False, None, None),  # the broker fetches the URL and uploads it
        (FILE_ONLY, False, True, 9 * 1024 * 1024, None),
        (FILE_ONLY, False, True, 11 * 1024 * 1024, "limit"),
    ],
)
def test_image_infeasibility(
    acceptance: ImageAcceptance, has_url: bool, has_bytes: bool, size: int | None, reason: str | None
) -> None:
    result = image_infeasibility(acceptance, has_url, has_bytes, size)
    if reason is None:
        assert result is None
    else:
        assert result is not None and reason in result
