"""Jobs in flight at a provider: how many renders one broker process keeps at the provider at once.

Starts the project's Runway emulator (renders of `--render-s` seconds, no concurrency cap) and one
`broker serve` with default settings on SQLite or Redis, submits `--jobs` image-to-video jobs through
the HTTP API, and prints over time: tasks in flight at the provider (counted by the emulator), the
broker's CPU (cores) and RSS, and at the end polls per finished job and provider submits per second.

    python -m bench.inflight [--jobs 10000] [--render-s 120] [--store sqlite|redis] [--redis-url ...]
                             [--litellm /path/to/venv/bin/litellm [--peer-jobs 2000]]
                             [--cap N] [--rpm N] [--compare-limits]

With `--cap`/`--rpm`, Runway gets that `max_concurrency`/`requests_per_minute`; `--compare-limits` runs
once without and once with them (set above what the run reaches) and prints the two runs' accept and
submit rates as ratios: what keeping the count of slots and of the rolling minute costs.

With `--litellm`, the same run first sends `--peer-jobs` requests through the LiteLLM proxy to a second
emulator of the same kind and prints its provider submits per second beside the broker's, as a ratio.

Everything listens on 127.0.0.1; Redis keys go under a fresh prefix that is deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
TEAM_KEY = "bench-team-key-0123456789"
PROVIDER_KEY = "emulator-key"
ROUTE = {
    "provider": "runway",
    "model": "gen4_turbo",
    "modes": ["image_to_video"],
    "durations": {"min": 2, "max": 10},
    "aspect_ratios": ["16:9"],
    "resolutions": ["720p"],
    "features": ["seed"],
    "quality": "standard",
    "expected_latency_s": 90,
    "price": {"unit": "credits_per_second", "amount": "5", "usd_per_credit": "0.01"},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def image_data_uri() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 36), (30, 90, 160)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@dataclass
class Sample:
    at: float
    in_flight: int
    cpu_cores: float
    rss_mb: float
    finished: int


@dataclass
class ProcStat:
    pid: int
    last: tuple[float, float] = field(default=(0.0, 0.0))

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def cores_since_last(self) -> float:
        now, cpu = time.monotonic(), self.cpu_seconds()
        then, before = self.last
        self.last = (now, cpu)
        return 0.0 if then == 0.0 else (cpu - before) / (now - then)


async def start(args: list[str], env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    handle = log.open("wb")
    return await asyncio.create_subprocess_exec(*args, env=env, stdout=handle, stderr=handle, cwd=ROOT)


async def start_emulator(
    port: int, render_s: float, env: dict[str, str], log: Path
) -> asyncio.subprocess.Process:
    """The project's Runway emulator on `port`, renders of `render_s` seconds, accepting PROVIDER_KEY."""
    args = ["--port", str(port), "--render-seconds", str(render_s), "--api-key", PROVIDER_KEY]
    return await start([sys.executable, "-m", "adapters.emulators", "runway", *args], env, log)


async def wait_http(session: aiohttp.ClientSession, url: str, proc: asyncio.subprocess.Process) -> None:
    for _ in range(600):
        if proc.returncode is not None:
            raise RuntimeError(f"{url}: the process exited at start")
        try:
            async with session.get(url) as reply:
                if reply.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} never answered")


