"""No step outlives its lease, at the default lease, on both stores, against the emulators.

A 429 with a long `Retry-After` is a due time, not a sleep: the job is parked and the same attempt is
sent again, so the provider makes one task and the broker books what it charged. A download slower
than the lease keeps its job (one download, one success); each fetch is logged when it starts and
ends, with the step that made it. A submit whose answer never comes is never sent a second time, and
what the provider may charge for it is booked, not $0.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from adapters.emulators.emulator import ProviderEmulator
from adapters.emulators.faults import Endpoint
from adapters.emulators.sandbox import Sandbox, start_sandbox
from adapters.registry import FACTORIES
from broker.api.app import create_app
from broker.config import BrokerConfig, load_config
from broker.settings import Settings
from pricing.money import Money
from pricing.units import CostUnit, ReportedCost
from tests.support.api import wait_for_status
from tests.support.deployment import ADMIN_KEY, REDIS_URL, TEST_ENV, auth, fast_sleep
from tests.support.workload import IMAGE

CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"
STORES = ["sqlite", pytest.param("redis", marks=pytest.mark.redis)]
PIXEL_CLIP = {"prompt": "harbour at dusk", "image_url": IMAGE, "constraints": {"providers": ["pixelapi"]}}


@dataclass
class Rig:
    client: TestClient[Any, Any]
    sandbox: Sandbox
    config: BrokerConfig
    data_dir: Path

    def emulator(self, provider: str) -> ProviderEmulator:
        return self.sandbox.endpoints[provider].emulator

    async def run(self, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.client.post("/v1/jobs", json=body, headers=auth())
        assert response.status == 202, await response.text()
        job_id = (await response.json())["id"]
        return await wait_for_status(self.client, job_id, "succeeded", "failed", "cancelled")


async def start_rig(tmp_path: Path, store: str, prefix: str, **timeouts: float) -> AsyncIterator[Rig]:
    """config.yaml's remote providers on their emulators; the default lease and runner settings."""
    async with await start_sandbox(render_seconds=0.05) as sandbox:
        config = load_config(CONFIG)
        urls = sandbox.base_urls()
        providers = {
            name: provider.model_copy(
                update={"base_url": urls[name], "timeout_s": timeouts.get(name, provider.timeout_s)}
            )
            for name, provider in config.providers.items()
            if name in urls
        }
        config = config.model_copy(update={"providers": providers})
        store_url = REDIS_URL if store == "redis" else f"sqlite:///{tmp_path}/broker.db"
        settings = Settings(store_url=store_url, redis_prefix=prefix, data_dir=tmp_path / "data")
        assert settings.lease_s == 60.0  # the default the issue measures against
        app = create_app(
            settings,
            config,
            env={**TEST_ENV, **sandbox.env()},
            factories={name: build for name, build in FACTORIES.items() if name != "local"},
            sleep=fast_sleep,
        )
        async with TestClient(TestServer(app)) as client:
            yield Rig(client, sandbox, config, settings.data_dir)


