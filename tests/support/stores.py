"""Every kind of store the tests run on: SQLite always, Redis when its client is installed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from broker.store import Store
from broker.store.sqlite import SQLiteStore
from tests.support.deployment import REDIS_URL
from tests.support.redis_proxy import fresh_prefix

if TYPE_CHECKING:
    from broker.store.redis import RedisStore


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


@asynccontextmanager
async def open_redis_store(url: str = REDIS_URL, **options: Any) -> AsyncIterator[RedisStore]:
    """An open Redis store on a fresh prefix (unless `prefix` is given), its keys dropped afterwards."""
    from broker.store.redis import RedisStore

    store = RedisStore.from_url(url, **{"prefix": fresh_prefix(), **options})
    await store.open()
    try:
        yield store
    finally:
        await store.drop_all_keys()
        await store.close()
