"""Benchmark the stores: job lifecycles per second and per-call latency, SQLite against Redis.

One lifecycle is what the broker does per job: create it, reserve its budget, claim it, mark it running,
mark it succeeded, settle its budget (six store calls, four of them writes). `--workers` lifecycles run
concurrently in one event loop; for Redis, `--replicas` separate store clients share the work, as
broker replicas would share one Redis. Redis keys go under a fresh prefix that is deleted afterwards.

    python -m bench.store [--jobs 2000] [--workers 16] [--replicas 3] [--redis-url redis://...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

from broker.schema import Job, JobRequest, JobStatus
from broker.store import BudgetWindow, JobRecord, Store
from broker.store.redis import RedisStore
from broker.store.sqlite import SQLiteStore

T = TypeVar("T")
WINDOWS = [BudgetWindow("bench:day", 10**15), BudgetWindow("bench:month", 10**15)]
REQUEST = JobRequest(prompt="a slow zoom in")


@dataclass
class Timings:
    calls: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    async def time(self, name: str, call: Awaitable[T]) -> T:
        """Await `call`, recording how long it took under `name`."""
        start = time.perf_counter()
        result = await call
        self.calls[name].append(time.perf_counter() - start)
        return result


def new_record(sequence: int) -> JobRecord:
    now = datetime.now(UTC)
    job_id = f"job_{int(now.timestamp() * 1000):012x}{sequence:08x}{uuid.uuid4().hex[:6]}"
    job = Job(
        id=job_id, team="bench", status=JobStatus.QUEUED, request=REQUEST, created_at=now, updated_at=now
    )
    return JobRecord(job=job, request_hash="0" * 64)


async def lifecycle(store: Store, sequence: int, owner: str, timings: Timings) -> None:
    """One job from creation to a settled budget; the claim may pick any queued job."""
    record = new_record(sequence)
    await timings.time("create_job", store.create_job(record))
    await timings.time("reserve_budget", store.reserve_budget(record.id, 50_000, WINDOWS))
    claimed = await timings.time("claim_job", store.claim_job(owner, time.time(), 60.0))
    if claimed is None:
        raise RuntimeError("a created job was not claimable")
    running = await timings.time("replace_job", store.replace_job(claimed.evolve(status=JobStatus.RUNNING)))
    if running is None:
        raise RuntimeError("a leased job changed under its owner")
    done = await timings.time("replace_job", store.replace_job(running.evolve(status=JobStatus.SUCCEEDED)))
    if done is None:
        raise RuntimeError("a leased job changed under its owner")
    await timings.time("settle_budget", store.settle_budget(claimed.id, 40_000))


async def run(stores: list[Store], jobs: int, workers: int) -> tuple[float, Timings]:
    """Run `jobs` lifecycles, `workers` at a time spread over `stores`; return seconds and timings."""
    timings = Timings()
    counter = iter(range(jobs))

    async def worker(index: int) -> None:
        store = stores[index % len(stores)]
        for sequence in counter:
            await lifecycle(store, sequence, f"worker-{index}", timings)

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(workers)))
    return time.perf_counter() - start, timings


def report(label: str, jobs: int, seconds: float, timings: Timings) -> None:
    print(f"{label}: {jobs} lifecycles in {seconds:.2f} s = {jobs / seconds:,.0f} jobs/s")
    for name, samples in sorted(timings.calls.items()):
        cuts = statistics.quantiles(samples, n=100)
        print(
            f"  {name:15} p50 {cuts[49] * 1e3:6.2f} ms  p99 {cuts[98] * 1e3:6.2f} ms  ({len(samples)} calls)"
        )


async def bench(label: str, open_stores: Callable[[], list[Store]], jobs: int, workers: int) -> None:
    stores = open_stores()
    for store in stores:
        await store.open()
    try:
        seconds, timings = await run(stores, jobs, workers)
        report(label, jobs, seconds, timings)
    finally:
        drop = getattr(stores[0], "drop_all_keys", None)
        if drop is not None:
            await drop()
        for store in stores:
            await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        await bench("sqlite", lambda: [SQLiteStore(Path(tmp) / "bench.db")], args.jobs, args.workers)
    prefix = f"bench-{uuid.uuid4().hex[:12]}"

    def redis_stores(count: int) -> list[Store]:
        return [RedisStore.from_url(args.redis_url, prefix=prefix) for _ in range(count)]

    for replicas in sorted({1, args.replicas}):
        await bench(f"redis, {replicas} client(s)", partial(redis_stores, replicas), args.jobs, args.workers)


if __name__ == "__main__":
    asyncio.run(main())