async def run(options: argparse.Namespace, limits: dict[str, int]) -> tuple[float, float]:
    """One run with `limits` on Runway (`max_concurrency`, `requests_per_minute`); returns the accept
    and provider submit rates (per second)."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-inflight-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env["PYTHONPATH"] = str(ROOT)
    emulator_port, broker_port = free_port(), free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    store_url = f"sqlite:///{workdir}/broker.db" if options.store == "sqlite" else options.redis_url
    config = {
        "providers": {"runway": {"base_url": emulator_url, "api_key_env": "RUNWAYML_API_SECRET", **limits}},
        "routes": [ROUTE],
        "admin": {"api_key_env": "BROKER_ADMIN_KEY"},
        "teams": [{"name": "bench", "api_key_env": "BROKER_KEY_BENCH", "policy": "bench"}],
        "policies": {"default": {"max_cost_usd": "5.00"}, "bench": {}},
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    emulator = await start_emulator(emulator_port, options.render_s, env, workdir / "emulator.log")
    broker_env = {
        **env,
        "BROKER_STORE_URL": store_url,
        "BROKER_REDIS_PREFIX": prefix,
        "BROKER_DATA_DIR": str(workdir / "data"),
        "BROKER_LOG_LEVEL": "warning",
        "BROKER_KEY_BENCH": TEAM_KEY,
        "BROKER_ADMIN_KEY": "bench-admin-key-0123456789",
        "RUNWAYML_API_SECRET": PROVIDER_KEY,
    }
    broker = await start(
        [
            sys.executable,
            "-m",
            "broker",
            "serve",
            "--config",
            str(workdir / "config.yaml"),
            "--port",
            str(broker_port),
        ],
        broker_env,
        workdir / "broker.log",
    )
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=options.clients)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        try:
            await wait_http(session, f"{emulator_url}/_emulator/stats", emulator)
            peer = await peer_rate(session, options, env, workdir) if options.litellm else None
            await wait_http(session, f"http://127.0.0.1:{broker_port}/healthz", broker)
            rates = await measure(
                session, options, f"http://127.0.0.1:{broker_port}", emulator_url, broker.pid, peer
            )
        finally:
            for proc in (broker, emulator):
                if proc.returncode is None:
                    proc.terminate()
                    await proc.wait()
            if options.store == "redis":
                from broker.store.redis import RedisStore

                store = RedisStore.from_url(options.redis_url, prefix=prefix)
                await store.open()
                await store.drop_all_keys()
                await store.close()
    print(f"logs: {workdir}")
    return rates


async def peer_rate(
    session: aiohttp.ClientSession, options: argparse.Namespace, env: dict[str, str], workdir: Path
) -> float:
    """LiteLLM's submits per second on an emulator of its own (so its tasks do not count as ours)."""
    from bench.litellm_peer import litellm_submits_per_second

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    emulator = await start_emulator(port, options.render_s, env, workdir / "peer-emulator.log")
    try:
        await wait_http(session, f"{url}/_emulator/stats", emulator)
        rate, made = await litellm_submits_per_second(
            litellm=options.litellm,
            emulator_url=url,
            provider_key=PROVIDER_KEY,
            jobs=options.peer_jobs,
            clients=options.clients,
            workdir=workdir,
            free_port=free_port(),
            stats_url=f"{url}/_emulator/stats",
        )
    finally:
        emulator.terminate()
        await emulator.wait()
    print(f"LiteLLM proxy: {made} provider submits at {rate:.1f}/s", flush=True)
    return rate


async def measure(
    session: aiohttp.ClientSession,
    options: argparse.Namespace,
    broker_url: str,
    emulator_url: str,
    pid: int,
    peer: float | None,
) -> tuple[float, float]:
    headers = {"Authorization": f"Bearer {TEAM_KEY}"}
    body = {"prompt": "slow push in", "image_url": image_data_uri(), "duration_s": 5}
    stat = ProcStat(pid)
    stat.cores_since_last()
    samples: list[Sample] = []
    started = time.monotonic()
    submitted = 0
    failed_submits = 0

    async def submit_all() -> None:
        nonlocal submitted, failed_submits
        queue = iter(range(options.jobs))

        async def client() -> None:
            nonlocal submitted, failed_submits
            for _ in queue:
                async with session.post(f"{broker_url}/v1/jobs", json=body, headers=headers) as reply:
                    await reply.read()
                    if reply.status == 202:
                        submitted += 1
                    else:
                        failed_submits += 1

        await asyncio.gather(*(client() for _ in range(options.clients)))
        nonlocal accept_s
        accept_s = time.monotonic() - started

    accept_s = 0.0

    async def stats() -> dict[str, Any]:
        async with session.get(f"{emulator_url}/_emulator/stats") as reply:
            result: dict[str, Any] = await reply.json()
            return result

    submitter = asyncio.create_task(submit_all())
    print(f"{'t (s)':>6} {'accepted':>8} {'at provider':>11} {'finished':>8} {'CPU cores':>9} {'RSS MB':>7}")
    last_print = 0.0
    while True:
        await asyncio.sleep(1.0)
        numbers = await stats()
        finished = numbers["tasks"] - numbers["active"]
        sample = Sample(
            time.monotonic() - started, numbers["active"], stat.cores_since_last(), stat.rss_mb(), finished
        )
        samples.append(sample)
        if sample.at - last_print >= options.print_every:
            last_print = sample.at
            print(
                f"{sample.at:6.0f} {submitted:8d} {sample.in_flight:11d} {finished:8d}"
                f" {sample.cpu_cores:9.2f} {sample.rss_mb:7.0f}",
                flush=True,
            )
        done = submitter.done() and await jobs_done(session, broker_url)
        if done or sample.at > options.max_s:
            break
    await submitter
    numbers = await stats()
    accept_rate = submitted / accept_s if accept_s else 0.0
    print(f"accepted per second: {accept_rate:.1f} ({submitted} in {accept_s:.1f} s)")
    return accept_rate, report(options, samples, numbers, submitted, failed_submits, peer)


