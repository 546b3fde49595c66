"""Every kind of store the tests run on: SQLite always, Redis when its client is installed."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from broker.store import Store
from broker.store.sqlite import SQLiteStore
from tests.support.deployment import REDIS_URL


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
