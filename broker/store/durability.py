"""What a store's own setup says about keeping acknowledged writes: a Redis without `appendonly yes`
loses the last jobs and budget changes it acknowledged when it restarts (the README requires it).

Asked at `broker serve`'s start and by `/readyz`, which report it without refusing to serve.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import RedisError

from broker.store.base import Store, StoreUnavailable

APPENDONLY_OFF = (
    "the Redis store runs without `appendonly yes`: jobs and budgets acknowledged since its last"
    " snapshot are lost when it restarts (set `appendonly yes` in its configuration)"
)


def _appendonly_values(answer: Any) -> list[str]:
    """The `appendonly` values of a CONFIG GET answer: one server's, or each cluster node's."""
    if not isinstance(answer, dict):
        return []
    if "appendonly" in answer:
        return [str(answer["appendonly"])]
    return [v for node in answer.values() for v in _appendonly_values(node)]


async def durability_problem(store: Store) -> str | None:
    """Why `store` would lose acknowledged writes on a restart, or None (SQLite syncs each commit;
    a Redis whose CONFIG is disabled, as on some managed services, cannot be asked and is trusted)."""
    client_of = getattr(store, "client", None)
    if client_of is None:
        return None
    try:
        async with client_of() as client:
            answer = await client.config_get("appendonly")
    except (RedisError, StoreUnavailable):  # an outage is /readyz's ping's to report
        return None
    values = _appendonly_values(answer)
    return APPENDONLY_OFF if any(v.lower() != "yes" for v in values) else None
