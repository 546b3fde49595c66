"""The muvi emulator: string durations, micro-cent costs, pending-only cancel, signed webhooks."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from adapters.emulators.muvi import MuviEmulator, create_app
from adapters.emulators.tasks import ManualClock

KEY = "muvi-test-key"
SECRET = "muvi-secret"
HEADERS = {"Authorization": f"Bearer {KEY}"}
GEN4 = "runway/gen-4/image-to-video"

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
MakeServer = Callable[[web.Application], Awaitable[TestServer]]


def job(duration: Any = "5", **extra: Any) -> dict[str, Any]:
    data = {"prompt": "zoom in", "image_url": "https://images.example.com/p.jpg", "aspect_ratio": "16:9"}
    return {"model": GEN4, "input": {**data, "duration": duration}, **extra}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emulator(clock: ManualClock) -> MuviEmulator:
    return MuviEmulator(
        api_keys=[KEY], render_seconds=120, clock=clock, webhook_secret=SECRET, webhook_tick_s=3600
    )


@pytest.fixture
async def client(aiohttp_client: MakeClient, emulator: MuviEmulator) -> Client:
    return await aiohttp_client(create_app(emulator))


async def submit(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/v1/jobs/submit", json=body, headers=HEADERS)
    assert response.status == 200, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


async def get_job(client: Client, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/jobs/{job_id}", headers=HEADERS)
    assert response.status == 200
    answer: dict[str, Any] = await response.json()
    return answer


async def error_of(response: Any) -> tuple[int, str]:
    body = await response.json()
    assert body["success"] is False
    assert body["requestId"]
    return response.status, body["error"]["code"]


async def test_five_seconds_of_gen4_cost_500000_micro_cents(client: Client, clock: ManualClock) -> None:
    submitted = await submit(client, job())
    assert (submitted["status"], submitted["costMicroCents"]) == ("pending", 500_000)  # $0.50
    assert submitted["estimatedCompletionTime"] == "2027-01-15T08:02:00.000Z"
    ten = await submit(client, job("10", model="runway/gen-4-turbo/image-to-video"))
    assert ten["costMicroCents"] == 500_000  # turbo: 50,000 per second
    assert (await get_job(client, submitted["jobId"]))["status"] == "pending"
    clock.advance(60)
    processing = await get_job(client, submitted["jobId"])
    assert (processing["status"], processing["output"], processing["completedAt"]) == (
        "processing",
        None,
        None,
    )
    assert 0 < processing["progress"] < 100
    clock.advance(60)
    done = await get_job(client, submitted["jobId"])
    assert (done["status"], done["progress"], done["error"]) == ("completed", 100, None)
    assert done["outputs"] == [{"url": done["output"], "type": "video", "contentType": "video/mp4"}]
    assert done["completedAt"] == "2027-01-15T08:02:00.000Z"
    assert done["costMicroCents"] == 500_000
    video = await client.get(done["output"].removeprefix(str(client.make_url(""))))
    assert (video.status, video.content_type) == (200, "video/mp4")


@pytest.mark.parametrize(
    "body",
    [
        job(5),
        job("7"),
        {**job(), "model": "runway/gen-9"},
        {"model": GEN4, "input": {"prompt": "x"}},
    ],
)
async def test_invalid_submits_are_400_invalid_input(client: Client, body: dict[str, Any]) -> None:
    response = await client.post("/v1/jobs/submit", json=body, headers=HEADERS)
    assert await error_of(response) == (400, "INVALID_INPUT")


async def test_bad_key_and_unknown_job(client: Client) -> None:
    response = await client.post("/v1/jobs/submit", json=job(), headers={"Authorization": "Bearer nope"})
    assert (await error_of(response))[0] == 401
    assert await error_of(await client.get("/v1/jobs/missing", headers=HEADERS)) == (404, "JOB_NOT_FOUND")


async def test_cancel_refunds_pending_jobs_only(client: Client, clock: ManualClock) -> None:
    pending = (await submit(client, job()))["jobId"]
    cancelled = await client.post(f"/v1/jobs/{pending}/cancel", headers=HEADERS)
    assert await cancelled.json() == {"jobId": pending, "status": "cancelled", "refundedMicroCents": 500_000}
    assert (await get_job(client, pending))["costMicroCents"] == 0
    running = (await submit(client, job()))["jobId"]
    clock.advance(60)
    refused = await client.post(f"/v1/jobs/{running}/cancel", headers=HEADERS)
    assert await error_of(refused) == (400, "INVALID_INPUT")


async def test_failed_job_reports_error_code_and_no_charge(
    client: Client, emulator: MuviEmulator, clock: ManualClock
) -> None:
    emulator.inject("task_fail", code="CONTENT_POLICY_VIOLATION", message="flagged")
    job_id = (await submit(client, job()))["jobId"]
    clock.advance(120)
    failed = await get_job(client, job_id)
    assert (failed["status"], failed["error"]) == (
        "failed",
        {"code": "CONTENT_POLICY_VIOLATION", "message": "flagged"},
    )
    assert (failed["costMicroCents"], failed["output"]) == (0, None)


async def test_balance_and_concurrency_limits(aiohttp_client: MakeClient, clock: ManualClock) -> None:
    emulator = MuviEmulator(
        api_keys=[KEY], clock=clock, render_seconds=10, balance_micro_cents=1_200_000, max_concurrent=2
    )
    client = await aiohttp_client(create_app(emulator))
    await submit(client, job())
    await submit(client, job())
    third = await client.post("/v1/jobs/submit", json=job(), headers=HEADERS)
    assert await error_of(third) == (429, "CONCURRENT_JOBS_EXCEEDED")
    clock.advance(10)
    poor = await client.post("/v1/jobs/submit", json=job(), headers=HEADERS)
    assert await error_of(poor) == (402, "INSUFFICIENT_BALANCE")


async def test_webhook_is_signed_over_timestamp_and_raw_body(
    aiohttp_client: MakeClient, aiohttp_server: MakeServer, emulator: MuviEmulator, clock: ManualClock
) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    hook_url = str((await aiohttp_server(receiver)).make_url("/hook"))
    client = await aiohttp_client(create_app(emulator))
    job_id = (await submit(client, job(webhookUrl=hook_url)))["jobId"]
    clock.advance(120)
    [delivery] = await emulator.deliver_due_webhooks()
    assert delivery.status == 204
    [(headers, raw)] = received
    timestamp = headers["X-PixelByte-Timestamp"]
    expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    assert headers["X-PixelByte-Signature"] == f"sha256={expected}"
    assert delivery.json["jobId"] == job_id
    assert delivery.json["status"] == "completed"
    assert delivery.json["output"].endswith(".mp4")
    wrong = hmac.new(b"other-secret", timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    assert headers["X-PixelByte-Signature"] != f"sha256={wrong}"


async def test_forge_webhook_fault_signs_with_a_wrong_secret(
    aiohttp_client: MakeClient, emulator: MuviEmulator, clock: ManualClock
) -> None:
    client = await aiohttp_client(create_app(emulator))
    emulator.inject("forge_webhook")
    forged = (await submit(client, job(webhookUrl="http://127.0.0.1:9/hook")))["jobId"]
    honest = (await submit(client, job(webhookUrl="http://127.0.0.1:9/hook")))["jobId"]
    clock.advance(120)

    def verifies(job_id: str) -> bool:
        built = emulator.webhook_request(emulator.tasks[job_id])
        assert built is not None
        raw, headers = built
        signed = headers["X-PixelByte-Timestamp"].encode() + b"." + raw
        expected = "sha256=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, headers["X-PixelByte-Signature"])

    assert (verifies(forged), verifies(honest)) == (False, True)