async def jobs_done(session: aiohttp.ClientSession, url: str) -> bool:
    """No job is queued or running any more (from the broker's own gauges)."""
    async with session.get(f"{url}/metrics") as reply:
        text = await reply.text()
    for line in text.splitlines():
        if line.startswith(("broker_jobs_in_flight ", "broker_queue_depth ")) and float(line.split()[1]) > 0:
            return False
    return True


def report(
    options: argparse.Namespace,
    samples: list[Sample],
    numbers: dict[str, Any],
    submitted: int,
    failed: int,
    peer: float | None,
) -> float:
    peak = max((s.in_flight for s in samples), default=0)
    waiting = [s for s in samples if peak and s.in_flight >= 0.95 * peak]
    polls = numbers["requests"].get("status", 0)
    finished = numbers["tasks"] - numbers["active"]
    first, last = numbers["first_task_at"], numbers["last_task_at"]
    submit_rate = numbers["tasks"] / (last - first) if first is not None and last and last > first else 0.0
    print()
    print(
        f"store: {options.store}; jobs: {options.jobs} ({submitted} accepted, {failed} refused); "
        f"renders: {options.render_s:g} s"
    )
    print(
        f"peak jobs in flight at the provider: {peak} (emulator's own count of overlapping tasks: "
        f"{numbers['peak_active']})"
    )
    if waiting:
        print(
            f"broker CPU while they wait (in flight >= 95% of peak, {len(waiting)} s): "
            f"mean {statistics.fmean(s.cpu_cores for s in waiting):.2f} cores, "
            f"max {max(s.cpu_cores for s in waiting):.2f}"
        )
    print(f"broker RSS: max {max(s.rss_mb for s in samples):.0f} MB")
    print(
        f"status polls per finished job: {polls / finished:.2f} ({polls} polls, {finished} finished)"
        if finished
        else "no job finished"
    )
    print(f"provider submits per second: {submit_rate:.1f} ({numbers['tasks']} tasks)")
    if peer:
        print(f"LiteLLM proxy in the same run: {peer:.1f}/s; broker / LiteLLM = {submit_rate / peer:.2f}x")
    return submit_rate


async def run_all(options: argparse.Namespace) -> None:
    """The run asked for; with `--compare-limits`, an uncapped run first and the ratios of the two."""
    limits = {
        key: value
        for key, value in (("max_concurrency", options.cap), ("requests_per_minute", options.rpm))
        if value is not None
    }
    if not options.compare_limits:
        await run(options, limits)
        return
    print("== no limits on Runway ==", flush=True)
    free_accept, free_submit = await run(options, {})
    print(f"== Runway with {limits} (never reached) ==", flush=True)
    capped_accept, capped_submit = await run(options, limits)
    print()
    print(
        f"limits / no limits, same run: accepted per second {capped_accept / free_accept:.2f}x "
        f"({capped_accept:.1f} vs {free_accept:.1f}), provider submits per second "
        f"{capped_submit / free_submit:.2f}x ({capped_submit:.1f} vs {free_submit:.1f})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.inflight", description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--render-s", type=float, default=60.0)
    parser.add_argument("--store", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--clients", type=int, default=32, help="concurrent HTTP clients submitting")
    parser.add_argument("--print-every", type=float, default=10.0)
    parser.add_argument("--max-s", type=float, default=1800.0, help="stop measuring after this long")
    parser.add_argument("--litellm", default=None, help="a LiteLLM proxy executable to compare against")
    parser.add_argument("--peer-jobs", type=int, default=2000, help="requests sent through LiteLLM")
    parser.add_argument("--cap", type=int, default=None, help="Runway's max_concurrency")
    parser.add_argument("--rpm", type=int, default=None, help="Runway's requests_per_minute")
    parser.add_argument(
        "--compare-limits",
        action="store_true",
        help="run without limits, then with --cap/--rpm, and print the ratios of their rates",
    )
    asyncio.run(run_all(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
