"""The Runway emulator speaks Runway's protocol: headers, per-model validation, states, credits."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from adapters.emulators.media import probe
from adapters.emulators.runway import RunwayEmulator, create_app
from adapters.emulators.tasks import ManualClock

KEY = "rw-test-key"
HEADERS = {"Authorization": f"Bearer {KEY}", "X-Runway-Version": "2024-11-06"}
IMAGE = "https://images.example.com/cat.png"

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emulator(clock: ManualClock) -> RunwayEmulator:
    return RunwayEmulator(api_keys=[KEY], render_seconds=100, clock=clock)


@pytest.fixture
async def client(aiohttp_client: MakeClient, emulator: RunwayEmulator) -> Client:
    return await aiohttp_client(create_app(emulator))


def i2v(**overrides: Any) -> dict[str, Any]:
    body = {
        "model": "gen4_turbo",
        "promptImage": IMAGE,
        "ratio": "1280:720",
        "duration": 5,
        "promptText": "a cat",
    }
    body.update(overrides)
    return body


async def submit(client: Client, body: dict[str, Any], path: str = "/v1/image_to_video") -> str:
    response = await client.post(path, json=body, headers=HEADERS)
    assert response.status == 200, await response.text()
    task_id: str = (await response.json())["id"]
    return task_id


async def task(client: Client, task_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/tasks/{task_id}", headers=HEADERS)
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


async def test_task_moves_through_states_and_reports_credits(client: Client, clock: ManualClock) -> None:
    task_id = await submit(client, i2v())
    pending = await task(client, task_id)
    assert pending["status"] == "PENDING"
    assert pending["estimatedCost"] == {"credits": 25}  # gen4_turbo: 5 credits/s x 5 s
    clock.advance(50)
    running = await task(client, task_id)
    assert running["status"] == "RUNNING"
    assert 0 < running["progress"] < 1
    clock.advance(50)
    done = await task(client, task_id)
    assert done["status"] == "SUCCEEDED"
    assert done["cost"] == {"credits": 25}
    assert "estimatedCost" not in done
    video = await client.get(done["output"][0].removeprefix(str(client.make_url(""))))
    assert video.status == 200
    assert video.content_type == "video/mp4"
    codec, width, height, duration = probe(await video.read())
    assert (codec, width, height) == ("h264", 1280, 720)  # the ratio's pixels, as Runway renders
    assert duration == pytest.approx(5, abs=0.3)


async def test_output_url_is_absolute_on_the_emulator(client: Client, clock: ManualClock) -> None:
    task_id = await submit(client, i2v())
    clock.advance(100)
    output = (await task(client, task_id))["output"][0]
    assert output.startswith(str(client.make_url("/_emulator/media/")))


async def test_missing_version_header_is_400_and_bad_key_401(
    client: Client, emulator: RunwayEmulator
) -> None:
    no_version = await client.post(
        "/v1/image_to_video", json=i2v(), headers={"Authorization": f"Bearer {KEY}"}
    )
    assert no_version.status == 400
    assert "X-Runway-Version" in (await no_version.json())["error"]
    bad_key = await client.post(
        "/v1/image_to_video", json=i2v(), headers={**HEADERS, "Authorization": "Bearer x"}
    )
    assert bad_key.status == 401
    assert emulator.submit_count() == 2
    assert emulator.tasks == {}


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        ({"ratio": "16:9"}, "ratio"),
        ({"duration": 11}, "duration"),
        ({"model": "gen4.5", "promptText": None}, "promptText"),
        ({"model": "veo3.1", "ratio": "1920:1080", "duration": 5}, "duration"),
        ({"promptImage": "http://insecure.example.com/a.png"}, "promptImage"),
        ({"promptImage": [{"uri": IMAGE, "position": "last"}]}, "promptImage"),
        ({"seed": -1}, "seed"),
        ({"audio": True}, "audio"),
        ({"model": "gen5"}, "model"),
    ],
)
async def test_invalid_bodies_are_400_with_issues(
    client: Client, overrides: dict[str, Any], path: str
) -> None:
    body = {k: v for k, v in i2v(**overrides).items() if v is not None}
    response = await client.post("/v1/image_to_video", json=body, headers=HEADERS)
    assert response.status == 400
    issues = (await response.json())["issues"]
    assert [path] in [issue["path"] for issue in issues]


async def test_data_uri_limit_is_5_mb(client: Client) -> None:
    small = "data:image/png;base64," + base64.b64encode(b"\x89PNG" + b"0" * 1000).decode()
    await submit(client, i2v(promptImage=small))
    big = "data:image/png;base64," + base64.b64encode(b"0" * (5 * 1024 * 1024 + 1)).decode()
    response = await client.post("/v1/image_to_video", json=i2v(promptImage=big), headers=HEADERS)
    assert response.status == 400


async def test_text_to_video_takes_only_its_models(client: Client, emulator: RunwayEmulator) -> None:
    t2v = {"model": "gen4_turbo", "ratio": "1280:720", "duration": 5, "promptText": "waves"}
    response = await client.post("/v1/text_to_video", json=t2v, headers=HEADERS)
    assert response.status == 400
    task_id = await submit(client, {**t2v, "model": "gen4.5"}, path="/v1/text_to_video")
    assert emulator.tasks[task_id].cost == 60  # gen4.5: 12 credits/s


async def test_veo_audio_changes_the_price(client: Client, emulator: RunwayEmulator) -> None:
    loud = await submit(client, i2v(model="veo3.1", ratio="1920:1080", duration=8))
    quiet = await submit(client, i2v(model="veo3.1", ratio="1920:1080", duration=8, audio=False))
    assert (emulator.tasks[loud].cost, emulator.tasks[quiet].cost) == (320, 160)


async def test_failed_task_carries_code_and_is_refunded(
    client: Client, emulator: RunwayEmulator, clock: ManualClock
) -> None:
    emulator.inject("task_fail", code="SAFETY.INPUT.TEXT", message="prompt flagged")
    failing = await submit(client, i2v())
    fine = await submit(client, i2v())
    clock.advance(100)
    failed = await task(client, failing)
    assert (failed["status"], failed["failureCode"]) == ("FAILED", "SAFETY.INPUT.TEXT")
    assert failed["failure"] == "prompt flagged"
    assert failed["cost"] == {"credits": 0}
    assert (await task(client, fine))["status"] == "SUCCEEDED"


async def test_never_finishing_task_keeps_running(
    client: Client, emulator: RunwayEmulator, clock: ManualClock
) -> None:
    emulator.inject("never_finish")
    task_id = await submit(client, i2v())
    clock.advance(10_000)
    body = await task(client, task_id)
    assert body["status"] == "RUNNING"
    assert body["progress"] < 1


async def test_delete_cancels_active_and_deletes_finished(client: Client, clock: ManualClock) -> None:
    finished = await submit(client, i2v())
    clock.advance(100)
    active = await submit(client, i2v())
    assert (await client.delete(f"/v1/tasks/{active}", headers=HEADERS)).status == 204
    clock.advance(100)
    cancelled = await task(client, active)
    assert (cancelled["status"], cancelled["cost"]) == ("CANCELLED", {"credits": 0})
    assert (await client.delete(f"/v1/tasks/{finished}", headers=HEADERS)).status == 204
    assert (await client.get(f"/v1/tasks/{finished}", headers=HEADERS)).status == 404
    assert (await client.get("/v1/tasks/nope", headers=HEADERS)).status == 404


async def test_requests_are_recorded_with_headers_and_body(client: Client, emulator: RunwayEmulator) -> None:
    task_id = await submit(client, i2v(seed=7))
    await task(client, task_id)
    submitted, polled = emulator.requests
    assert (submitted.method, submitted.path, submitted.endpoint) == ("POST", "/v1/image_to_video", "submit")
    assert submitted.headers["X-Runway-Version"] == "2024-11-06"
    assert submitted.json["seed"] == 7
    assert (polled.endpoint, polled.path) == ("status", f"/v1/tasks/{task_id}")
    assert emulator.recorder.count("status") == 1


async def test_over_concurrency_tasks_wait_throttled(aiohttp_client: MakeClient, clock: ManualClock) -> None:
    emulator = RunwayEmulator(api_keys=[KEY], render_seconds=100, clock=clock, max_concurrency=1)
    client = await aiohttp_client(create_app(emulator))
    first = await submit(client, i2v())
    clock.advance(10)
    second = await submit(client, i2v())
    waiting = await task(client, second)
    assert (waiting["status"], waiting["estimatedCost"]) == ("THROTTLED", {"credits": 25})
    clock.advance(90)  # the first ends; the second's render begins now
    assert (await task(client, first))["status"] == "SUCCEEDED"
    assert (await task(client, second))["status"] == "PENDING"
    clock.advance(50)
    assert (await task(client, second))["status"] == "RUNNING"
    clock.advance(50)
    assert (await task(client, second))["status"] == "SUCCEEDED"


async def test_task_behind_a_stuck_one_stays_throttled_until_cancelled(
    aiohttp_client: MakeClient, clock: ManualClock
) -> None:
    emulator = RunwayEmulator(api_keys=[KEY], render_seconds=100, clock=clock, max_concurrency=1)
    emulator.inject("never_finish")
    client = await aiohttp_client(create_app(emulator))
    await submit(client, i2v())
    stuck = await submit(client, i2v())
    clock.advance(1000)
    assert (await task(client, stuck))["status"] == "THROTTLED"  # the slot is held forever
    assert (await client.delete(f"/v1/tasks/{stuck}", headers=HEADERS)).status == 204
    assert (await task(client, stuck))["status"] == "CANCELLED"


async def test_a_cancel_while_running_is_charged_and_one_while_pending_refunded(
    client: Client, emulator: RunwayEmulator, clock: ManualClock
) -> None:
    """The SDK on DELETE /v1/tasks/{id}: "If that check observes RUNNING, cancellation does not refund
    credits"; PENDING and THROTTLED tasks are refunded."""
    pending = await submit(client, i2v(duration=5))
    assert (await task(client, pending))["status"] == "PENDING"
    assert (await client.delete(f"/v1/tasks/{pending}", headers=HEADERS)).status == 204
    running = await submit(client, i2v(duration=5))
    clock.advance(50)
    assert (await task(client, running))["status"] == "RUNNING"
    assert (await client.delete(f"/v1/tasks/{running}", headers=HEADERS)).status == 204
    clock.advance(100)
    assert (await task(client, pending))["cost"] == {"credits": 0}
    assert (await task(client, running))["cost"] == {"credits": 25}  # gen4_turbo: 5 credits/s x 5 s
    assert emulator.charges() == {pending: 0, running: 25}
