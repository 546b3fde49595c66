"""The fal queue emulator: bare bodies, URLs without the subpath, queue states, errors and webhooks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from adapters.emulators.fal import FalEmulator, FalModel, create_app
from adapters.emulators.tasks import ManualClock

KEY = "fal-test-key"
HEADERS = {"Authorization": f"Key {KEY}"}
KLING = "fal-ai/kling-video/v2.5-turbo/pro/image-to-video"
INPUT = {"prompt": "a cat", "image_url": "https://images.example.com/cat.png", "duration": "5"}

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
MakeServer = Callable[[web.Application], Awaitable[TestServer]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emulator(clock: ManualClock) -> FalEmulator:
    return FalEmulator(api_keys=[KEY], render_seconds=100, clock=clock, webhook_tick_s=3600)


@pytest.fixture
async def client(aiohttp_client: MakeClient, emulator: FalEmulator) -> Client:
    return await aiohttp_client(create_app(emulator))


async def submit(client: Client, endpoint: str = KLING, body: Any = INPUT, query: str = "") -> dict[str, Any]:
    response = await client.post(f"/{endpoint}{query}", json=body, headers=HEADERS)
    assert response.status == 200, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


def local(client: Client, url: str) -> str:
    origin = str(client.make_url(""))
    assert url.startswith(origin)
    return url.removeprefix(origin)


async def get_json(client: Client, url: str) -> tuple[int, dict[str, Any]]:
    response = await client.get(local(client, url), headers=HEADERS)
    return response.status, await response.json()


async def test_submit_returns_urls_without_subpath_and_queue_moves(
    client: Client, clock: ManualClock
) -> None:
    first = await submit(client)
    second = await submit(client)
    request_id = first["request_id"]
    assert first["status_url"].endswith(f"/fal-ai/kling-video/requests/{request_id}/status")
    assert first["cancel_url"].endswith(f"/fal-ai/kling-video/requests/{request_id}/cancel")
    assert first["response_url"].endswith(f"/fal-ai/kling-video/requests/{request_id}")
    assert (first["queue_position"], second["queue_position"]) == (0, 1)
    assert await get_json(client, first["status_url"]) == (
        200,
        {"status": "IN_QUEUE", "queue_position": 0, "request_id": request_id, **_urls(first)},
    )
    clock.advance(50)
    status, running = await get_json(client, first["status_url"] + "?logs=1")
    assert (status, running["status"]) == (200, "IN_PROGRESS")
    assert running["logs"][0]["message"]
    assert (await get_json(client, first["response_url"]))[0] == 400  # still in progress
    clock.advance(50)
    status, done = await get_json(client, first["status_url"])
    assert (done["status"], done["logs"], "error" in done) == ("COMPLETED", None, False)
    assert done["metrics"]["inference_time"] == pytest.approx(75)
    status, result = await get_json(client, first["response_url"])
    assert status == 200
    video = await client.get(local(client, result["video"]["url"]))
    assert video.status == 200
    assert len(await video.read()) == result["video"]["file_size"]


def _urls(submitted: dict[str, Any]) -> dict[str, str]:
    return {k: submitted[k] for k in ("status_url", "response_url", "cancel_url")}


async def test_wrapped_input_and_bad_fields_are_422(client: Client, emulator: FalEmulator) -> None:
    wrapped = await client.post(f"/{KLING}", json={"input": INPUT}, headers=HEADERS)
    assert wrapped.status == 422
    fields = {tuple(item["loc"]) for item in (await wrapped.json())["detail"]}
    assert fields == {("body", "prompt"), ("body", "image_url")}
    bad = await client.post(
        f"/{KLING}", json={**INPUT, "duration": 5, "aspect_ratio": "2:1"}, headers=HEADERS
    )
    assert {item["loc"][1] for item in (await bad.json())["detail"]} == {"duration", "aspect_ratio"}
    assert emulator.tasks == {}


async def test_key_scheme_is_required(client: Client) -> None:
    response = await client.post(f"/{KLING}", json=INPUT, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status == 401
    assert (await response.json())["error_type"] == "unauthorized"


async def test_status_url_with_subpath_is_not_found(client: Client) -> None:
    request_id = (await submit(client))["request_id"]
    wrong = await client.get(f"/{KLING}/requests/{request_id}/status", headers=HEADERS)
    assert wrong.status in (404, 405)
    other_app = await client.get(f"/fal-ai/veo3/requests/{request_id}/status", headers=HEADERS)
    assert other_app.status == 404


async def test_failed_request_is_completed_with_error(
    client: Client, emulator: FalEmulator, clock: ManualClock
) -> None:
    emulator.inject("task_fail", code="internal_server_error", message="GPU fell over")
    submitted = await submit(client)
    clock.advance(100)
    _, status = await get_json(client, submitted["status_url"])
    assert (status["status"], status["error"], status["error_type"]) == (
        "COMPLETED",
        "GPU fell over",
        "internal_server_error",
    )
    code, result = await get_json(client, submitted["response_url"])
    assert (code, result["error_type"]) == (500, "internal_server_error")


async def test_cancel_in_queue_in_progress_and_completed(client: Client, clock: ManualClock) -> None:
    early = await submit(client)
    clock.advance(50)
    running = await submit(client)
    clock.advance(30)  # `running` is past its queue phase; `early` is not done yet
    fresh = await submit(client)
    removed = await client.put(local(client, fresh["cancel_url"]), headers=HEADERS)
    assert (removed.status, await removed.json()) == (200, {"status": "OK"})
    requested = await client.put(local(client, running["cancel_url"]), headers=HEADERS)
    assert (requested.status, await requested.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
    for cancelled in (fresh, running):
        _, status = await get_json(client, cancelled["status_url"])
        assert (status["status"], status["error_type"]) == ("COMPLETED", "request_cancelled")
    clock.advance(20)
    done = await client.put(local(client, early["cancel_url"]), headers=HEADERS)
    assert (done.status, await done.json()) == (400, {"status": "ALREADY_COMPLETED"})
    _, status = await get_json(client, early["status_url"])
    assert "error" not in status


async def test_string_video_models_and_strict_model_lists(
    aiohttp_client: MakeClient, clock: ManualClock
) -> None:
    emulator = FalEmulator(
        api_keys=[KEY],
        render_seconds=1,
        clock=clock,
        models={"fal-ai/minimax/video-01": FalModel(video_as_string=True)},
    )
    client = await aiohttp_client(create_app(emulator))
    submitted = await submit(client, "fal-ai/minimax/video-01", {"prompt": "x"})
    clock.advance(1)
    _, result = await get_json(client, submitted["response_url"])
    assert isinstance(result["video"], str)
    unknown = await client.post("/fal-ai/unknown", json={"prompt": "x"}, headers=HEADERS)
    assert unknown.status == 404


async def test_webhook_posts_ok_and_error_bodies(
    aiohttp_client: MakeClient, aiohttp_server: MakeServer, emulator: FalEmulator, clock: ManualClock
) -> None:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=200)

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    hook_url = str((await aiohttp_server(receiver)).make_url("/hook"))
    client = await aiohttp_client(create_app(emulator))
    ok = await submit(client, query=f"?fal_webhook={hook_url}")
    emulator.inject("task_fail", code="content_policy_violation", message="flagged")
    bad = await submit(client, query=f"?fal_webhook={hook_url}")
    assert await emulator.deliver_due_webhooks() == []
    clock.advance(100)
    deliveries = await emulator.deliver_due_webhooks()
    assert [d.status for d in deliveries] == [200, 200]
    by_id = {body["request_id"]: body for body in received}
    assert by_id[ok["request_id"]]["status"] == "OK"
    assert by_id[ok["request_id"]]["payload"]["video"]["url"].endswith(".mp4")
    assert (by_id[bad["request_id"]]["status"], by_id[bad["request_id"]]["error"]) == ("ERROR", "flagged")
    assert await emulator.deliver_due_webhooks() == []  # each webhook is sent once
