"""One sandbox per store: `serve --sandbox` claims its store while its emulators run.

A sandbox's emulators live in its own process, and the provider tasks of its jobs live in them: a
second sandbox on the same store would take those jobs' steps and poll its own emulators, which never
heard of the tasks. So the second one is refused at start, with a line naming the first.

SQLite: an exclusive `flock` on `<db>.sandbox.lock`, held while the process lives (the kernel drops it
when the process dies). Redis: the key `{<prefix>:sandbox}:owner`, set only if absent, with a 30 s expiry
renewed every 10 s, deleted at a clean stop; a crashed sandbox's claim lapses within 30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import structlog

from broker.cli import CommandFailed
from broker.settings import Settings

log = structlog.get_logger("broker.cli.sandbox")

CLAIM_TTL_MS = 30_000
RENEW_EVERY_S = 10.0
# Renew (or release) the claim only while it is still ours.
_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def _refusal(owner: str, store: str) -> CommandFailed:
    return CommandFailed(
        f"{owner} already runs on the store {store}: its emulators hold its jobs' provider tasks, so a "
        "second sandbox on that store would poll the wrong emulators. Stop that one, or give this one "
        "a store of its own (another BROKER_DATA_DIR, or BROKER_SANDBOX_STORE_URL / BROKER_REDIS_PREFIX)"
    )


@contextlib.contextmanager
def _file_claim(db: Path, owner: str) -> Any:
    db.parent.mkdir(parents=True, exist_ok=True)
    path = db.with_name(db.name + ".sandbox.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another sandbox"
            raise _refusal(held, f"sqlite:///{db}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner.encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor drops the lock


async def _renew(client: Any, key: str, owner: str) -> None:
    while True:
        await asyncio.sleep(RENEW_EVERY_S)
        try:
            if not await client.eval(_RENEW, 1, key, owner, CLAIM_TTL_MS):
                log.error("sandbox_claim_lost", key=key, reason="another sandbox holds the store now")
                return
        except Exception as exc:  # the store is out for a while: try again at the next round
            log.warning("sandbox_claim_not_renewed", key=key, error=str(exc))


@contextlib.asynccontextmanager
async def _redis_claim(settings: Settings, owner: str) -> AsyncIterator[None]:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    url = settings.store_url
    client: Any = RedisCluster.from_url(url) if settings.redis_cluster else Redis.from_url(url)
    key = f"{{{settings.redis_prefix}:sandbox}}:owner"  # under the store's own key pattern
    try:
        if not await client.set(key, owner, nx=True, px=CLAIM_TTL_MS):
            held = await client.get(key)
            shown = held.decode(errors="replace") if isinstance(held, bytes) else "another sandbox"
            raise _refusal(shown, f"{url.split('@')[-1]} (prefix {settings.redis_prefix!r})")
        renewal = asyncio.create_task(_renew(client, key, owner))
        try:
            yield
        finally:
            renewal.cancel()
            with contextlib.suppress(Exception):
                await client.eval(_RELEASE, 1, key, owner)
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def claim_store(settings: Settings, owner: str) -> AsyncIterator[None]:
    """Hold the sandbox's claim on `settings.store_url` for the block; `CommandFailed` if another has it."""
    url = settings.store_url
    if url.startswith("sqlite:///"):
        with _file_claim(Path(url.removeprefix("sqlite:///")), owner):
            yield
    elif url.startswith(("redis://", "rediss://", "unix://")):
        async with _redis_claim(settings, owner):
            yield
    else:
        yield
