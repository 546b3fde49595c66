"""Shared fixtures: a store of every kind for the contract suite, and the app under test."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from adapters.outbound import Resolver
from broker.app import create_app
from broker.config import BrokerConfig, parse_config
from broker.settings import Settings
from broker.store import Store
from broker.store.sqlite import SQLiteStore
from tests.fakes import FakeProvider

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def _sqlite(tmp_path: Path) -> Store:
    return SQLiteStore(tmp_path / "broker.db")


def _redis(tmp_path: Path) -> Store:
    from broker.store.redis import RedisStore

    # Each test gets its own key prefix; the fixture deletes its keys afterwards.
    store: Store = RedisStore.from_url(REDIS_URL, prefix=f"test-{uuid.uuid4().hex[:12]}")
    return store


STORE_KINDS: dict[str, Callable[[Path], Store]] = {"sqlite": _sqlite}
try:
    import broker.store.redis  # noqa: F401

    STORE_KINDS["redis"] = _redis
except ImportError:
    pass


@pytest.fixture(params=sorted(STORE_KINDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh, open store of each kind in turn."""
    instance = STORE_KINDS[request.param](tmp_path)
    await instance.open()
    try:
        yield instance
    finally:
        drop: Callable[[], Awaitable[None]] | None = getattr(instance, "drop_all_keys", None)
        if drop is not None:
            await drop()
        await instance.close()


# The app under test -------------------------------------------------------------------------------

GROWTH_KEY = "growth-key-0123456789"
STUDIO_KEY = "studio-key-0123456789"
ADMIN_KEY = "admin-key-0123456789"
TEST_ENV = {"BROKER_KEY_GROWTH": GROWTH_KEY, "BROKER_KEY_STUDIO": STUDIO_KEY, "BROKER_ADMIN_KEY": ADMIN_KEY}


def fake_route(
    provider: str, model: str, usd_per_video: str, latency: int = 30, **extra: Any
) -> dict[str, Any]:
    return {
        "provider": provider,
        "model": model,
        "modes": ["image_to_video", "text_to_video"],
        "durations": {"min": 1, "max": 10},
        "aspect_ratios": ["16:9", "9:16", "1:1", "4:3", "3:4", "21:9"],
        "resolutions": ["720p", "1080p"],
        "features": ["seed", "camera_fixed"],
        "quality": "standard",
        "expected_latency_s": latency,
        "price": {
            "unit": "credits_per_video",
            "amount": str(int(float(usd_per_video) * 100)),
            "usd_per_credit": "0.01",
        },
        **extra,
    }


def fake_config(**policies: Any) -> BrokerConfig:
    return parse_config(
        {
            "providers": {"cheap": {}, "dear": {}},
            "routes": [fake_route("cheap", "c1", "0.10"), fake_route("dear", "d1", "0.50")],
            "admin": {"api_key_env": "BROKER_ADMIN_KEY"},
            "teams": [
                {"name": "growth", "api_key_env": "BROKER_KEY_GROWTH", "policy": "growth"},
                {"name": "studio", "api_key_env": "BROKER_KEY_STUDIO"},
            ],
            "policies": {"default": {"max_attempts": 3}, "growth": policies.get("growth", {})},
        },
        "test-config",
    )


async def fast_sleep(seconds: float) -> None:
    await asyncio.sleep(0)


@pytest.fixture
def providers() -> dict[str, FakeProvider]:
    return {"cheap": FakeProvider("cheap"), "dear": FakeProvider("dear")}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(store_url=f"sqlite:///{tmp_path}/broker.db", data_dir=tmp_path / "data", workers=2)


@pytest.fixture
def make_client(
    aiohttp_client: Any, settings: Settings, providers: dict[str, FakeProvider]
) -> Callable[..., Awaitable[TestClient[Any, Any]]]:
    """Start the app on a fake config and fake providers; keyword overrides for settings/config."""

    async def make(
        config: BrokerConfig | None = None, resolver: Resolver | None = None, **setting_overrides: Any
    ) -> TestClient[Any, Any]:
        factories = {name: fake.build for name, fake in providers.items()}
        app = create_app(
            Settings(**{**settings.model_dump(), **setting_overrides}),
            config or fake_config(),
            env=TEST_ENV,
            factories=factories,
            sleep=fast_sleep,
            resolver=resolver,
        )
        client: TestClient[Any, Any] = await aiohttp_client(app)
        return client

    return make


def auth(key: str = GROWTH_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
