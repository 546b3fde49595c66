"""All six emulators on free loopback ports, in this process: what `broker serve --sandbox` starts.

    sandbox = await start_sandbox()
    sandbox.endpoints["runway"].base_url   # http://127.0.0.1:<port>, for providers.runway.base_url
    sandbox.env()                          # {"RUNWAYML_API_SECRET": ..., "MUVI_WEBHOOK_SECRET": ...}
    sandbox.prices()                       # {"doitong": {...}}: prices the real provider leaves open
    await sandbox.close()

Keys and webhook secrets are fresh random strings per sandbox, so nothing real ever matches them.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web

from adapters.emulators import doitong, fal, muvi, pixelapi, replicate, runway
from adapters.emulators.emulator import ProviderEmulator
from adapters.emulators.tasks import Clock


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """How to build one provider's emulator, and the environment names the broker reads its secrets from."""

    make_emulator: Callable[..., ProviderEmulator]
    make_app: Callable[[Any], web.Application]
    api_key_env: str
    webhook_secret_env: str | None = None
    # The emulator's own price, in config.yaml's price form, for a provider whose real price is not
    # published: the sandbox quotes and books its routes at it (the real config leaves them unpriced).
    price: dict[str, str] | None = None
    # A fresh webhook secret in the form the provider issues them (Replicate's `whsec_<base64>`).
    new_secret: Callable[[], str] = lambda: secrets.token_hex(16)


PROVIDERS: dict[str, ProviderSpec] = {
    "runway": ProviderSpec(runway.RunwayEmulator, runway.create_app, "RUNWAYML_API_SECRET"),
    "fal": ProviderSpec(fal.FalEmulator, fal.create_app, "FAL_KEY"),
    "muvi": ProviderSpec(muvi.MuviEmulator, muvi.create_app, "MUVI_API_KEY", "MUVI_WEBHOOK_SECRET"),
    "doitong": ProviderSpec(
        doitong.DoitongEmulator,
        doitong.create_app,
        "DOITONG_API_KEY",
        "DOITONG_WEBHOOK_SECRET",
        price={
            "unit": "credits_per_second",
            "amount": str(doitong.CREDITS_PER_SECOND),
            "usd_per_credit": doitong.USD_PER_CREDIT,
        },
    ),
    "pixelapi": ProviderSpec(pixelapi.PixelApiEmulator, pixelapi.create_app, "PIXELAPI_KEY"),
    "replicate": ProviderSpec(
        replicate.ReplicateEmulator,
        replicate.create_app,
        "REPLICATE_API_TOKEN",
        "REPLICATE_WEBHOOK_SECRET",
        new_secret=replicate.new_secret,
    ),
}


@dataclass(frozen=True, slots=True)
class EmulatorEndpoint:
    """One running emulator: where it listens and the secrets it accepts."""

    provider: str
    base_url: str
    api_key: str
    api_key_env: str
    webhook_secret: str | None
    webhook_secret_env: str | None
    emulator: ProviderEmulator


async def serve(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, str]:
    """Run `app` on `host:port` (0: a free port); returns its runner and base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = runner.addresses[0][1]
    shown_host = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown_host}:{bound_port}"


class Sandbox:
    """The running emulators; close it to stop them all."""

    def __init__(self, endpoints: dict[str, EmulatorEndpoint], runners: list[web.AppRunner]) -> None:
        self.endpoints = endpoints
        self._runners = runners

    def base_urls(self) -> dict[str, str]:
        return {name: endpoint.base_url for name, endpoint in self.endpoints.items()}

    def env(self) -> dict[str, str]:
        """The provider keys and webhook secrets under the environment names the broker reads."""
        env: dict[str, str] = {}
        for endpoint in self.endpoints.values():
            env[endpoint.api_key_env] = endpoint.api_key
            if endpoint.webhook_secret_env and endpoint.webhook_secret:
                env[endpoint.webhook_secret_env] = endpoint.webhook_secret
        return env

    def prices(self) -> dict[str, dict[str, str]]:
        """The emulators' own prices, for the providers whose real price is not published."""
        return {name: spec.price for name, spec in PROVIDERS.items() if spec.price and name in self.endpoints}

    async def close(self) -> None:
        """Stop every emulator (and their webhook senders)."""
        while self._runners:
            await self._runners.pop().cleanup()

    async def __aenter__(self) -> Sandbox:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


async def start_sandbox(
    host: str = "127.0.0.1", *, render_seconds: float = 6.0, clock: Clock = time.time
) -> Sandbox:
    """Start all six emulators on free ports of `host`; renders take `render_seconds`."""
    endpoints: dict[str, EmulatorEndpoint] = {}
    runners: list[web.AppRunner] = []
    sandbox = Sandbox(endpoints, runners)
    try:
        for name, spec in PROVIDERS.items():
            key = f"sandbox-{name}-{secrets.token_hex(8)}"
            secret = spec.new_secret() if spec.webhook_secret_env else None
            emulator = spec.make_emulator(
                api_keys=[key], render_seconds=render_seconds, clock=clock, webhook_secret=secret
            )
            runner, base_url = await serve(spec.make_app(emulator), host)
            runners.append(runner)
            endpoints[name] = EmulatorEndpoint(
                name, base_url, key, spec.api_key_env, secret, spec.webhook_secret_env, emulator
            )
    except BaseException:
        await sandbox.close()
        raise
    return sandbox
