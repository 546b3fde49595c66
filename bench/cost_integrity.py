"""The books against the providers' own: a mixed workload on the emulators, then, per provider, what the
broker booked next to what each emulator recorded charging per task, to the micro-dollar.

The workload: plain successes; Runway and muvi tasks that never finish (cancelled at the deadline:
Runway charges a task cancelled while running, muvi cannot cancel a processing job, so the broker books
it unconfirmed); a PixelAPI task that never finishes (PixelAPI has no cancel); owner cancels of queued
and running tasks; a refunded failure that falls back; and a download cut off twice before it is
served. fal reports no cost per request, so it is left out (its booking is the price table's).

    python -m bench.cost_integrity
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from adapters.emulators.emulator import ProviderEmulator
from adapters.emulators.sandbox import Sandbox
from broker.api.app import create_app
from broker.appkeys import RUNNER
from broker.cli.sandbox import start_sandboxed
from broker.config import BrokerConfig, load_config, parse_config
from broker.settings import Settings
from pricing.catalog import RouteSpec
from pricing.money import Money
from pricing.units import ReportedCost

ROOT = Path(__file__).resolve().parents[1]
STUDIO_KEY = "studio-" + secrets.token_hex(8)
ADMIN_KEY = "admin-" + secrets.token_hex(8)
ENV = {
    "BROKER_KEY_STUDIO": STUDIO_KEY,
    "BROKER_KEY_GROWTH": "growth-" + STUDIO_KEY,
    "BROKER_ADMIN_KEY": ADMIN_KEY,
}
# doitong publishes no USD per credit; an operator who knows it sets it (here $0.005, 60 credits quoted).
DOITONG_PRICE = {"unit": "credits_per_video", "amount": "60", "usd_per_credit": "0.005"}
TABLE_PROVIDERS = ("runway", "muvi", "pixelapi", "doitong")
IMAGE_URL = "https://images.example.com/harbour.png"
GEN4_TURBO, MUVI_GEN4, MUVI_TURBO = (
    "gen4_turbo",
    "runway/gen-4/image-to-video",
    "runway/gen-4-turbo/image-to-video",
)
DEADLINE_S = 60.0


async def _no_wait(seconds: float) -> None:
    await asyncio.sleep(0)


def workload_config(deadline_s: float = DEADLINE_S, retention_s: float | None = None) -> BrokerConfig:
    """The shipped catalog, doitong priced, every provider's task deadline `deadline_s` (and output
    retention `retention_s`, when given)."""
    raw = load_config(ROOT / "config.yaml").model_dump(mode="json", exclude_none=True)
    for route in raw["routes"]:
        if route["provider"] == "doitong":
            route["price"] = DOITONG_PRICE
    for provider in raw["providers"].values():
        provider["task_deadline_s"] = deadline_s
        if retention_s is not None:
            provider["output_retention_s"] = retention_s
    return parse_config(raw, "cost-integrity workload")


@dataclass
class Rig:
    """The broker (through its HTTP API) on the five emulators."""

    client: TestClient[Any, Any]
    sandbox: Sandbox
    config: BrokerConfig

    def emulator(self, provider: str) -> ProviderEmulator:
        return self.sandbox.endpoints[provider].emulator

    async def submit(self, providers: list[str], models: list[str] | None = None, image: bool = True) -> str:
        body: dict[str, Any] = {"prompt": "slow push in on the harbour", "duration_s": 5}
        body["constraints"] = {"providers": providers, **({"models": models} if models else {})}
        if image:
            body["image_url"] = IMAGE_URL
        response = await self.client.post("/v1/jobs", json=body, headers=_auth(STUDIO_KEY))
        assert response.status == 202, await response.text()
        job_id: str = (await response.json())["id"]
        return job_id

    async def job(self, job_id: str) -> dict[str, Any]:
        body: dict[str, Any] = await (
            await self.client.get(f"/v1/jobs/{job_id}", headers=_auth(ADMIN_KEY))
        ).json()
        return body

    async def wait(self, job_id: str, *statuses: str, tries: int = 2000) -> dict[str, Any]:
        for _ in range(tries):
            body = await self.job(job_id)
            if body["status"] in statuses:
                return body
            await asyncio.sleep(0.005)
        raise AssertionError(f"job {job_id} stayed {body['status']}: {body}")

    async def wait_task_phase(self, provider: str, job_id: str, phase: str) -> None:
        """Until the job's current task at `provider` is in `phase` at the emulator."""
        for _ in range(2000):
            body = await self.job(job_id)
            task_id = body["attempts"][-1]["provider_job_id"] if body["attempts"] else None
            task = self.emulator(provider).tasks.get(task_id or "")
            if task is not None and self.emulator(provider).phase(task).value == phase:
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"{provider} task of {job_id} never reached {phase}")

    async def cancel(self, job_id: str) -> dict[str, Any]:
        response = await self.client.delete(f"/v1/jobs/{job_id}", headers=_auth(STUDIO_KEY))
        assert response.status == 202, await response.text()
        return await self.wait(job_id, "cancelled")

    async def booked(self) -> dict[str, Money]:
        """Spend per provider as the cost report books it."""
        response = await self.client.get("/v1/reports/costs?group_by=provider", headers=_auth(ADMIN_KEY))
        body = await response.json()
        return {g["provider"]: Money.parse(g["spend_usd"]) for g in body["groups"]}

    def charged(self) -> dict[str, Money]:
        """What each emulator recorded charging, per task, converted through the catalog's units."""
        routes = {(r.provider, r.model): r for r in self.config.routes}
        totals: dict[str, Money] = defaultdict(Money.zero)
        for provider in TABLE_PROVIDERS:
            emulator = self.emulator(provider)
            for task_id, amount in emulator.charges().items():
                route = _route_of(routes, provider, emulator.tasks[task_id].model)
                assert route.price is not None
                reported = ReportedCost(Decimal(amount), route.price.unit.billed_in)
                totals[provider] += route.price.reported_to_money(reported)
        return dict(totals)


