"""Real processes on loopback for the crash, replica and outage tests: `broker serve` and standalone
emulators, each with its own log file, stopped (or killed) by the test that started them.

    async with Cluster(tmp_path) as cluster:
        fal = await cluster.emulator("fal", render_seconds=0.3)
        config = cluster.write_config({"fal": fal.base_url})
        broker = await cluster.broker(config, store_url="redis://...", redis_prefix="test-...")
        job = await broker.submit({"prompt": "x"})
        broker.kill()                       # SIGKILL: no cleanup, as in a crash
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parents[2]
TEAM_KEY = "replica-team-key-0123456789"
ADMIN_KEY = "replica-admin-key-0123456789"
PROVIDER_KEY = "replica-provider-key-0123"
# The provider secrets each emulator accepts, by the environment name its adapter reads.
PROVIDER_KEY_ENV = {
    "fal": "FAL_KEY",
    "runway": "RUNWAYML_API_SECRET",
    "doitong": "DOITONG_API_KEY",
    "muvi": "MUVI_API_KEY",
    "pixelapi": "PIXELAPI_KEY",
}
FAL_TEXT_ROUTE: dict[str, Any] = {
    "provider": "fal",
    "model": "fal-ai/wan-25-preview/text-to-video",
    "modes": ["text_to_video"],
    "durations": {"values": [5, 10]},
    "aspect_ratios": ["16:9", "9:16", "1:1"],
    "resolutions": ["720p", "1080p"],
    "features": ["seed"],
    "quality": "standard",
    "expected_latency_s": 1,
    "price": {"unit": "usd_per_second", "amount": "0.05"},
}
DOITONG_ROUTE: dict[str, Any] = {
    "provider": "doitong",
    "model": "runway-i2v",
    "modes": ["image_to_video"],
    "durations": {"values": [5]},
    "aspect_ratios": ["16:9", "9:16", "1:1"],
    "resolutions": ["720p"],
    "features": [],
    "quality": "standard",
    "expected_latency_s": 1,
    "price": {"unit": "credits_per_video", "amount": "20", "usd_per_credit": "0.01"},
}
# doitong takes image URLs, which the broker passes on without fetching; nothing listens here.
IMAGE_URL = "https://127.0.0.1:9/harbour.png"
START_TIMEOUT_S = 30.0
# Short enough that a killed broker's jobs are taken over within seconds; long enough that a busy
# 2-core machine never delays a live worker's renewal (or a submit and its record) past it.
LEASE_S = 5.0


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any BROKER_ or provider setting, plus `extra`."""
    dropped = set(PROVIDER_KEY_ENV.values())
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_") and k not in dropped}
    env["PYTHONPATH"] = str(ROOT)
    return {**env, **extra}


class Proc:
    """One child process with its output in a log file."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                args, env=dict(env), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def kill(self) -> None:
        """SIGKILL, as a crash would: the process gets no chance to clean up."""
        if self.alive:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within a few seconds."""
        if self.alive:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()


class Emulator:
    """A standalone provider emulator (`python -m adapters.emulators`)."""

    def __init__(self, provider: str, proc: Proc, base_url: str, session: aiohttp.ClientSession) -> None:
        self.provider, self.proc, self.base_url, self._session = provider, proc, base_url, session

    async def admin(self, what: str) -> list[dict[str, Any]]:
        """GET /_emulator/<what>: requests, tasks, webhooks or faults."""
        async with self._session.get(f"{self.base_url}/_emulator/{what}") as reply:
            reply.raise_for_status()
            rows: list[dict[str, Any]] = await reply.json()
            return rows

    async def stats(self) -> dict[str, Any]:
        """GET /_emulator/stats: tasks, tasks active now and at the peak, requests per endpoint."""
        async with self._session.get(f"{self.base_url}/_emulator/stats") as reply:
            reply.raise_for_status()
            numbers: dict[str, Any] = await reply.json()
            return numbers

    async def add_faults(self, faults: list[dict[str, Any]]) -> None:
        async with self._session.post(f"{self.base_url}/_emulator/faults", json=faults) as reply:
            reply.raise_for_status()


