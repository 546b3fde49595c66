"""Helpers shared by the adapter tests: fake time, tiny images, a loopback fetch policy, contexts."""

from __future__ import annotations

import io
import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image

from adapters.base import AdapterContext
from adapters.images import FetchPolicy
from adapters.outbound import IpAddress, OutboundPolicy, Resolver
from broker.config import load_config
from pricing.rules import PriceRule

CONFIG_PATH = Path(__file__).resolve().parents[2] / "config.yaml"

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class FakeTime:
    """A clock that only moves when the code under test sleeps; every sleep is recorded."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def png_bytes(width: int = 64, height: int = 48, fmt: str = "PNG") -> bytes:
    """A real image of the given size and format."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 80, 40)).save(buffer, format=fmt)
    return buffer.getvalue()


async def loopback_resolver(host: str, port: int) -> list[IpAddress]:
    """Resolve every name to 127.0.0.1, as a test DNS would."""
    return [ipaddress.ip_address("127.0.0.1")]


def loopback_policy(resolver: Resolver = loopback_resolver, **overrides: object) -> FetchPolicy:
    """A fetch policy that lets tests reach loopback (over plain HTTP too), explicitly."""
    outbound = OutboundPolicy(allowed_networks=LOOPBACK, resolver=resolver)
    return FetchPolicy(outbound=outbound, **overrides)  # type: ignore[arg-type]


def context(
    provider: str,
    base_url: str,
    session: aiohttp.ClientSession,
    data_dir: Path,
    fake: FakeTime,
    *,
    api_key: str | None = "test-key",
    webhook_secret: str | None = None,
) -> AdapterContext:
    """An adapter context on fake time."""
    return AdapterContext(
        provider=provider,
        base_url=base_url,
        api_key=api_key,
        session=session,
        data_dir=data_dir,
        webhook_secret=webhook_secret,
        clock=fake.clock,
        sleep=fake.sleep,
    )


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[TestServer]:
    """Run `app` on a loopback port for the block."""
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


def price_rule(provider: str, model: str) -> PriceRule:
    """The price rule of a route in the default deployment's config.yaml."""
    config = load_config(CONFIG_PATH)
    for route in config.routes:
        if (route.provider, route.model) == (provider, model) and route.price is not None:
            return route.price
    raise LookupError(f"config.yaml has no priced route {provider}/{model}")


def is_mp4(path: Path) -> bool:
    """True if the file starts with an ISO BMFF `ftyp` box, as every MP4 does."""
    head = path.read_bytes()[:12]
    return len(head) == 12 and head[4:8] == b"ftyp"
