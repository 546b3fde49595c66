"""The books match what the providers charge: deadlines end in a cancel and an honest booking, a paid
output is fetched again rather than re-rendered, and unconfirmed charges are reconciled later.

Everything runs through the HTTP API against the emulators (`bench.cost_integrity.rig`), on the
runner's fast-forwarded clock, which the emulators share.
"""

from __future__ import annotations

import asyncio
import io
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from adapters.emulators.faults import Endpoint
from bench.cost_integrity import (
    ADMIN_KEY,
    GEN4_TURBO,
    MUVI_GEN4,
    MUVI_TURBO,
    TABLE_PROVIDERS,
    rig,
    run_workload,
    table,
)
from broker.appkeys import ADAPTERS, BOOKKEEPER, RUNNER
from broker.cli.report import run_report
from broker.jobs.reconcile import reconcile_job
from broker.store import StoreUnavailable
from pricing.money import Money
from tests.support.budget_rig import assert_budget_balances, on_store


async def test_runway_past_its_deadline_is_cancelled_booked_as_charged_and_falls_back(tmp_path: Path) -> None:
    async with rig(tmp_path, deadline_s=60) as r:
        runway = r.emulator("runway")
        runway.queue_fraction = 0.0  # running at once, so the cancel is one Runway does not refund
        runway.inject("never_finish")
        job = await r.wait(await r.submit(["runway", "muvi"], [GEN4_TURBO, MUVI_GEN4]), "succeeded", "failed")

        first, second = job["attempts"]
        task_id = first["provider_job_id"]
        # providers.runway.task_deadline_s (60) overrides the adapter's 900 s.
        assert r.client.server.app[ADAPTERS]["runway"].spec.poll_schedule.deadline_s == 60
        assert "not done after 60 s" in first["error"]["message"]
        cancels = runway.recorder.of(Endpoint.CANCEL)
        assert [(c.method, c.path) for c in cancels] == [("DELETE", f"/v1/tasks/{task_id}")]
        # Runway reports the full 25 credits for a task cancelled while RUNNING; the broker books them.
        assert runway.charges() == {task_id: 25}
        assert (first["status"], first["error"]["code"], first["cost_usd"]) == (
            "failed",
            "timed_out",
            "0.250000",
        )
        assert first["reported_cost"] == "25 credits" and first["unconfirmed_usd"] is None
        assert (second["provider"], second["status"], second["cost_usd"]) == ("muvi", "succeeded", "0.500000")
        assert job["status"] == "succeeded" and job["cost_usd"] == "0.750000"  # both attempts' charges


