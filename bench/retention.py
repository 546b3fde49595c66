"""Benchmark retention on Redis: memory per ended job before expiry, and what is left after it (the
daily ledger), for `--jobs` ended jobs (default 100,000).

Each job is what the broker stores for a finished clip: one succeeded attempt with its provider task,
an output, a cost, an idempotency key for a third of them; spread over 30 UTC days, 3 teams and 4
routes. They are written straight through the store API (`create_job`, then the task index), under a
fresh key prefix deleted afterwards. Memory is measured two ways: the sum of `MEMORY USAGE` over the
prefix's keys (exact for this data, whatever else the Redis holds), and the `INFO memory` used_memory
delta against the empty prefix (noisy on a shared Redis). Then `broker.jobs.retention.Expiry` runs as
the broker runs it, clock 120 days on, and the same figures are taken again, with the cost report's
totals before and after (they must be equal).

    python -m bench.retention [--jobs 100000] [--redis-url redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from broker.config import BrokerConfig
from broker.jobs.retention import DAY_S, Expiry
from broker.observability.ledger_figures import ledger_span
from broker.observability.reports import build_report
from broker.schema import Attempt, AttemptStatus, Job, JobRequest, JobStatus, Output, RouteRef
from broker.store import JobRecord
from broker.store.artifacts import FileArtifacts
from broker.store.redis import RedisStore

START = datetime(2026, 10, 1, tzinfo=UTC)
TEAMS = ("growth", "studio", "ads")
ROUTES = (("runway", "gen4_turbo", 250_000), ("fal", "kling", 350_000), ("muvi", "m1", 120_000),
          ("doitong", "seedance", 180_000))
CONCURRENCY = 64


def ended_job(n: int) -> JobRecord:
    created = START + timedelta(seconds=n * 30 * DAY_S / 100_000)
    provider, model, micros = ROUTES[n % len(ROUTES)]
    job_id = f"job_{int(created.timestamp() * 1000):012x}{n:010x}"
    cost = f"{micros / 1e6:.6f}"
    attempt = Attempt(
        id=f"att_{n:016x}", job_id=job_id, provider=provider, model=model,
        status=AttemptStatus.SUCCEEDED, provider_job_id=f"task-{uuid.UUID(int=n)}",
        started_at=created, finished_at=created + timedelta(seconds=90),
        estimated_cost_usd=cost, cost_usd=cost, reported_cost="25 credits",
    )
    output = Output(url=f"/v1/jobs/{job_id}/output", content_type="video/mp4", bytes=2_400_000, width=1280,
                    height=720, duration_s=5.0, sha256=f"{n:064x}")
    job = Job(
        id=job_id, team=TEAMS[n % len(TEAMS)], status=JobStatus.SUCCEEDED,
        request=JobRequest(prompt="a slow zoom over the harbour at dusk"),
        route=RouteRef(provider=provider, model=model), attempts=[attempt], estimated_cost_usd=cost,
        cost_usd=cost, output=output, created_at=created, updated_at=created + timedelta(seconds=95),
        completed_at=created + timedelta(seconds=95),
    )
    return JobRecord(job=job, request_hash=f"{n:064x}", idempotency_key=f"key-{n}" if n % 3 == 0 else None)


async def prefix_bytes(store: RedisStore) -> tuple[int, int]:
    """(keys, summed MEMORY USAGE) under the store's prefix."""
    async with store.client() as client:
        keys = [key async for key in client.scan_iter(match=store.keys.pattern(), count=1000)]
        total = 0
        for at in range(0, len(keys), 1000):
            async with client.pipeline(transaction=False) as pipe:
                for key in keys[at : at + 1000]:
                    pipe.memory_usage(key, samples=0)
                total += sum(size or 0 for size in await pipe.execute())
    return len(keys), total


async def used_memory(store: RedisStore) -> int:
    async with store.client() as client:
        return int((await client.info("memory"))["used_memory"])


async def totals(store: RedisStore) -> dict[str, object]:
    end = START + timedelta(days=31)
    ledger = await store.ledger_rows(*ledger_span(START, end))
    return build_report(await store.jobs_created_between(START, end), (), START, end, ledger).totals.to_json()


async def run(jobs: int, url: str) -> None:
    store = RedisStore.from_url(url, prefix=f"bench-retention-{uuid.uuid4().hex[:8]}")
    await store.open()
    try:
        base_used = await used_memory(store)
        began = time.perf_counter()
        for at in range(0, jobs, CONCURRENCY):
            records = [ended_job(n) for n in range(at, min(at + CONCURRENCY, jobs))]
            await asyncio.gather(*(store.create_job(r) for r in records))
            tasks = [(r.job.attempts[0], r.id) for r in records]
            await asyncio.gather(
                *(store.index_task(a.provider, a.provider_job_id or "", i) for a, i in tasks)
            )
        written_s = time.perf_counter() - began
        keys_before, bytes_before = await prefix_bytes(store)
        used_before = await used_memory(store) - base_used
        report_before = await totals(store)
        with tempfile.TemporaryDirectory() as scratch:
            artifacts = FileArtifacts(Path(scratch))
            await artifacts.open()
            later = (START + timedelta(days=150)).timestamp()
            expiry = Expiry(store, artifacts, BrokerConfig, clock=lambda: later, batch=jobs + 1)
            began = time.perf_counter()
            expired = await expiry.run_once()
            expiry_s = time.perf_counter() - began
        keys_after, bytes_after = await prefix_bytes(store)
        used_after = await used_memory(store) - base_used
        report_after = await totals(store)
        print(f"jobs written: {jobs} in {written_s:.1f} s; expired: {expired} in {expiry_s:.1f} s"
              f" ({expired / expiry_s:.0f} jobs/s)")
        print(f"before expiry: {keys_before} keys, MEMORY USAGE {bytes_before / 2**20:.1f} MiB"
              f" = {bytes_before / jobs:.0f} B per ended job;"
              f" INFO used_memory +{used_before / 2**20:.1f} MiB")
        print(f"after expiry:  {keys_after} keys (the ledger), MEMORY USAGE {bytes_after / 2**10:.1f} KiB"
              f" = {bytes_after / jobs:.2f} B per expired job;"
              f" INFO used_memory +{used_after / 2**20:.1f} MiB")
        print(f"ratio after/before: {bytes_after / bytes_before:.5f}")
        print(f"cost report totals unchanged: {report_before == report_after}"
              f" (jobs {report_after['jobs']}, spend {report_after['spend_usd']} USD)")
    finally:
        await store.drop_all_keys()
        await store.close()


def main() -> None:
    # One log line per expired job would time the terminal, not the store.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    asyncio.run(run(args.jobs, args.redis_url))


if __name__ == "__main__":
    main()