class Broker:
    """One `broker serve` process and a client for its API."""

    def __init__(self, proc: Proc, port: int, session: aiohttp.ClientSession) -> None:
        self.proc, self.port, self._session = proc, port, session
        self.url = f"http://127.0.0.1:{port}"

    def kill(self) -> None:
        self.proc.kill()

    async def request(
        self, method: str, path: str, *, json: Any = None, key: str = TEAM_KEY
    ) -> tuple[int, Any]:
        """(status, JSON body) of one API call."""
        headers = {"Authorization": f"Bearer {key}"}
        async with self._session.request(method, self.url + path, json=json, headers=headers) as reply:
            body = await reply.json() if reply.content_type == "application/json" else await reply.read()
            return reply.status, body

    async def submit(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST /v1/jobs; the accepted job (anything else fails the test)."""
        status, job = await self.request("POST", "/v1/jobs", json=dict(body))
        assert status == 202, (status, job)
        result: dict[str, Any] = job
        return result

    async def job(self, job_id: str) -> dict[str, Any]:
        status, job = await self.request("GET", f"/v1/jobs/{job_id}")
        assert status == 200, (status, job)
        result: dict[str, Any] = job
        return result

    async def all_jobs(self) -> list[dict[str, Any]]:
        """Every job of the team, newest first, following the cursor."""
        jobs: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            query = "/v1/jobs?limit=200" + (f"&cursor={cursor}" if cursor else "")
            status, page = await self.request("GET", query)
            assert status == 200, (status, page)
            jobs.extend(page["jobs"])
            cursor = page.get("next_cursor")
            if not cursor:
                return jobs


class Cluster:
    """Starts emulators and brokers under `workdir`; stops every process it started on exit."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use the cluster as an async context manager"
        return self._session

    async def __aenter__(self) -> Cluster:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=30), connector=aiohttp.TCPConnector(limit=64)
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        if self._session is not None:
            await self._session.close()

    def _start(self, name: str, args: list[str], env: Mapping[str, str]) -> Proc:
        proc = Proc(name, args, env, self.workdir / f"{name}.log")
        self.procs.append(proc)
        return proc

    async def emulator(self, provider: str, *, render_seconds: float = 0.2, exact: bool = False) -> Emulator:
        """Start one emulator accepting `PROVIDER_KEY`; returns once it answers (`exact`: clips as asked)."""
        port = free_port()
        args = [sys.executable, "-m", "adapters.emulators", provider, "--port", str(port), "--api-key"]
        args += [PROVIDER_KEY, "--render-seconds", str(render_seconds), *(["--conforming"] if exact else [])]
        proc = self._start(f"emulator-{provider}-{port}", args, clean_env({}))
        emulator = Emulator(provider, proc, f"http://127.0.0.1:{port}", self.session)
        await self._wait_until_up(proc, f"{emulator.base_url}/_emulator/tasks")
        return emulator

    def write_config(
        self,
        base_urls: Mapping[str, str],
        routes: Iterable[Mapping[str, Any]] = (FAL_TEXT_ROUTE,),
        policy: Mapping[str, Any] | None = None,
        max_concurrency: int = 1000,
        timeout_s: float = LEASE_S / 2,
    ) -> Path:
        """A config.yaml with these providers, routes and one team; request timeouts fit the lease."""
        config = {
            "providers": {
                name: {
                    "base_url": url,
                    "api_key_env": PROVIDER_KEY_ENV[name],
                    "max_concurrency": max_concurrency,
                    "timeout_s": timeout_s,
                }
                for name, url in base_urls.items()
            },
            "routes": [dict(route) for route in routes],
            "admin": {"api_key_env": "BROKER_ADMIN_KEY"},
            "teams": [{"name": "replica", "api_key_env": "BROKER_KEY_REPLICA", "policy": "replica"}],
            "policies": {"default": {"max_attempts": 3}, "replica": dict(policy or {})},
        }
        path = self.workdir / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    async def broker(
        self,
        config: Path,
        *,
        store_url: str,
        data_dir: Path,
        lease_s: float = LEASE_S,
        workers: int = 32,
        **settings: str,
    ) -> Broker:
        """Start `broker serve` on a free port; returns once /healthz answers."""
        port = free_port()
        env = {
            "BROKER_STORE_URL": store_url,
            "BROKER_DATA_DIR": str(data_dir),
            "BROKER_LEASE_S": str(lease_s),
            "BROKER_WORKERS": str(workers),
            "BROKER_LOG_LEVEL": "warning",
            "BROKER_KEY_REPLICA": TEAM_KEY,
            "BROKER_ADMIN_KEY": ADMIN_KEY,
            # IMAGE_URL's host: the emulators take the URL and never fetch it.
            "BROKER_OUTBOUND_ALLOW": "127.0.0.1",
            **{f"BROKER_{name.upper()}": value for name, value in settings.items()},
            **{env_name: PROVIDER_KEY for env_name in PROVIDER_KEY_ENV.values()},
        }
        args = [sys.executable, "-m", "broker", "serve", "--config", str(config), "--port", str(port)]
        proc = self._start(f"broker-{port}", args, clean_env(env))
        broker = Broker(proc, port, self.session)
        await self._wait_until_up(proc, f"{broker.url}/healthz")
        return broker

    async def brokers(
        self, count: int, config: Path, *, store_url: str, data_dir: Path, **options: Any
    ) -> list[Broker]:
        """Start `count` brokers at once on one store and one artifact directory."""
        started = await asyncio.gather(
            *(self.broker(config, store_url=store_url, data_dir=data_dir, **options) for _ in range(count))
        )
        return list(started)

    async def _wait_until_up(self, proc: Proc, url: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if not proc.alive:
                raise RuntimeError(f"{proc.name} exited at start:\n{proc.log_tail()}")
            try:
                async with self.session.get(url) as reply:
                    if reply.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError(
            f"{proc.name} did not answer {url} within {START_TIMEOUT_S:g} s:\n{proc.log_tail()}"
        )


async def wait_until_settled(
    brokers: list[Broker], job_ids: Iterable[str], *, timeout_s: float
) -> dict[str, dict[str, Any]]:
    """Each job as read (from any live broker) once it is terminal; fails after `timeout_s`."""
    pending = set(job_ids)
    done: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    while pending:
        live = [b for b in brokers if b.proc.alive]
        assert live, "no broker is running"
        for job in await live[0].all_jobs():
            if job["id"] in pending and job["status"] in ("succeeded", "failed", "cancelled"):
                done[job["id"]] = job
                pending.discard(job["id"])
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(pending)} jobs not finished after {timeout_s:g} s, e.g. {sorted(pending)[:3]}"
            )
        if pending:
            await asyncio.sleep(0.5)
    return done