def _route_of(routes: dict[tuple[str, str], RouteSpec], provider: str, emulated: str) -> RouteSpec:
    """The catalog route of an emulated task (doitong's tasks add the version: "runway-i2v/gen-4")."""
    found = routes.get((provider, emulated)) or routes.get((provider, emulated.split("/")[0]))
    assert found is not None, f"no catalog route for {provider} task model {emulated}"
    return found


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@contextlib.asynccontextmanager
async def rig(
    data_dir: Path,
    *,
    deadline_s: float = DEADLINE_S,
    store_url: str | None = None,
    redis_prefix: str = "broker",
    retention_s: float | None = None,
) -> AsyncIterator[Rig]:
    """The broker on the emulators, with instant sleeps (the runner's schedule fast-forwards)."""
    sandbox, config, env = await start_sandboxed(
        workload_config(deadline_s, retention_s), ENV, render_seconds=0.05
    )
    try:
        settings = Settings(
            store_url=store_url or f"sqlite:///{data_dir}/broker.db",
            redis_prefix=redis_prefix,
            data_dir=data_dir / "data",
            # The emulators take the image URL without fetching it: its made-up host is admitted.
            outbound_allow="images.example.com",
        )
        app = create_app(settings, config, env=env, sleep=_no_wait)
        async with TestClient(TestServer(app)) as client:
            # The emulated renders run on the runner's clock, which instant sleeps fast-forward: a
            # 60 s deadline then means 60 s of the emulators' time too, not a few real milliseconds.
            for endpoint in sandbox.endpoints.values():
                endpoint.emulator.clock = app[RUNNER].now
            yield Rig(client, sandbox, config)
    finally:
        await sandbox.close()


async def held_queued(rig: Rig, provider: str, job_id: str) -> None:
    """Wait until the job's task is waiting at `provider` (queued, not running)."""
    await rig.wait_task_phase(provider, job_id, "queued")


async def run_workload(rig: Rig) -> dict[str, dict[str, Any]]:
    """Eleven jobs, one at a time; returns each job's final body by name."""
    runway, muvi, pixelapi, doitong = (rig.emulator(p) for p in TABLE_PROVIDERS)
    runway.queue_fraction = 0.0  # Runway tasks run as soon as they start: a cancel at the deadline is charged
    jobs: dict[str, dict[str, Any]] = {}

    async def run(
        name: str, providers: list[str], models: list[str] | None = None, image: bool = True
    ) -> None:
        jobs[name] = await rig.wait(await rig.submit(providers, models, image), "succeeded", "failed")

    await run("runway ok", ["runway"], [GEN4_TURBO])
    runway.inject("never_finish")
    await run("runway past deadline, falls back to muvi", ["runway", "muvi"], [GEN4_TURBO, MUVI_GEN4])
    runway.inject("task_fail", code="INTERNAL.BAD_OUTPUT.CODE01")
    await run("runway refunded failure, falls back to muvi", ["runway", "muvi"], [GEN4_TURBO, MUVI_GEN4])
    muvi.inject("never_finish")
    await run("muvi past deadline (cannot cancel), falls back to doitong", ["muvi", "doitong"])
    pixelapi.inject("never_finish")
    await run("pixelapi past deadline (no cancel)", ["pixelapi"], image=False)
    await run("pixelapi ok", ["pixelapi"], image=False)
    doitong.inject("drop", "download", count=2)
    await run("doitong download cut twice", ["doitong"])

    runway.inject("never_finish")
    running = await rig.submit(["runway"], [GEN4_TURBO])
    await rig.wait_task_phase("runway", running, "running")
    jobs["runway cancelled while running"] = await rig.cancel(running)

    for provider, models in (("runway", [GEN4_TURBO]), ("muvi", [MUVI_TURBO])):
        emulator = rig.emulator(provider)
        emulator.queue_fraction, emulator.render_seconds = 0.99, 3600.0  # queued for an hour
        queued = await rig.submit([provider], models)
        await held_queued(rig, provider, queued)
        jobs[f"{provider} cancelled while queued"] = await rig.cancel(queued)
        emulator.queue_fraction, emulator.render_seconds = 0.25, 0.05
    return jobs


def table(booked: dict[str, Money], charged: dict[str, Money]) -> str:
    lines = [f"{'provider':<10} {'booked_usd':>12} {'charged_usd':>12} {'difference':>12}"]
    for provider in TABLE_PROVIDERS:
        b, c = booked.get(provider, Money.zero()), charged.get(provider, Money.zero())
        lines.append(f"{provider:<10} {b!s:>12} {c!s:>12} {Money(b.micros - c.micros)!s:>12}")
    return "\n".join(lines)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with rig(Path(tmp)) as r:
            jobs = await run_workload(r)
            for name, job in jobs.items():
                attempts = ", ".join(
                    f"{a['provider']} {a['status']} {a['cost_usd']}"
                    + (" (unconfirmed)" if a.get("unconfirmed_usd") else "")
                    for a in job["attempts"]
                )
                print(f"{name:<58} {job['status']:<10} {job['cost_usd']}  [{attempts}]")
            print()
            print(table(await r.booked(), r.charged()))


if __name__ == "__main__":
    asyncio.run(main())