async def test_a_download_cut_off_twice_is_fetched_again_and_one_render_paid(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        runway = r.emulator("runway")
        runway.inject("drop", "download", count=2)
        job = await r.wait(await r.submit(["runway", "muvi"], [GEN4_TURBO, MUVI_GEN4]), "succeeded", "failed")

        assert job["status"] == "succeeded", job
        assert [a["provider"] for a in job["attempts"]] == ["runway"]  # no second render elsewhere
        assert runway.submit_count() == 1 and r.emulator("muvi").submit_count() == 0
        assert runway.recorder.count(Endpoint.DOWNLOAD) == 3  # cut twice, then served on a later try
        assert job["cost_usd"] == "0.250000" and job["output"]["bytes"] > 0


async def test_an_output_the_provider_no_longer_has_ends_the_attempt_with_its_cost_booked(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        runway = r.emulator("runway")
        runway.inject("http_error", "download", status=404, count=None)  # the output is gone for good
        job = await r.wait(await r.submit(["runway", "muvi"], [GEN4_TURBO, MUVI_GEN4]), "succeeded", "failed")
        runway.faults.clear()

        first, second = job["attempts"]
        assert runway.recorder.count(Endpoint.DOWNLOAD) == 1  # a 404 is not retried
        assert (first["status"], first["cost_usd"]) == ("failed", "0.250000")  # paid, though never fetched
        assert second["provider"] == "muvi" and job["cost_usd"] == "0.750000"


async def test_a_charge_no_one_could_cancel_is_unconfirmed_then_corrected_by_reconciliation(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        muvi = r.emulator("muvi")
        muvi.inject("never_finish")
        job = await r.wait(await r.submit(["muvi"], [MUVI_TURBO]), "succeeded", "failed")
        (attempt,) = job["attempts"]
        # muvi cancels only pending jobs: the processing one runs on, and its price is booked as believed.
        assert muvi.recorder.count(Endpoint.CANCEL) == 1
        assert attempt["cost_usd"] == attempt["unconfirmed_usd"] == "0.250000"
        assert job["status"] == "failed" and job["cost_usd"] == "0.250000"
        await asyncio.sleep(0.05)
        await assert_budget_balances(r)  # the believed charge is spent in the team's budget

        # Later the task fails at muvi, which refunds it; reconciliation books what muvi now says.
        task = muvi.tasks[attempt["provider_job_id"]]
        task.never_finish, task.fail_code = False, "INTERNAL_ERROR"
        ctx = r.client.server.app[RUNNER].ctx
        assert await reconcile_job(ctx, job["id"]) == 1
        fixed = await r.job(job["id"])
        (confirmed,) = fixed["attempts"]
        assert confirmed["unconfirmed_usd"] is None and confirmed["cost_usd"] == "0.000000"
        assert fixed["cost_usd"] == "0.000000" and muvi.charges() == {task.id: 0}
        assert await ctx.store.due_reconciles(ctx.clock() + 10**6) == []  # nothing left to ask
        await assert_budget_balances(r)  # the settled spend was corrected by the difference


async def test_a_correction_whose_budget_settlement_was_cut_lands_in_the_next_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with rig(tmp_path) as r:
        muvi = r.emulator("muvi")
        muvi.inject("never_finish")
        job = await r.wait(await r.submit(["muvi"], [MUVI_TURBO]), "succeeded", "failed")
        (attempt,) = job["attempts"]
        await asyncio.sleep(0.05)
        task = muvi.tasks[attempt["provider_job_id"]]
        task.never_finish, task.fail_code = False, "INTERNAL_ERROR"  # refunded after all
        ctx = r.client.server.app[RUNNER].ctx
        settle = ctx.store.settle_budget

        async def cut(job_id: str, actual_micros: int) -> None:
            raise StoreUnavailable("the store is unreachable")

        monkeypatch.setattr(ctx.store, "settle_budget", cut)
        with pytest.raises(StoreUnavailable):
            await reconcile_job(ctx, job["id"])  # the correction is booked, its settlement is cut
        assert (await r.job(job["id"]))["cost_usd"] == "0.000000"
        with pytest.raises(AssertionError):
            await assert_budget_balances(r)  # the budget still holds the believed 0.25
        monkeypatch.setattr(ctx.store, "settle_budget", settle)
        assert await reconcile_job(ctx, job["id"]) == 0  # nothing left to confirm, but the budget
        await assert_budget_balances(r)  # is settled to the corrected cost
        assert await ctx.store.due_reconciles(ctx.clock() + 10**6) == []


async def test_a_charge_still_unconfirmed_is_asked_about_again_later(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        pixelapi = r.emulator("pixelapi")
        pixelapi.inject("never_finish")
        job = await r.wait(await r.submit(["pixelapi"], image=False), "succeeded", "failed")
        assert job["attempts"][0]["unconfirmed_usd"] == "0.090000"  # PixelAPI has no cancel at all
        ctx = r.client.server.app[RUNNER].ctx
        due = await ctx.store.due_reconciles(ctx.clock() + 601)
        assert due == [job["id"]] and await ctx.store.due_reconciles(ctx.clock()) == []
        confirmed, _ = await r.client.server.app[BOOKKEEPER].run_once()
        assert confirmed == 0  # not due yet
        assert await reconcile_job(ctx, job["id"]) == 0  # still running: asked again in 10 minutes
        assert await ctx.store.due_reconciles(ctx.clock() + 601) == [job["id"]]


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_after_a_mixed_workload_the_books_equal_the_providers_charges(
    tmp_path: Path, kind: str
) -> None:
    async with on_store(tmp_path, kind) as r:
        jobs = await run_workload(r)
        booked, charged = await r.booked(), r.charged()
        assert {p: booked.get(p, Money.zero()) for p in TABLE_PROVIDERS} == charged, table(booked, charged)
        assert all(charged[p] > Money.zero() for p in TABLE_PROVIDERS)
        statuses = {name: job["status"] for name, job in jobs.items()}
        assert (
            statuses["runway cancelled while running"]
            == statuses["muvi cancelled while queued"]
            == "cancelled"
        )
        assert jobs["runway cancelled while running"]["cost_usd"] == "0.250000"  # RUNNING: not refunded
        assert jobs["runway cancelled while queued"]["cost_usd"] == "0.000000"  # PENDING: refunded
        assert jobs["doitong download cut twice"]["status"] == "succeeded"
        await asyncio.sleep(0.05)
        await assert_budget_balances(r)


async def test_the_reconciliation_report_sets_bookings_against_what_providers_said(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        await r.wait(await r.submit(["runway"], [GEN4_TURBO]), "succeeded")
        r.emulator("muvi").inject("never_finish")
        stuck = await r.wait(await r.submit(["muvi"], [MUVI_TURBO]), "failed")
        fal = await r.wait(await r.submit(["fal"]), "succeeded")
        response = await r.client.get(
            "/v1/reports/reconciliation", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        )
        assert response.status == 200, await response.text()
        body = await response.json()

        groups = {g["provider"]: g for g in body["groups"]}
        assert groups["runway"]["booked_usd"] == groups["runway"]["confirmed_usd"] == "0.250000"
        assert (
            groups["runway"]["reported"] == {"credits": "25"}
            and groups["runway"]["reported_usd"] == "0.250000"
        )
        assert groups["muvi"]["unconfirmed_usd"] == groups["muvi"]["booked_usd"] == "0.250000"
        assert groups["muvi"]["reported"] == {"micro_cents": "250000"}  # muvi's running figure
        assert groups["fal"]["unreported_usd"] == groups["fal"]["booked_usd"] == fal["cost_usd"]
        reasons = {d["job_id"]: d["reason"].split(":")[0] for d in body["discrepancies"]}
        assert reasons == {stuck["id"]: "unconfirmed", fal["id"]: "unreported"}
        assert body["totals"]["booked_usd"] == str(
            sum((Money.parse(g["booked_usd"]) for g in body["groups"]), Money.zero())
        )
        other = await r.client.get(
            "/v1/reports/reconciliation?to=nope", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        )
        assert other.status == 400 and (await other.json())["error"]["details"][0]["field"] == "to"

        out = io.StringIO()
        store_url = f"sqlite:///{tmp_path}/broker.db"
        code = await asyncio.to_thread(run_report, ["--reconcile", "--store-url", store_url], out=out)
        text = out.getvalue()
        assert code == 0, text
        assert "Discrepancies: 2" in text and stuck["attempts"][0]["provider_job_id"] in text
        runway_row = next(line for line in text.splitlines() if line.startswith("runway "))
        assert "0.250000" in runway_row and "25 credits" in runway_row


async def test_a_download_failing_past_the_providers_retention_ends_paid_and_falls_back(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path, retention_s=120) as r:  # providers.<name>.output_retention_s
        runway = r.emulator("runway")
        runway.inject("drop", "download", count=None)  # every fetch is cut, for good
        job = await r.wait(await r.submit(["runway", "muvi"], [GEN4_TURBO, MUVI_GEN4]), "succeeded", "failed")
        runway.faults.clear()

        first, second = job["attempts"]
        tries = runway.recorder.count(Endpoint.DOWNLOAD)
        # Tried at once, then after 5, 10, 20 and 40 s; the next wait (80 s) would pass the 120 s kept.
        # (aiohttp repeats a GET once by itself when a kept-alive connection is dropped: 2 requests a try.)
        assert tries in (5, 10), tries
        assert (first["status"], first["error"]["code"], first["cost_usd"]) == (
            "failed",
            "provider_unavailable",
            "0.250000",
        )
        elapsed = datetime.fromisoformat(first["finished_at"]) - datetime.fromisoformat(first["started_at"])
        assert timedelta(seconds=75) <= elapsed < timedelta(seconds=120)
        assert second["provider"] == "muvi" and job["cost_usd"] == "0.750000"
