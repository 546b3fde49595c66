"""The Redis under the shared store: the client (one Redis or a cluster), its outages as
`StoreUnavailable`, the key names of one prefix, and the Lua scripts registered on it.

The key layout and why it is so are in `redis.py`; the scripts are the files in `lua/`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Self

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ClusterError, OutOfMemoryError, ReadOnlyError, SlotNotCoveredError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from broker.store.base import JobRecord, StoreUnavailable, unreadable

_POOL_SIZE = 64  # connections per replica; commands take milliseconds, so waiting for one is short
_POOL_WAIT_S = 5.0  # then the store counts as unavailable
# Redis is down, failing over, or full: callers may retry later (HTTP 503). Anything else is a bug.
_OUTAGES = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    ClusterError,
    SlotNotCoveredError,
    OutOfMemoryError,
)


@contextmanager
def outage_as_unavailable() -> Iterator[None]:
    """Turn Redis being unreachable, failing over or full into `StoreUnavailable`."""
    try:
        yield
    except _OUTAGES as exc:
        # The message stays generic: redis-py's text names hosts, which callers need not see.
        raise StoreUnavailable(
            f"the job store (Redis) is unreachable ({type(exc).__name__}); retry shortly"
        ) from exc


# Script arguments ---------------------------------------------------------------------------
def write_token() -> str:
    """A random token a write stores with what it wrote, so a replayed script knows its first run."""
    return uuid.uuid4().hex


def opt_arg(value: str | None) -> str:
    """An optional string as a script argument: "" for None, else "=" + value (so "" stays a value)."""
    return "" if value is None else f"={value}"


def float_arg(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def job_from_row(row: Sequence[Any], job_id: str | None = None) -> JobRecord:
    """A record from its hash fields r, v, o, l (see the key layout)."""
    raw, version, owner, lease = row
    try:
        record = JobRecord.model_validate_json(raw)
    except ValueError as exc:
        raise unreadable(job_id) from exc
    return record.model_copy(
        update={
            "version": int(version),
            "lease_owner": None if owner is None else owner[1:],
            "lease_until": None if lease is None else float(lease),
        }
    )


def _lua(name: str) -> str:
    return (Path(__file__).parent / "lua" / f"{name}.lua").read_text()


# Every job script starts with the shared functions of `job_lib.lua`.
_JOB_LIB = _lua("job_lib")
SCRIPTS = {
    "create": _JOB_LIB + _lua("create_job"),
    "replace": _JOB_LIB + _lua("replace_job"),
    "claim": _JOB_LIB + _lua("claim_due"),
    "reserve": _lua("reserve_budget"),
    "settle": _lua("settle_budget"),
    "put_policy": _lua("put_policy"),
    "create_batch": _lua("create_batch"),
    "reserve_many": _lua("reserve_many"),
    "expire": _lua("expire_job"),
    "expire_batch": _lua("expire_batch"),
}


class RedisKeys:
    """Every key name of one prefix (layout in the module docstring)."""

    def __init__(self, prefix: str) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("the Redis key prefix must not contain '{' or '}' (they delimit hash tags)")
        self.prefix = prefix
        self.jobs = f"{{{prefix}:jobs}}:"
        self.budget = f"{{{prefix}:budget}}:"

    def job(self, job_id: str) -> str:
        return f"{self.jobs}job:{job_id}"

    def cap(self, *parts: str) -> str:
        """Capacity keys (slots and submit windows) share the `{P:cap}` tag."""
        return f"{{{self.prefix}:cap}}:" + ":".join(parts)

    def jobs_index(self, *parts: str) -> str:
        return self.jobs + ":".join(parts)

    def window(self, key: str) -> str:
        return f"{self.budget}w:{key}"

    def reservation(self, job_id: str) -> str:
        return f"{self.budget}res:{job_id}"

    @property
    def open_reservations(self) -> str:
        return f"{self.budget}open"

    def policy(self, team: str, what: str) -> str:
        return f"{{{self.prefix}:policy:{team}}}:{what}"

    def pattern(self) -> str:
        """A SCAN pattern matching every key of this prefix."""
        escaped = "".join(f"\\{c}" if c in "*?[]\\" else c for c in self.prefix)
        return f"{{{escaped}:*"


class RedisConnection:
    """The client of one store and its registered scripts; `RedisStore` holds the operations."""

    def __init__(
        self, url: str, *, prefix: str = "broker", cluster: bool = False, **client_options: Any
    ) -> None:
        self._url = url
        self._keys = RedisKeys(prefix)
        self._cluster = cluster
        self._options = client_options
        self._client: aioredis.Redis | RedisCluster | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._extra_scripts: dict[str, AsyncScript] = {}

    @classmethod
    def from_url(
        cls, url: str, prefix: str = "broker", *, cluster: bool = False, **client_options: Any
    ) -> Self:
        """A store on `url`; `client_options` go to redis-py (URL query options win over them)."""
        return cls(url, prefix=prefix, cluster=cluster, **client_options)

    async def open(self) -> None:
        """Build the client. A single Redis is connected on first use (a broker may start before it);
        a cluster's nodes are discovered here."""
        options: dict[str, Any] = {
            "decode_responses": True,
            # Short timeouts: a vanished Redis must become a 503 quickly, never a hung request.
            "socket_connect_timeout": 2.0,
            "socket_timeout": 5.0,
            "health_check_interval": 15,
            # Retry only a dropped connection (scripts are replay-safe); a timeout fails fast.
            "retry": Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.2), 2, (RedisConnectionError,)),
        }
        client: aioredis.Redis | RedisCluster
        if self._cluster:
            # Per node; the cluster client fails at once beyond it, so it must cover every worker.
            client = RedisCluster.from_url(self._url, **{"max_connections": 1000, **options, **self._options})
        else:
            # A busy replica (many workers, many requests) queues for a connection instead of failing.
            pool_options = {
                "max_connections": _POOL_SIZE,
                "timeout": _POOL_WAIT_S,
                **options,
                **self._options,
            }
            client = aioredis.Redis.from_pool(
                aioredis.BlockingConnectionPool.from_url(self._url, **pool_options)
            )
        self._scripts = {name: client.register_script(text) for name, text in SCRIPTS.items()}
        if isinstance(client, RedisCluster):
            # Discover the nodes now: redis-py 8.1 races when many first commands start the
            # discovery at once (a connection's writer goes missing mid-handshake).
            with outage_as_unavailable():
                await client.initialize()
        self._client = client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        self._client = None

    @property
    def prefix(self) -> str:
        """The namespace of every key this store writes."""
        return self._keys.prefix

    @property
    def _redis(self) -> aioredis.Redis | RedisCluster:
        if self._client is None:
            raise StoreUnavailable("the store is not open")
        return self._client

    @property
    def keys(self) -> RedisKeys:
        """Every key name under this store's prefix."""
        return self._keys

    @asynccontextmanager
    async def client(self) -> AsyncIterator[aioredis.Redis | RedisCluster]:
        """The client, with an outage raised as `StoreUnavailable` (for modules beside the store)."""
        with outage_as_unavailable():
            yield self._redis

    async def key_suffixes(self, prefix: str) -> list[str]:
        """What follows `prefix` in every key that starts with it, sorted (SCAN walks the keyspace in
        small steps, so no single call blocks Redis)."""
        escaped = "".join(f"\\{c}" if c in "*?[]\\" else c for c in prefix)
        found: set[str] = set()
        async with self.client() as client:
            async for key in client.scan_iter(match=f"{escaped}*", count=1000):
                found.add(str(key)[len(prefix) :])
        return sorted(found)

    async def run_script(self, text: str, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        """Run a Lua script registered on first use; every key must share one hash tag."""
        if text not in self._extra_scripts:
            self._extra_scripts[text] = self._redis.register_script(text)
        client = self._redis
        with outage_as_unavailable():
            return await self._extra_scripts[text](keys=list(keys), args=list(args), client=client)

    async def _run(self, script: str, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        client = self._redis
        with outage_as_unavailable():
            return await self._scripts[script](keys=list(keys), args=list(args), client=client)

    async def ping(self) -> None:
        with outage_as_unavailable():
            await self._redis.ping()

    async def drop_all_keys(self) -> None:
        """Delete every key under this store's prefix (tests and teardown)."""
        client = self._redis
        with outage_as_unavailable():
            batch: list[str] = []
            async for key in client.scan_iter(match=self._keys.pattern(), count=500):
                batch.append(key)
                if len(batch) >= 500:
                    await client.unlink(*batch)
                    batch = []
            if batch:
                await client.unlink(*batch)
