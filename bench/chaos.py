"""Chaos: jobs over several broker replicas on one Redis while the providers push back and a replica dies.

Three `broker serve` processes (default settings: the 60 s lease, 16 workers) share one Redis
prefix and one data directory. Jobs go to PixelAPI (capped at 5 renders, its own 429s), Runway
and doitong emulators, each its own process. A chaos driver keeps planting faults in the emulators:
429s with a `Retry-After` of 1–10 s, 5xx answers on submits and polls, submits and downloads slower
than the lease. Once a third of the jobs have ended, replica 0 is SIGKILLed. Every job asks for a
team webhook, received here.

At the end it prints, per provider, the tasks the emulator made against the attempts the broker
booked, and the USD the broker booked against what the emulator charged (by the catalog's rate), the
most downloads of any one task's output, and the outputs downloaded more than once, split by the
replicas' logs (`bench.refetches`) into those the kill explains (the killed replica's download, never
finished, fetched again after its lease lapsed) and the rest, which break the invariant; then the jobs
by status and the webhook deliveries: jobs whose end was delivered at least once, and the duplicates a
receiver removes by `webhook-id`.

    python -m bench.chaos [--jobs 300] [--replicas 3] [--lease-s 60] [--seed 7]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import random
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from PIL import Image

from bench.refetches import Refetches, classify, downloads_by_attempt, fetches_in_logs
from broker.config import load_config
from pricing.money import Money
from pricing.units import CostUnit, ReportedCost
from tests.support.deployment import REDIS_URL
from tests.support.procs import (
    PROVIDER_KEY_ENV,
    Broker,
    Cluster,
    Emulator,
    free_port,
    wait_until_settled,
)
from tests.support.redis_proxy import fresh_prefix

ROOT = Path(__file__).resolve().parents[1]
PROVIDERS = ("pixelapi", "runway", "doitong")
DOITONG_PRICE = {"unit": "credits_per_video", "amount": "60", "usd_per_credit": "0.005"}
URL_IMAGE = "https://127.0.0.1:9/harbour.png"  # doitong and Runway take URLs; the emulators never fetch
SECRET = "chaos-webhook-secret-0123456789"
MAX_PENDING_FAULTS = 2
CHAOS_S = 240.0  # how long the providers misbehave
SETTLE_S = 3600.0  # how long every job may take to end
RENDER_S = 3
KEEP = "--keep" in sys.argv  # leave the processes' logs behind


def data_uri() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 36), (40, 90, 160)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def write_config(workdir: Path, emulators: dict[str, Emulator], lease_s: float) -> Path:
    """config.yaml's routes for the three providers, on their emulators, doitong priced, each
    request timeout within half a lease (the shipped 30 s at the default lease)."""
    raw = load_config(ROOT / "config.yaml").model_dump(mode="json", exclude_none=True)
    routes = [r for r in raw["routes"] if r["provider"] in PROVIDERS]
    for route in routes:
        if route["provider"] == "doitong":
            route["price"] = DOITONG_PRICE
        # The emulators render in seconds: the first poll is timed from this, not from real renders'.
        route["expected_latency_s"] = RENDER_S
    providers = {
        name: {
            **raw["providers"][name],
            "base_url": emulators[name].base_url,
            "api_key_env": PROVIDER_KEY_ENV[name],
            "timeout_s": min(raw["providers"][name].get("timeout_s", 30.0), lease_s / 2),
        }
        for name in PROVIDERS
    }
    config = {
        "providers": providers,
        "routes": routes,
        "admin": {"api_key_env": "BROKER_ADMIN_KEY"},
        "teams": [{"name": "replica", "api_key_env": "BROKER_KEY_REPLICA", "policy": "replica"}],
        "policies": {"default": {"max_attempts": 3}, "replica": {}},
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Receiver:
    """The team's webhook endpoint: each delivery's id, job and type, as a receiver sees them."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[str, str, str]] = []  # (webhook-id, job id, type)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.deliveries.append((request.headers["webhook-id"], body["data"]["id"], body["type"]))
        return web.Response(status=204)


async def chaos(
    emulators: dict[str, Emulator], lease_s: float, rng: random.Random, stop: asyncio.Event
) -> int:
    """Plant a random fault in a random emulator every second (while it has fewer than
    `MAX_PENDING_FAULTS` waiting for requests) for `CHAOS_S`, or until stopped; returns how many.
    Then the providers behave, and the run shows every job ending."""
    planted = 0
    slow = lease_s * 1.2
    until = time.monotonic() + CHAOS_S
    while not stop.is_set() and time.monotonic() < until:
        await asyncio.sleep(1.0)
        name = rng.choice(PROVIDERS)
        if len(await emulators[name].admin("faults")) >= MAX_PENDING_FAULTS:
            continue  # a quiet provider is not buried under faults its traffic never reaches
        fault = rng.choice(
            [
                {
                    "kind": "rate_limit",
                    "endpoint": "submit",
                    "count": rng.randint(1, 3),
                    "retry_after_s": rng.randint(1, 10),
                },
                {"kind": "server_error", "endpoint": "submit", "count": rng.randint(1, 2)},
                {"kind": "server_error", "endpoint": "status", "count": rng.randint(1, 3)},
                {"kind": "slow", "endpoint": "submit", "count": 1, "delay_s": slow},
                {"kind": "slow", "endpoint": "download", "count": 1, "delay_s": slow},
            ]
        )
        await emulators[name].add_faults([fault])
        planted += 1
    return planted