def phase(job: dict[str, Any]) -> str:
    """The job's status, or its last attempt's while it runs (submitting, submitted, downloading...)."""
    if job["status"] != "running" or not job["attempts"]:
        return str(job["status"])
    return str(job["attempts"][-1]["status"])


async def wait_for_phases(
    broker: Broker, ok: Callable[[Counter[str]], bool], timeout_s: float = 20.0
) -> Counter[str]:
    """Poll the broker until `ok(counts of phases)` holds; returns those counts."""
    deadline = time.monotonic() + timeout_s
    while True:
        counts = Counter(phase(job) for job in await broker.all_jobs())
        if ok(counts):
            return counts
        assert time.monotonic() < deadline, f"phases never matched: {dict(counts)}"
        await asyncio.sleep(0.1)


async def assert_one_submit_per_attempt(emulators: list[Emulator], jobs: list[dict[str, Any]]) -> None:
    """Every attempt's task is a distinct task at its provider, and no provider got any other submit."""
    provider_ids = [a["provider_job_id"] for job in jobs for a in job["attempts"]]
    tasks: list[str] = []
    submits = 0
    for emulator in emulators:
        tasks += [task["id"] for task in await emulator.admin("tasks")]
        submits += sum(1 for r in await emulator.admin("requests") if r["endpoint"] == "submit")
    assert None not in provider_ids
    assert len(set(provider_ids)) == len(provider_ids) == len(tasks) == submits
    assert set(provider_ids) == set(tasks)


async def wait_for_tasks(emulator: Emulator, count: int, timeout_s: float = 10.0) -> None:
    """Wait until the emulator holds `count` tasks."""
    deadline = time.monotonic() + timeout_s
    while len(await emulator.admin("tasks")) < count:
        assert time.monotonic() < deadline, f"{emulator.provider} never reached {count} tasks"
        await asyncio.sleep(0.1)


async def wait_for_requests(emulator: Emulator, endpoint: str, count: int, timeout_s: float = 10.0) -> None:
    """Wait until the emulator has received `count` requests to `endpoint` (submit, status...)."""
    deadline = time.monotonic() + timeout_s
    while sum(1 for r in await emulator.admin("requests") if r["endpoint"] == endpoint) < count:
        assert time.monotonic() < deadline, f"{emulator.provider} never got {count} {endpoint} requests"
        await asyncio.sleep(0.05)


def failures(jobs: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str, Any]]:
    """(id, status, error) of every job that did not succeed, for assertion messages."""
    return [
        (job_id, job["status"], job.get("error"))
        for job_id, job in jobs.items()
        if job["status"] != "succeeded"
    ]
