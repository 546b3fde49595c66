"""Durable broker state behind one interface; the URL's scheme picks the implementation.

`base.py` is the `Store` interface and its records; `sqlite.py` and `redis.py` implement it (both
pass tests/support/store_contract.py); `artifacts.py` is the artifact store for finished videos
(files under the data directory).

May import `broker.schema`, `broker.config`, `pricing` and `adapters` (for types); never
`broker.jobs`, `broker.api`, `broker.cli` or `broker.observability`.
"""

from __future__ import annotations

from broker.store.base import (
    BudgetWindow,
    IdempotencyConflict,
    JobRecord,
    PolicyVersion,
    Reservation,
    Store,
    StoreUnavailable,
    VersionConflict,
)


def open_store(url: str, *, redis_prefix: str = "broker", redis_cluster: bool = False) -> Store:
    """Build (not yet open) the store a `BROKER_STORE_URL` names."""
    if url.startswith("sqlite:///"):
        from broker.store.sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from broker.store.redis import RedisStore

        return RedisStore.from_url(url, prefix=redis_prefix, cluster=redis_cluster)
    raise ValueError(f"unsupported store URL {url.split(':', 1)[0]}:... (use sqlite:/// or redis://)")


__all__ = [
    "BudgetWindow",
    "IdempotencyConflict",
    "JobRecord",
    "PolicyVersion",
    "Reservation",
    "Store",
    "StoreUnavailable",
    "VersionConflict",
    "open_store",
]
