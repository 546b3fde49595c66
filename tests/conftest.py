"""Shared fixtures: a store of every kind for the contract suite, and the app under test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from broker.store import Store
from broker.store.sqlite import SQLiteStore

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def _sqlite(tmp_path: Path) -> Store:
    return SQLiteStore(tmp_path / "broker.db")


def _redis(tmp_path: Path) -> Store:
    from broker.store.redis import RedisStore  # type: ignore[import-not-found,unused-ignore]

    # Each test gets its own key prefix; the fixture deletes its keys afterwards.
    store: Store = RedisStore.from_url(REDIS_URL, prefix=f"test-{uuid.uuid4().hex[:12]}")
    return store


STORE_KINDS: dict[str, Callable[[Path], Store]] = {"sqlite": _sqlite}
try:
    import broker.store.redis  # noqa: F401  # type: ignore[import-not-found,unused-ignore]

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
