"""The processes and measurements `bench.fairness` runs on: one Runway emulator whose renders take a
time drawn from a range, one `broker serve` (default settings) with teams a, b and c, Runway capped
by `max_concurrency`, and what the scenarios read back: emulator tasks by team, slot-seconds in a
window, slots in use each second, the broker's CPU.

Everything listens on 127.0.0.1; Redis keys go under a fresh prefix that is deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.inflight import PROVIDER_KEY, ROUTE, ProcStat, free_port, image_data_uri, start, wait_http

ROOT = Path(__file__).resolve().parent.parent
TEAMS = ("a", "b", "c")
ADMIN_KEY = "bench-fairness-admin-0123456789"


def team_key(team: str) -> str:
    return f"bench-fairness-{team}-key-0123456789"


@dataclass(frozen=True)
class Accepted:
    """A job the broker accepted: its id, team and `created_at` (unix s, the broker's clock)."""

    id: str
    team: str
    created_at: float


@dataclass(frozen=True)
class Task:
    """A render at the emulator, as its admin endpoint lists it (unix s)."""

    id: str
    begins_at: float
    finished_at: float | None

    def overlap(self, start: float, end: float, now: float) -> float:
        """Seconds of [start, end] this task held a slot at the provider."""
        stop = now if self.finished_at is None else self.finished_at
        return max(0.0, min(stop, end) - max(self.begins_at, start))


@dataclass
class Sample:
    at: float  # unix s
    active: int  # tasks rendering at the emulator
    waiting: int  # accepted jobs with no task at the emulator yet


@dataclass
class Rig:
    """A running emulator and broker, and an HTTP client for both."""

    session: aiohttp.ClientSession
    emulator_url: str
    broker_url: str
    broker_pid: int
    cap: int
    workdir: Path
    accepted: list[Accepted] = field(default_factory=list)
    refused: int = 0
    samples: list[Sample] = field(default_factory=list)
    _body: dict[str, Any] = field(default_factory=dict)

    async def submit(self, team: str, count: int, clients: int = 32) -> list[Accepted]:
        """POST `count` jobs for `team` from `clients` concurrent clients; the accepted ones."""
        if not self._body:
            self._body = {"prompt": "slow push in", "image_url": image_data_uri(), "duration_s": 5}
        headers = {"Authorization": f"Bearer {team_key(team)}"}
        numbers = iter(range(count))
        mine: list[Accepted] = []

        async def client() -> None:
            for _ in numbers:
                async with self.session.post(
                    f"{self.broker_url}/v1/jobs", json=self._body, headers=headers
                ) as reply:
                    job = await reply.json()
                    if reply.status != 202:
                        self.refused += 1
                        continue
                    accepted = Accepted(job["id"], team, _unix(job["created_at"]))
                    mine.append(accepted)
                    self.accepted.append(accepted)

        await asyncio.gather(*(client() for _ in range(clients)))
        return mine

    async def job(self, team: str, job_id: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {team_key(team)}"}
        async with self.session.get(f"{self.broker_url}/v1/jobs/{job_id}", headers=headers) as reply:
            result: dict[str, Any] = await reply.json()
            return result

    async def team_jobs(self, team: str) -> list[dict[str, Any]]:
        """Every job of `team`, following the cursor."""
        headers = {"Authorization": f"Bearer {team_key(team)}"}
        jobs: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            query = "/v1/jobs?limit=200" + (f"&cursor={cursor}" if cursor else "")
            async with self.session.get(self.broker_url + query, headers=headers) as reply:
                page = await reply.json()
            jobs.extend(page["jobs"])
            cursor = page.get("next_cursor")
            if not cursor:
                return jobs

    async def tasks(self) -> dict[str, Task]:
        """The emulator's tasks by id."""
        async with self.session.get(f"{self.emulator_url}/_emulator/tasks") as reply:
            rows = await reply.json()
        return {r["id"]: Task(r["id"], r["begins_at"], r["finished_at"]) for r in rows}

    async def stats(self) -> dict[str, Any]:
        async with self.session.get(f"{self.emulator_url}/_emulator/stats") as reply:
            result: dict[str, Any] = await reply.json()
            return result

    async def task_teams(self, teams: tuple[str, ...]) -> dict[str, str]:
        """Provider task id -> the team whose job's attempt made it (from the broker's jobs)."""
        owners: dict[str, str] = {}
        for team in teams:
            for job in await self.team_jobs(team):
                for attempt in job["attempts"]:
                    if attempt.get("provider_job_id"):
                        owners[attempt["provider_job_id"]] = team
        return owners

    def dump(self, tasks: dict[str, Task], owners: dict[str, str], marks: Mapping[str, float]) -> None:
        """Write the run's timelines to `timeline.json` in the work directory, to look into a figure."""
        rows = [{**asdict(task), "team": owners.get(task.id)} for task in tasks.values()]
        data = {"marks": dict(marks), "tasks": rows, "samples": [asdict(s) for s in self.samples]}
        data["jobs"] = [asdict(job) for job in self.accepted]
        (self.workdir / "timeline.json").write_text(json.dumps(data))

    async def sample_forever(self) -> None:
        """Every second: tasks rendering at the emulator, and accepted jobs with no task there yet."""
        while True:
            numbers = await self.stats()
            waiting = len(self.accepted) - int(numbers["tasks"])
            self.samples.append(Sample(time.time(), int(numbers["active"]), max(0, waiting)))
            await asyncio.sleep(1.0)


def _unix(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def write_config(
    workdir: Path, emulator_url: str, cap: int, expected_s: float, weights: Mapping[str, float]
) -> Path:
    """Runway capped at `cap`, its gen4_turbo route taking `expected_s`, teams a-c with their weights."""
    config = {
        "providers": {
            "runway": {
                "base_url": emulator_url,
                "api_key_env": "RUNWAYML_API_SECRET",
                "max_concurrency": cap,
            }
        },
        "routes": [{**ROUTE, "expected_latency_s": expected_s}],
        "admin": {"api_key_env": "BROKER_ADMIN_KEY"},
        "teams": [
            {"name": team, "api_key_env": f"BROKER_KEY_{team.upper()}", "policy": team} for team in TEAMS
        ],
        "policies": {
            "default": {"max_cost_usd": "5.00"},
            **{team: ({"weight": weights[team]} if team in weights else {}) for team in TEAMS},
        },
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.asynccontextmanager
async def running(
    options: argparse.Namespace,
    render: tuple[float, float],
    weights: Mapping[str, float] | None = None,
    expected_s: float | None = None,
) -> AsyncIterator[Rig]:
    """An emulator rendering in `render` seconds (low, high) and a broker in front of it; both are
    stopped, and a Redis prefix dropped, on the way out. The route's expected latency is the range's
    top unless `expected_s` says otherwise (config.yaml's 90 s for 60-90 s renders)."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-fairness-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env["PYTHONPATH"] = str(ROOT)
    emulator_port, broker_port = free_port(), free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    prefix = f"bench-fairness-{uuid.uuid4().hex[:8]}"
    store_url = f"sqlite:///{workdir}/broker.db" if options.store == "sqlite" else options.redis_url
    config = write_config(
        workdir, emulator_url, options.cap, render[1] if expected_s is None else expected_s, weights or {}
    )
    low, high = render
    emulator_args = ["--port", str(emulator_port), "--api-key", PROVIDER_KEY, "--seed", str(options.seed)]
    emulator_args += ["--render-seconds", str(low), "--render-seconds-max", str(high)]
    emulator = await start(
        [sys.executable, "-m", "adapters.emulators", "runway", *emulator_args], env, workdir / "emulator.log"
    )
    broker_env = {
        **env,
        "BROKER_STORE_URL": store_url,
        "BROKER_REDIS_PREFIX": prefix,
        "BROKER_DATA_DIR": str(workdir / "data"),
        "BROKER_LOG_LEVEL": "warning",
        "BROKER_ADMIN_KEY": ADMIN_KEY,
        "RUNWAYML_API_SECRET": PROVIDER_KEY,
        **{f"BROKER_KEY_{team.upper()}": team_key(team) for team in TEAMS},
    }
    args = [sys.executable, "-m", "broker", "serve", "--config", str(config), "--port", str(broker_port)]
    broker = await start(args, broker_env, workdir / "broker.log")
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=64)) as session:
        sampler: asyncio.Task[None] | None = None
        try:
            await wait_http(session, f"{emulator_url}/_emulator/stats", emulator)
            await wait_http(session, f"http://127.0.0.1:{broker_port}/healthz", broker)
            broker_url = f"http://127.0.0.1:{broker_port}"
            rig = Rig(session, emulator_url, broker_url, broker.pid, options.cap, workdir)
            sampler = asyncio.create_task(rig.sample_forever())
            yield rig
        finally:
            if sampler is not None:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                    await sampler
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
    print(f"  logs: {workdir}", flush=True)


async def cpu_cores(pid: int, seconds: float) -> float:
    """The process's CPU over the next `seconds`, in cores."""
    stat = ProcStat(pid)
    stat.cores_since_last()
    await asyncio.sleep(seconds)
    return stat.cores_since_last()
