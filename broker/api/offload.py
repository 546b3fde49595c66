"""Work that grows with a request body (parsing a 13 MB JSON text, decoding and hashing a 10 MB image)
runs here: on a worker thread, so the event loop goes on answering everyone else, and one body at a
time per process, so the loop thread never competes for the interpreter with more than one of them.
A small body (`INLINE_BYTES` or less) is cheaper to handle inline than to hand over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from aiohttp import web

T = TypeVar("T")
INLINE_BYTES = 64 * 1024
_HEAVY_WORK = web.AppKey("heavy_work", asyncio.Semaphore)


def install(app: web.Application) -> None:
    app[_HEAVY_WORK] = asyncio.Semaphore(1)


async def off_loop(app: web.Application, size: int | None, fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)`: inline for a body of at most `INLINE_BYTES`, else on a worker thread, one at a time."""
    if size is not None and size <= INLINE_BYTES:
        return fn(*args)
    async with app[_HEAVY_WORK]:
        return await asyncio.to_thread(fn, *args)
