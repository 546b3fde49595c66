"""`broker serve --sandbox`: every provider's emulator started in-process, and the providers pointed at
them, so routing across all six providers can be watched without any provider key or setting.

The sandbox hosts uploaded images itself (its own URL as `BROKER_PUBLIC_URL` and a generated signing
secret, unless those are set), so muvi and doitong, which take only URLs, get uploads too; and it
prices the routes a real provider leaves unpriced (doitong) at their emulator's own figure.

Its emulators live in its process, so one store serves one sandbox: a second sandbox on the same
store would poll tasks the first one's emulators hold. `claim_store` refuses it, naming the first.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

import structlog
from pydantic import SecretStr

from adapters.emulators.sandbox import Sandbox, start_sandbox
from broker.cli.sandbox_claim import claim_store
from broker.config import BrokerConfig
from broker.settings import Settings
from pricing.rules import PriceRule

log = structlog.get_logger("broker.cli.sandbox")

Adjust = Callable[[BrokerConfig], BrokerConfig]


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _own_url(host: str, port: int) -> str:
    """The URL the sandbox's emulators reach it at (loopback when it listens on every address)."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def sandbox_settings(settings: Settings) -> Settings:
    """The settings of a sandboxed broker: a store and an artifact directory of its own (under
    `<data_dir>/sandbox`, or `BROKER_SANDBOX_STORE_URL`), so emulator jobs and spend never reach the
    real jobs, reports and budgets; and hosted inputs on (its own URL, a fresh secret) unless set."""
    data_dir = settings.data_dir / "sandbox"
    store_url = settings.sandbox_store_url or f"sqlite:///{data_dir / 'broker.db'}"
    port = settings.port or _free_port(settings.host)
    secret = settings.input_signing_secret or SecretStr(secrets.token_hex(32))
    changes = {
        "data_dir": data_dir,
        "store_url": store_url,
        "redis_prefix": f"{settings.redis_prefix}-sandbox",
        "port": port,
        "public_url": settings.public_url or _own_url(settings.host, port),
        "input_signing_secret": secret,
    }
    return settings.model_copy(update=changes)


def point_at(config: BrokerConfig, base_urls: Mapping[str, str]) -> BrokerConfig:
    """The config with each emulated provider's `base_url` replaced by its emulator's."""
    providers = {
        name: provider.model_copy(update={"base_url": base_urls[name]}) if name in base_urls else provider
        for name, provider in config.providers.items()
    }
    return config.model_copy(update={"providers": providers})


def with_latency(config: BrokerConfig, emulated: Mapping[str, str], render_seconds: float) -> BrokerConfig:
    """Emulated routes take the emulators' render time as their expected latency: quotes say what the
    sandbox really takes, and the first poll of a task (timed from it) comes when the render is done."""
    latency = max(1, math.ceil(render_seconds))
    routes = [
        route.model_copy(update={"expected_latency_s": latency}) if route.provider in emulated else route
        for route in config.routes
    ]
    return config.model_copy(update={"routes": routes})


def with_emulator_prices(config: BrokerConfig, prices: Mapping[str, Mapping[str, str]]) -> BrokerConfig:
    """Unpriced routes of an emulated provider priced at its emulator's figure (an operator's price
    stays as it is)."""
    routes = [
        route.model_copy(
            update={
                "price": PriceRule.model_validate(dict(prices[route.provider])),
                "price_source": f"sandbox: the {route.provider} emulator's own figure",
            }
        )
        if route.price is None and route.provider in prices
        else route
        for route in config.routes
    ]
    return config.model_copy(update={"routes": routes})


def sandboxed(sandbox: Sandbox, render_seconds: float, *, emulator_prices: bool = True) -> Adjust:
    """What turns a config (the one at start, or one SIGHUP reloads) into the sandbox's."""
    prices = sandbox.prices() if emulator_prices else {}

    def adjust(config: BrokerConfig) -> BrokerConfig:
        urls = sandbox.base_urls()
        return with_emulator_prices(with_latency(point_at(config, urls), urls, render_seconds), prices)

    return adjust


async def start_sandboxed(
    config: BrokerConfig,
    env: Mapping[str, str],
    *,
    render_seconds: float = 6.0,
    emulator_prices: bool = True,
) -> tuple[Sandbox, BrokerConfig, dict[str, str]]:
    """Start the emulators; return them with the config and environment that route to them
    (`emulator_prices=False` leaves the routes the config leaves unpriced unpriced)."""
    sandbox = await start_sandbox(render_seconds=render_seconds)
    for name, url in sandbox.base_urls().items():
        log.info("sandbox_provider", provider=name, base_url=url)
    adjust = sandboxed(sandbox, render_seconds, emulator_prices=emulator_prices)
    return sandbox, adjust(config), {**env, **sandbox.env()}


@asynccontextmanager
async def running_sandbox(
    settings: Settings, config: BrokerConfig, env: Mapping[str, str], *, render_seconds: float = 6.0
) -> AsyncIterator[tuple[BrokerConfig, dict[str, str], Adjust]]:
    """`serve --sandbox`'s emulators, with its claim on the store held while they run: the config and
    environment that route to them, and the adjustment a reloaded config gets."""
    owner = f"the sandbox at {settings.public_url} (pid {os.getpid()})"
    async with claim_store(settings, owner):
        sandbox, config, env = await start_sandboxed(config, env, render_seconds=render_seconds)
        try:
            yield config, env, sandboxed(sandbox, render_seconds)
        finally:
            await sandbox.close()
