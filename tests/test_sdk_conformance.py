"""The official provider SDKs work against the emulators: proof that they speak the real protocols."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import fal_client
import fal_client.client
import pytest
import runwayml
import runwayml.lib.polling
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.emulators.fal import FalEmulator
from adapters.emulators.fal import create_app as create_fal
from adapters.emulators.media import probe
from adapters.emulators.runway import RunwayEmulator
from adapters.emulators.runway import create_app as create_runway

MakeServer = Callable[[web.Application], Awaitable[TestServer]]


@pytest.fixture
def fast_runway_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK sleeps POLL_TIME ± POLL_JITTER/2 seconds (6 ± 1.5) between polls; same protocol, faster.
    monkeypatch.setattr(runwayml.lib.polling, "POLL_TIME", 0.02)
    monkeypatch.setattr(runwayml.lib.polling, "POLL_JITTER", 0)


@pytest.mark.usefixtures("fast_runway_polling")
async def test_runway_sdk_creates_image_to_video_and_waits_for_output(aiohttp_server: MakeServer) -> None:
    emulator = RunwayEmulator(api_keys=["rw-key"], render_seconds=0.1)
    server = await aiohttp_server(create_runway(emulator))
    async with runwayml.AsyncRunwayML(
        api_key="rw-key", base_url=str(server.make_url("")), max_retries=0
    ) as client:
        created = await client.image_to_video.create(
            model="gen4_turbo",
            prompt_image="https://images.example.com/cat.png",
            prompt_text="a cat turns its head",
            ratio="1280:720",
            duration=5,
            seed=42,
        )
        task = await created.wait_for_task_output(timeout=10)
        assert task.status == "SUCCEEDED"
        assert task.cost.credits == 25
        video = await client.get(task.output[0], cast_to=bytes)
    assert probe(video)[0] == "h264"
    submitted = emulator.recorder.of("submit")[0]
    assert submitted.headers["X-Runway-Version"] == "2024-11-06"
    assert submitted.json == {
        "model": "gen4_turbo",
        "promptImage": "https://images.example.com/cat.png",
        "promptText": "a cat turns its head",
        "ratio": "1280:720",
        "duration": 5,
        "seed": 42,
    }


async def test_runway_sdk_sees_failures_and_cancellation(aiohttp_server: MakeServer) -> None:
    emulator = RunwayEmulator(api_keys=["rw-key"], render_seconds=60)
    emulator.inject("task_fail", code="SAFETY.INPUT.IMAGE")
    server = await aiohttp_server(create_runway(emulator))
    async with runwayml.AsyncRunwayML(
        api_key="rw-key", base_url=str(server.make_url("")), max_retries=0
    ) as client:
        failing = await client.text_to_video.create(
            model="gen4.5", prompt_text="waves", ratio="1280:720", duration=5
        )
        emulator.tasks[failing.id].render_s = 0
        failed = await client.tasks.retrieve(failing.id)
        assert failed.status == "FAILED"
        assert failed.failure_code == "SAFETY.INPUT.IMAGE"
        running = await client.text_to_video.create(model="veo3.1", prompt_text="rain", ratio="1280:720")
        await client.tasks.delete(running.id)
        cancelled = await client.tasks.retrieve(running.id)
        assert cancelled.status == "CANCELLED"
        with pytest.raises(runwayml.BadRequestError):  # duration over gen4.5's 10 s
            await client.image_to_video.create(
                model="gen4.5",
                prompt_image="https://a.example/x.png",
                prompt_text="x",
                ratio="1280:720",
                duration=11,
            )


@pytest.fixture
def fal_queue_on(monkeypatch: pytest.MonkeyPatch) -> Callable[[TestServer], None]:
    """Point fal_client's queue host at an emulator (the SDK builds submit URLs from this constant)."""

    def point(server: TestServer) -> None:
        monkeypatch.setattr(fal_client.client, "QUEUE_URL_FORMAT", str(server.make_url("/")))

    return point


async def test_fal_client_submits_polls_and_fetches_result(
    aiohttp_server: MakeServer, fal_queue_on: Callable[[TestServer], None]
) -> None:
    emulator = FalEmulator(api_keys=["fal-key"], render_seconds=0.1)
    server = await aiohttp_server(create_fal(emulator))
    fal_queue_on(server)
    client = fal_client.AsyncClient(key="fal-key")
    arguments = {"prompt": "a cat", "image_url": "https://images.example.com/cat.png", "duration": "5"}
    handle = await client.submit("fal-ai/kling-video/v2.5-turbo/pro/image-to-video", arguments=arguments)
    first = await handle.status(with_logs=True)
    assert isinstance(first, fal_client.Queued | fal_client.InProgress)
    statuses = [event async for event in handle.iter_events(with_logs=True, interval=0.02)]
    assert isinstance(statuses[-1], fal_client.Completed)
    assert statuses[-1].error is None
    result = await handle.get()
    assert result["video"]["content_type"] == "video/mp4"
    assert result["video"]["url"].startswith(str(server.make_url("/")))
    submitted = emulator.recorder.of("submit")[0]
    assert submitted.path == "/fal-ai/kling-video/v2.5-turbo/pro/image-to-video"
    assert submitted.headers["Authorization"] == "Key fal-key"
    assert submitted.json == arguments  # the bare input, no {"input": ...} wrapper
    polled = emulator.recorder.of("status")[0]
    assert polled.path == f"/fal-ai/kling-video/requests/{handle.request_id}/status"


async def test_fal_client_sees_failure_and_cancels(
    aiohttp_server: MakeServer, fal_queue_on: Callable[[TestServer], None]
) -> None:
    emulator = FalEmulator(api_keys=["fal-key"], render_seconds=0.05)
    emulator.inject("task_fail", code="content_policy_violation", message="flagged")
    server = await aiohttp_server(create_fal(emulator))
    fal_queue_on(server)
    client = fal_client.AsyncClient(key="fal-key")
    failing = await client.submit("fal-ai/veo3", arguments={"prompt": "x", "duration": "8s"})
    with pytest.raises(fal_client.FalClientHTTPError) as raised:
        await failing.get(interval=0.02)
    assert raised.value.status_code == 422
    status = await failing.status()
    assert isinstance(status, fal_client.Completed)
    assert status.error_type == "content_policy_violation"
    emulator.render_seconds = 60
    running = await client.submit("fal-ai/veo3", arguments={"prompt": "y"})
    await running.cancel()
    cancelled = await running.status()
    assert isinstance(cancelled, fal_client.Completed)
    assert cancelled.error_type == "request_cancelled"
