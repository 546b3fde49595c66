"""Work that grows with a request body (parsing a 13 MB JSON text, decoding and hashing a 10 MB image)
runs here, off the event loop, one body at a time per process, so the loop goes on answering everyone
else.

Two places: a worker thread for work that mostly releases the interpreter lock (hashing, zlib, file
I/O: an uploaded image), and a worker process for pure-Python work that holds it (decoding and
validating a JSON body of `PROCESS_BYTES` or more, such as a 10 MB `data:` URI): on a thread, that
work makes the loop thread wait for the lock after every socket call, stalling every request on the
replica (`python -m bench.hostile --bodies json` measured /healthz p99 ~220 ms that way). The process
starts on the first such body and stops with the app; where it cannot run, the work goes to a thread.
A small body (`INLINE_BYTES` or less) is handled inline.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

import structlog
from aiohttp import web

T = TypeVar("T")
INLINE_BYTES = 64 * 1024
PROCESS_BYTES = 1024 * 1024
log = structlog.get_logger("broker.offload")


class HeavyWork:
    """One body's work at a time, on a thread or in the app's worker process."""

    def __init__(self) -> None:
        self.turn = asyncio.Semaphore(1)
        self._pool: ProcessPoolExecutor | None = None
        self.process_usable = True
        self.processes_started = 0

    def pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn: forking a process that runs threads (the store's, the resolver's) is unsafe.
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            self.processes_started += 1
        return self._pool

    def reset(self) -> None:
        """Drop the pool (its process died, or the app stops); the next body starts a new one."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None


HEAVY_WORK = web.AppKey("heavy_work", HeavyWork)


def install(app: web.Application) -> None:
    work = HeavyWork()
    app[HEAVY_WORK] = work

    async def stop_the_process(_: web.Application) -> AsyncIterator[None]:
        yield
        work.reset()

    app.cleanup_ctx.append(stop_the_process)


async def off_loop(app: web.Application, size: int | None, fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)` (blocking work that mostly releases the interpreter lock): inline for a body of at
    most `INLINE_BYTES`, else on a worker thread, one body at a time."""
    if size is not None and size <= INLINE_BYTES:
        return fn(*args)
    async with app[HEAVY_WORK].turn:
        return await asyncio.to_thread(fn, *args)


async def in_process(app: web.Application, size: int, fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)` (pure-Python work; `fn`, its arguments and its result picklable): in the worker
    process for a body of `PROCESS_BYTES` or more, else as `off_loop` runs it. Its exceptions come
    back as raised."""
    work = app[HEAVY_WORK]
    if size < PROCESS_BYTES or not work.process_usable:
        return await off_loop(app, size, fn, *args)
    async with work.turn:
        try:
            return await asyncio.get_running_loop().run_in_executor(work.pool(), fn, *args)
        except BrokenProcessPool:  # the process died (killed, out of memory): this body on a thread
            work.reset()
        except RuntimeError as exc:  # no process can start here (an unguarded __main__): threads
            log.warning("offload_process_unavailable", error=str(exc).strip().splitlines()[0])
            work.reset()
            work.process_usable = False
        return await asyncio.to_thread(fn, *args)
