"""The broker serving the real catalog against the provider emulators, and the official `openai` client
pointed at it (`AsyncOpenAI(api_key=team key, base_url=<broker>/v1)`), for tests/test_openai_videos*.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from openai import AsyncOpenAI

from adapters.emulators.sandbox import Sandbox
from broker.api.app import create_app
from broker.cli.sandbox import start_sandboxed
from broker.config import BrokerConfig, load_config, parse_config
from broker.settings import Settings
from tests.support.deployment import STUDIO_KEY, TEST_ENV, fast_sleep
from tests.support.paths import ROOT

IMAGE_HOST = "images.example.com"  # the emulators take an image URL without fetching it


def catalog(**policies: Any) -> BrokerConfig:
    """config.yaml's catalog without the local torch backend (these tests are about the remote
    providers and must not render on the CPU), with the given team policies."""
    raw = load_config(ROOT / "config.yaml").model_dump(mode="json", exclude_none=True)
    raw["providers"].pop("local")
    raw["routes"] = [route for route in raw["routes"] if route["provider"] != "local"]
    raw["policies"].update(policies)
    return parse_config(raw, "openai videos test catalog")


@dataclass
class Rig:
    sandbox: Sandbox
    http: TestClient[Any, Any]  # the broker's own API, for /v1/jobs and raw requests
    openai: AsyncOpenAI

    def client(self, key: str) -> AsyncOpenAI:
        return AsyncOpenAI(api_key=key, base_url=str(self.http.make_url("/v1")), max_retries=0)


@asynccontextmanager
async def openai_rig(
    tmp_path: Path, *, render_seconds: float = 0.05, config: BrokerConfig | None = None
) -> AsyncIterator[Rig]:
    sandbox, routed, env = await start_sandboxed(config or catalog(), TEST_ENV, render_seconds=render_seconds)
    settings = Settings(
        store_url=f"sqlite:///{tmp_path}/broker.db",
        data_dir=tmp_path / "data",
        outbound_allow=IMAGE_HOST,
        workers=2,
    )
    app = create_app(settings, routed, env=env, sleep=fast_sleep)
    http: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await http.start_server()
    openai = AsyncOpenAI(api_key=STUDIO_KEY, base_url=str(http.make_url("/v1")), max_retries=0)
    try:
        yield Rig(sandbox, http, openai)
    finally:
        await openai.close()
        await http.close()
        await sandbox.close()
