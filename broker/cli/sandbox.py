"""`broker serve --sandbox`: every provider's emulator started in-process, and the providers pointed at
them, so routing across all providers can be watched without any provider key."""

from __future__ import annotations

import math
from collections.abc import Mapping

import structlog

from adapters.emulators.sandbox import Sandbox, start_sandbox
from broker.config import BrokerConfig
from broker.settings import Settings

log = structlog.get_logger("broker.cli.sandbox")


def sandbox_settings(settings: Settings) -> Settings:
    """The settings of a sandboxed broker: a store and an artifact directory of its own (under
    `<data_dir>/sandbox`, or `BROKER_SANDBOX_STORE_URL`), so emulator jobs and spend never reach the
    real jobs, reports and budgets."""
    data_dir = settings.data_dir / "sandbox"
    store_url = settings.sandbox_store_url or f"sqlite:///{data_dir / 'broker.db'}"
    changes = {
        "data_dir": data_dir,
        "store_url": store_url,
        "redis_prefix": f"{settings.redis_prefix}-sandbox",
    }
    return settings.model_copy(update=changes)


def point_at(config: BrokerConfig, base_urls: Mapping[str, str]) -> BrokerConfig:
    """The config with each emulated provider's `base_url` replaced by its emulator's."""
    providers = {
        name: provider.model_copy(update={"base_url": base_urls[name]}) if name in base_urls else provider
        for name, provider in config.providers.items()
    }
    return config.model_copy(update={"providers": providers})


async def start_sandboxed(
    config: BrokerConfig, env: Mapping[str, str], *, render_seconds: float = 6.0
) -> tuple[Sandbox, BrokerConfig, dict[str, str]]:
    """Start the emulators; return them with the config and environment that route to them."""
    sandbox = await start_sandbox(render_seconds=render_seconds)
    for name, url in sandbox.base_urls().items():
        log.info("sandbox_provider", provider=name, base_url=url)
    config = with_latency(point_at(config, sandbox.base_urls()), sandbox.base_urls(), render_seconds)
    return sandbox, config, {**env, **sandbox.env()}


def with_latency(config: BrokerConfig, emulated: Mapping[str, str], render_seconds: float) -> BrokerConfig:
    """Emulated routes take the emulators' render time as their expected latency: quotes say what the
    sandbox really takes, and the first poll of a task (timed from it) comes when the render is done."""
    latency = max(1, math.ceil(render_seconds))
    routes = [
        route.model_copy(update={"expected_latency_s": latency}) if route.provider in emulated else route
        for route in config.routes
    ]
    return config.model_copy(update={"routes": routes})
