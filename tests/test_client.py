"""The client SDK against the real app: submit (JSON and upload), wait, download, list, cancel, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker.client import BrokerAPIError, BrokerClient
from broker.schema import JobRequest, JobStatus
from tests.support.adapters import png_bytes as png
from tests.support.deployment import ADMIN_KEY, GROWTH_KEY
from tests.support.fakes import FakeProvider


async def test_submit_wait_download_and_list(make_client: Any, tmp_path: Path) -> None:
    server = await make_client()
    async with BrokerClient(str(server.make_url("")), GROWTH_KEY) as broker:
        quote = await broker.quote({"prompt": "x"})
        assert quote["chosen"]["provider"] == "cheap"
        job = await broker.submit(
            JobRequest(prompt="pan left", duration_s=3), image=png(), idempotency_key="k-1"
        )
        again = await broker.submit(
            JobRequest(prompt="pan left", duration_s=3), image=png(), idempotency_key="k-1"
        )
        assert again.id == job.id and job.request.image_upload is not None
        seen: list[JobStatus] = []
        done = await broker.wait(job.id, poll_s=0.01, timeout_s=30, on_update=lambda j: seen.append(j.status))
        assert done.status is JobStatus.SUCCEEDED and seen[-1] is JobStatus.SUCCEEDED
        path = await broker.download(job.id, tmp_path / "clip.mp4")
        assert done.output is not None and path.stat().st_size == done.output.bytes
        text_job = await broker.submit({"prompt": "a city", "audio": False, "seed": None})
        jobs, cursor = await broker.list(limit=10)
        assert [j.id for j in jobs] == [text_job.id, job.id] and cursor is None


async def test_errors_carry_the_envelope(make_client: Any, providers: dict[str, FakeProvider]) -> None:
    providers["cheap"].script.polls_to_finish = 10_000
    server = await make_client()
    async with BrokerClient(str(server.make_url("")), GROWTH_KEY) as broker:
        with pytest.raises(BrokerAPIError) as caught:
            await broker.submit({"prompt": "x", "duration_s": 99})
        assert caught.value.status == 400 and caught.value.code == "invalid_request"
        job = await broker.submit({"prompt": "x"})
        cancelled = await broker.cancel(job.id)
        assert cancelled.id == job.id
        assert (await broker.wait(job.id, poll_s=0.01, timeout_s=30)).status is JobStatus.CANCELLED
        with pytest.raises(BrokerAPIError) as missing:
            await broker.get("job_nope")
        assert missing.value.status == 404 and missing.value.code == "not_found"
    async with BrokerClient(str(server.make_url("")), "wrong-key") as stranger:
        with pytest.raises(BrokerAPIError) as refused:
            await stranger.list()
        assert refused.value.status == 401


async def test_providers_policies_and_reports(make_client: Any) -> None:
    """The operator's calls the sync twin also has (`broker policy`, `providers`, `report`)."""
    server = await make_client()
    url = str(server.make_url(""))
    async with BrokerClient(url, ADMIN_KEY) as admin, BrokerClient(url, GROWTH_KEY) as growth:
        assert {p["provider"] for p in await growth.providers()} == {"cheap", "dear"}
        assert [p["team"] for p in await growth.policies()] == ["growth"]
        current = await admin.policy("growth")
        saved = await admin.put_policy("growth", {**current["policy"], "max_attempts": 2}, version=0)
        assert saved["version"] == 1 and saved["effective"]["max_attempts"] == 2
        with pytest.raises(BrokerAPIError) as stale:  # If-Match: the version read has moved on
            await admin.put_policy("growth", current["policy"], version=0)
        assert stale.value.status == 409
        history = await admin.policy_history("growth")
        assert [v["version"] for v in history] == [0, 1] and history[1]["change"]["max_attempts"][1] == 2
        job = await growth.submit({"prompt": "x"})
        await growth.wait(job.id, poll_s=0.01, timeout_s=30)
        report = await growth.cost_report(group_by="provider")
        assert report["team"] == "growth" and report["totals"]["jobs"] == 1
        assert (await admin.reconciliation())["totals"]["attempts"] == 1
