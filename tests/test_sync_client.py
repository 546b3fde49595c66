"""The synchronous client against the real app: the same calls and errors as the async one."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from broker.client import BrokerAPIError
from broker.schema import JobRequest, JobStatus
from broker.sync_client import BrokerUnreachable, SyncBrokerClient
from tests.support.adapters import png_bytes as png
from tests.support.deployment import GROWTH_KEY
from tests.support.fakes import FakeProvider


async def test_submit_upload_wait_download_and_list(make_client: Any, tmp_path: Path) -> None:
    server = await make_client()
    url = str(server.make_url(""))

    def script() -> None:
        with SyncBrokerClient(url, GROWTH_KEY) as broker:
            assert broker.quote({"prompt": "x"})["chosen"]["provider"] == "cheap"
            quoted = broker.quote({"prompt": "x"}, image=png())
            assert quoted["chosen"]["provider"] == "cheap"
            request = JobRequest(prompt="pan left", duration_s=3, constraints={"max_cost_usd": "0.20"})
            job = broker.submit(request, image=png(), idempotency_key="k-1")
            again = broker.submit(request, image=png(), idempotency_key="k-1")
            assert again.id == job.id and job.request.image_upload is not None
            assert job.request.constraints is not None and job.request.constraints.max_cost_usd == "0.20"
            seen: list[JobStatus] = []
            done = broker.wait(job.id, poll_s=0.01, timeout_s=30, on_update=lambda j: seen.append(j.status))
            assert done.status is JobStatus.SUCCEEDED and seen[-1] is JobStatus.SUCCEEDED
            path = broker.download(job.id, tmp_path / "clip.mp4")
            assert done.output is not None and path.stat().st_size == done.output.bytes
            text_job = broker.submit({"prompt": "a city", "audio": False, "seed": None})
            jobs, cursor = broker.list(limit=10)
            assert [j.id for j in jobs] == [text_job.id, job.id] and cursor is None
            assert [r["provider"] for r in broker.pricing()["routes"]] == ["cheap", "dear"]

    await asyncio.to_thread(script)


async def test_errors_carry_the_envelope(make_client: Any, providers: dict[str, FakeProvider]) -> None:
    providers["cheap"].script.polls_to_finish = 10_000
    server = await make_client()
    url = str(server.make_url(""))

    def script() -> None:
        with SyncBrokerClient(url, GROWTH_KEY) as broker:
            with pytest.raises(BrokerAPIError) as caught:
                broker.submit({"prompt": "x", "duration_s": 99})
            assert caught.value.status == 400 and caught.value.code == "invalid_request"
            job = broker.submit({"prompt": "x"})
            assert broker.cancel(job.id).id == job.id
            assert broker.wait(job.id, poll_s=0.01, timeout_s=30).status is JobStatus.CANCELLED
            with pytest.raises(BrokerAPIError) as missing:
                broker.get("job_nope/../../v1/pricing")
            assert missing.value.status == 404 and missing.value.code == "not_found"
            with pytest.raises(TimeoutError):
                broker.wait(broker.submit({"prompt": "y"}).id, poll_s=0.01, timeout_s=0.05)
        with SyncBrokerClient(url, "wrong-key") as stranger, pytest.raises(BrokerAPIError) as refused:
            stranger.list()
        assert refused.value.status == 401 and refused.value.code == "unauthorized"
        with pytest.raises(BrokerUnreachable):
            SyncBrokerClient("http://127.0.0.1:9", GROWTH_KEY, timeout_s=5).list()

    await asyncio.to_thread(script)


async def test_a_download_cut_off_mid_body_leaves_no_file(aiohttp_server: Any, tmp_path: Path) -> None:
    async def cut_off(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "100000", "Content-Type": "video/mp4"})
        await response.prepare(request)
        await response.write(b"\0" * 1000)
        assert request.transport is not None
        request.transport.close()
        return response

    app = web.Application()
    app.router.add_get("/v1/jobs/{job_id}/output", cut_off)
    server = await aiohttp_server(app)
    dest = tmp_path / "clip.mp4"

    def script() -> None:
        with pytest.raises(BrokerUnreachable, match="broke"):
            SyncBrokerClient(str(server.make_url("")), GROWTH_KEY).download("job_1", dest)

    await asyncio.to_thread(script)
    assert list(tmp_path.iterdir()) == []
