"""Shared fixtures: a store of every kind for the contract suite, and the app under test."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from adapters.outbound import Resolver
from broker.api.app import create_app
from broker.config import BrokerConfig
from broker.settings import Settings
from broker.store import Store
from broker.store.redis import RedisStore
from tests.support.deployment import REDIS_URL, TEST_ENV, fake_config, fast_sleep
from tests.support.fakes import FakeProvider
from tests.support.redis_proxy import fresh_prefix
from tests.support.stores import STORE_KINDS
from tests.support.tracebacks import install as install_traceback_guard

install_traceback_guard()


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """`configure_logging` sets process-wide handlers, as `serve` does once per process: a test that
    calls it leaves none of them to the tests after it (their captured stderr would fill with
    aiohttp's access lines)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


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


# Redis shared by several replicas ------------------------------------------------------------------
@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A fresh Redis key prefix for broker processes under test; its keys are deleted afterwards."""
    name = fresh_prefix()
    yield name
    store = RedisStore.from_url(REDIS_URL, prefix=name)
    await store.open()
    await store.drop_all_keys()
    await store.close()


@pytest.fixture
async def replicas() -> AsyncIterator[list[RedisStore]]:
    """Three stores on one prefix, each with its own connection pool, as three replicas would have."""
    name = fresh_prefix()
    stores = [RedisStore.from_url(REDIS_URL, prefix=name) for _ in range(3)]
    for replica in stores:
        await replica.open()
    try:
        yield stores
    finally:
        await stores[0].drop_all_keys()
        for replica in stores:
            await replica.close()