async def run(jobs: int, replicas: int, lease_s: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    receiver = Receiver()
    hooks = web.Application()
    hooks.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(hooks, access_log=None)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    try:
        return await _run(jobs, replicas, lease_s, rng, receiver, hook_port)
    finally:
        await runner.cleanup()


async def _run(
    jobs: int, replicas: int, lease_s: float, rng: random.Random, receiver: Receiver, hook_port: int
) -> dict[str, Any]:
    prefix = fresh_prefix()
    tmp = tempfile.mkdtemp(prefix="chaos-")
    print(f"logs under {tmp}", file=sys.stderr)
    try:
        return await _in(tmp, jobs, replicas, lease_s, rng, receiver, hook_port, prefix)
    finally:
        if not KEEP:
            shutil.rmtree(tmp, ignore_errors=True)


async def _in(
    tmp: str,
    jobs: int,
    replicas: int,
    lease_s: float,
    rng: random.Random,
    receiver: Receiver,
    hook_port: int,
    prefix: str,
) -> dict[str, Any]:
    async with Cluster(Path(tmp)) as cluster:
        emulators = {name: await cluster.emulator(name, render_seconds=RENDER_S) for name in PROVIDERS}
        config = write_config(Path(tmp), emulators, lease_s)
        brokers = await cluster.brokers(
            replicas,
            config,
            store_url=REDIS_URL,
            data_dir=Path(tmp) / "data",
            lease_s=lease_s,
            workers=16,
            redis_prefix=prefix,
            webhook_secret=SECRET,
            log_level="info",  # the download lines that say which replica fetched each output
        )
        stop = asyncio.Event()
        driver = asyncio.create_task(chaos(emulators, lease_s, rng, stop))
        image = data_uri()
        started = time.monotonic()
        ids = []
        for i in range(jobs):
            body: dict[str, Any] = {
                "prompt": f"chaos {i}",
                "webhook_url": f"http://127.0.0.1:{hook_port}/hook",
            }
            if i % 3 == 2:
                body |= {"image_url": URL_IMAGE, "constraints": {"providers": ["doitong", "runway"]}}
            else:
                body |= {"image_url": image}
            job = await brokers[i % replicas].submit(body)
            ids.append(job["id"])
        killed_at, killed_wall = await _kill_when_a_third_ended(brokers, ids)
        live = brokers[1:]
        progress = asyncio.create_task(_report_progress(live[0], started))
        try:
            settled = await wait_until_settled(live, ids, timeout_s=SETTLE_S)
        finally:
            progress.cancel()
        stop.set()
        planted = await driver
        await _wait_for_webhooks(receiver, set(ids), timeout_s=180)
        elapsed = time.monotonic() - started
        logs = {i: broker.proc.log_path for i, broker in enumerate(brokers)}
        refetches = await _refetches(emulators, settled, logs, killed_wall)
        return await _tally(emulators, settled, receiver, planted, killed_at, elapsed, config, refetches)


async def _kill_when_a_third_ended(brokers: list[Broker], ids: list[str]) -> tuple[float, datetime]:
    """Kill replica 0 once a third of a sample of the jobs ended: when, since the start and in UTC."""
    started = time.monotonic()
    while True:
        done = 0
        for job_id in ids[:: max(1, len(ids) // 60)]:
            job = await brokers[1].job(job_id)
            done += job["status"] in ("succeeded", "failed", "cancelled")
        if done >= len(ids[:: max(1, len(ids) // 60)]) / 3:
            killed_wall = datetime.now(UTC)  # before the signal: nothing it logs comes after
            brokers[0].kill()
            return time.monotonic() - started, killed_wall
        await asyncio.sleep(1.0)


async def _report_progress(broker: Broker, started: float) -> None:
    """A line on stderr every 15 s: the jobs by status, so a long run shows it is moving."""
    while True:
        await asyncio.sleep(15)
        counts = Counter(job["status"] for job in await broker.all_jobs())
        print(f"{time.monotonic() - started:6.0f} s  {dict(counts)}", file=sys.stderr, flush=True)


async def _wait_for_webhooks(receiver: Receiver, ids: set[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ids <= {job for _, job, _ in receiver.deliveries}:
            return
        await asyncio.sleep(0.5)


async def _refetches(
    emulators: dict[str, Emulator],
    jobs: dict[str, dict[str, Any]],
    logs: dict[int, Path],
    killed_wall: datetime,
) -> dict[str, Refetches]:
    """Per provider, its outputs downloaded more than once, as the replicas' logs explain them."""
    attempt_of_task = {
        attempt["provider_job_id"]: attempt["id"]
        for job in jobs.values()
        for attempt in job["attempts"]
        if attempt["provider_job_id"]
    }
    fetches = fetches_in_logs(logs)
    found = {}
    for name, emulator in emulators.items():
        paths = [r["path"] for r in await emulator.admin("requests") if r["endpoint"] == "download"]
        downloads = downloads_by_attempt(paths, attempt_of_task)
        found[name] = classify(downloads, fetches, killed=0, killed_at=killed_wall)
    return found


async def _tally(
    emulators: dict[str, Emulator],
    jobs: dict[str, dict[str, Any]],
    receiver: Receiver,
    planted: int,
    killed_at: float,
    elapsed: float,
    config: Path,
    refetches: dict[str, Refetches],
) -> dict[str, Any]:
    routes = {f"{r.provider}/{r.model}": r for r in load_config(config).routes}
    booked: dict[str, Money] = defaultdict(Money.zero)
    attempts: Counter[str] = Counter()
    for job in jobs.values():
        for attempt in job["attempts"]:
            if attempt["provider_job_id"] or attempt.get("unconfirmed_usd"):
                attempts[attempt["provider"]] += 1
                booked[attempt["provider"]] += Money.parse(attempt["cost_usd"] or "0")
    rows = []
    for name, emulator in emulators.items():
        tasks = await emulator.admin("tasks")
        price = next(r.price for r in routes.values() if r.provider == name and r.price is not None)
        assert price is not None
        charged = sum(
            (price.reported_to_money(ReportedCost(Decimal(t["charged"]), CostUnit.CREDITS)) for t in tasks),
            Money.zero(),
        )
        downloads = Counter(
            r["path"] for r in await emulator.admin("requests") if r["endpoint"] == "download"
        )
        rows.append(
            {
                "provider": name,
                "tasks": len(tasks),
                "attempts_booked": attempts[name],
                "booked_usd": str(booked[name]),
                "charged_usd": str(charged),
                "max_downloads_per_output": max(downloads.values(), default=0),
                "refetched_after_kill": len(refetches[name].after_kill),
                "refetched_unexplained": len(refetches[name].unexplained),
            }
        )
    ends = {job_id for _, job_id, kind in receiver.deliveries if kind != "job.cost_corrected"}
    return {
        "rows": rows,
        "statuses": dict(Counter(job["status"] for job in jobs.values())),
        "errors": dict(Counter(job["error"]["code"] for job in jobs.values() if job.get("error"))),
        "webhook_jobs_delivered": len(ends & set(jobs)),
        "webhook_deliveries": len(receiver.deliveries),
        "webhook_duplicates": len(receiver.deliveries) - len({d[0] for d in receiver.deliveries}),
        "faults_planted": planted,
        "killed_at_s": round(killed_at, 1),
        "elapsed_s": round(elapsed, 1),
        "jobs": len(jobs),
        "unexplained": {
            attempt_id: [f.describe() for f in logged]
            for found in refetches.values()
            for attempt_id, logged in found.unexplained.items()
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--lease-s", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the processes' logs")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.jobs, args.replicas, args.lease_s, args.seed))
    print(
        f"{result['jobs']} jobs over {args.replicas} replicas (lease {args.lease_s:g} s), "
        f"{result['faults_planted']} faults planted, replica 0 SIGKILLed at {result['killed_at_s']} s, "
        f"all ended in {result['elapsed_s']} s"
    )
    print(
        f"{'provider':<10} {'tasks':>6} {'attempts booked':>16} {'booked USD':>12} {'charged USD':>12} "
        f"{'max fetches/output':>19} {'re-fetched after kill':>22} {'fetched twice, unexplained':>27}"
    )
    for row in result["rows"]:
        print(
            f"{row['provider']:<10} {row['tasks']:>6} {row['attempts_booked']:>16} {row['booked_usd']:>12} "
            f"{row['charged_usd']:>12} {row['max_downloads_per_output']:>19} "
            f"{row['refetched_after_kill']:>22} {row['refetched_unexplained']:>27}"
        )
    for attempt_id, logged in result["unexplained"].items():
        print(f"unexplained: attempt {attempt_id}: " + "; ".join(logged or ["no fetch logged"]))
    print(f"jobs by status: {result['statuses']}; errors: {result['errors']}")
    print(
        f"webhooks: {result['webhook_jobs_delivered']} of {result['jobs']} jobs' ends delivered, "
        f"{result['webhook_deliveries']} deliveries, {result['webhook_duplicates']} duplicates by webhook-id"
    )
    ok = all(
        r["tasks"] == r["attempts_booked"]
        and r["booked_usd"] == r["charged_usd"]
        and r["refetched_unexplained"] == 0
        for r in result["rows"]
    )
    ok = ok and result["webhook_jobs_delivered"] == result["jobs"]
    print("invariants hold" if ok else "INVARIANTS BROKEN")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