@pytest.fixture(params=STORES)
async def rig(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> AsyncIterator[Rig]:
    async for made in start_rig(tmp_path, request.param, prefix):
        yield made


def charged_usd(rig: Rig, provider: str, unit: CostUnit) -> Money:
    """What the emulator's books say the account was charged, in USD at the catalog's rate."""
    emulator = rig.emulator(provider)
    route = next(r for r in rig.config.routes if r.provider == provider and r.price is not None)
    assert route.price is not None
    credits = sum(emulator.charges().values())
    return route.price.reported_to_money(ReportedCost(Decimal(credits), unit))


async def test_two_429s_with_retry_after_30_then_success_make_one_task_booked_at_its_charge(
    rig: Rig,
) -> None:
    pixel = rig.emulator("pixelapi")
    pixel.inject("rate_limit", "submit", count=2, retry_after_s=30)
    done = await rig.run(PIXEL_CLIP)
    assert done["status"] == "succeeded", done
    assert [a["status"] for a in done["attempts"]] == ["succeeded"]  # the same attempt, sent again
    assert pixel.submit_count() == 3 and len(pixel.tasks) == 1
    assert done["cost_usd"] == str(charged_usd(rig, "pixelapi", CostUnit.CREDITS)) == "0.055000"
    assert done["attempts"][0]["unconfirmed_usd"] is None


async def test_a_download_slower_than_three_leases_is_fetched_once(rig: Rig) -> None:
    pixel = rig.emulator("pixelapi")
    # Two real seconds: the runner's clock, which skips its idle waits, passes 3 leases meanwhile.
    pixel.inject("slow", "download", count=None, delay_s=2.0)
    done = await rig.run(PIXEL_CLIP)
    assert done["status"] == "succeeded", done
    assert pixel.recorder.count(Endpoint.DOWNLOAD) == 1
    assert len(done["attempts"]) == 1 and done["output"]["bytes"] > 0
    assert list((rig.data_dir / "partial").iterdir()) == []  # nothing half-written left behind


async def test_each_fetch_is_logged_with_its_step_owner_and_how_it_ended(rig: Rig) -> None:
    pixel = rig.emulator("pixelapi")
    pixel.inject("server_error", "download", count=1)  # the first fetch fails, a later step's succeeds
    with capture_logs() as logged:
        done = await rig.run(PIXEL_CLIP)
    assert done["status"] == "succeeded", done
    fetches = [e for e in logged if e["event"] in ("output_fetch_started", "output_fetch_ended")]
    assert [(e["event"], e.get("outcome")) for e in fetches] == [
        ("output_fetch_started", None),
        ("output_fetch_ended", "failed"),
        ("output_fetch_started", None),
        ("output_fetch_ended", "fetched"),
    ]
    attempt_id = done["attempts"][0]["id"]
    assert {(e["job_id"], e["attempt_id"], e["provider"]) for e in fetches} == {
        (done["id"], attempt_id, "pixelapi")
    }
    first, second = fetches[0]["owner"], fetches[2]["owner"]
    assert first != second and first.startswith("runner-")  # each try is its own step's claim
    assert fetches[1]["owner"] == first and fetches[3]["owner"] == second
    assert fetches[3]["bytes"] > 0
    assert pixel.recorder.count(Endpoint.DOWNLOAD) == 2


@pytest.mark.parametrize("store", STORES)
async def test_a_submit_that_hangs_is_never_sent_again_and_is_booked_unconfirmed(
    tmp_path: Path, store: str, prefix: str
) -> None:
    async for rig in start_rig(tmp_path, store, prefix, runway=0.5):
        runway = rig.emulator("runway")
        runway.inject("slow", "submit", count=1, delay_s=2.0)  # the task is made; the answer comes late
        only_runway = {"providers": ["runway"], "models": ["gen4_turbo"]}
        done = await rig.run({"prompt": "harbour at dusk", "image_url": IMAGE, "constraints": only_runway})
        assert done["status"] == "failed" and done["error"]["code"] == "submission_uncertain", done
        assert runway.submit_count() == 1  # never a second request for an attempt that may exist
        attempt = done["attempts"][0]
        assert Money.parse(attempt["cost_usd"]).micros > 0  # what Runway will charge, not $0
        assert attempt["unconfirmed_usd"] == attempt["cost_usd"] == attempt["estimated_cost_usd"]
        assert done["cost_usd"] == attempt["cost_usd"]
        # The runner's clock runs ahead of the wall's in tests (it skips idle waits): a window to match.
        today = datetime.now(UTC).date()
        window = f"from={today}&to={today + timedelta(days=2)}"
        report = await rig.client.get(f"/v1/reports/reconciliation?{window}", headers=auth(ADMIN_KEY))
        assert report.status == 200
        assert done["id"] in await report.text()  # listed for the operator to confirm
