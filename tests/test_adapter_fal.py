"""The fal adapter against the fal queue emulator, on one fake clock shared by both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.base import ImageInput, RenderTask, TaskState
from adapters.emulators.fal import FalEmulator, create_app
from adapters.errors import (
    AuthFailed,
    ContentRejected,
    InsufficientFunds,
    ProviderError,
    ProviderUnavailable,
    Rejected,
)
from adapters.fal import FalAdapter, build, request_body
from adapters.polling import TaskTimedOut, poll_until_done
from broker.config import load_config
from broker.schema import JobRequest, Mode
from pricing.catalog import RouteSpec
from tests.support.adapters import CONFIG_PATH, FakeTime, context, is_mp4, serving

KEY = "fal-test-key"
KLING = "fal-ai/kling-video/v2.5-turbo/pro/image-to-video"
IMAGE = ImageInput(content_type="image/png", url="https://img.example/cat.png")


@dataclass
class Rig:
    fake: FakeTime
    emulator: FalEmulator
    adapter: FalAdapter
    tmp: Path
    base_url: str
    session: aiohttp.ClientSession


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    fake = FakeTime()
    emulator = FalEmulator(api_keys=(KEY,), render_seconds=40, clock=fake.clock, webhook_tick_s=3600)
    async with serving(create_app(emulator)) as server, aiohttp.ClientSession() as session:
        base_url = str(server.make_url(""))
        ctx = context("fal", base_url, session, tmp_path, fake, api_key=KEY)
        yield Rig(fake, emulator, FalAdapter(ctx, timeout_s=0.5), tmp_path, base_url, session)


def task(model: str = KLING, image: ImageInput | None = IMAGE, webhook_url: str | None = None,
         **fields: object) -> RenderTask:
    body: dict[str, object] = {"prompt": "a cat turns its head", **fields}
    if image is not None:
        body["image_url"] = "https://img.example/cat.png"
    return RenderTask(attempt_id="att-1", model=model, request=JobRequest.model_validate(body), image=image,
                      webhook_url=webhook_url)


async def run(rig: Rig, render: RenderTask) -> tuple[str, TaskState, str | None]:
    submission = await rig.adapter.submit(render)
    final = await poll_until_done(rig.adapter, submission.handle, clock=rig.fake.clock, sleep=rig.fake.sleep)
    return submission.handle.provider_job_id, final.state, final.output_url


async def test_success_fetches_the_output_and_reports_no_cost(rig: Rig) -> None:
    submission = await rig.adapter.submit(task(seed=3))
    final = await poll_until_done(rig.adapter, submission.handle, clock=rig.fake.clock, sleep=rig.fake.sleep)
    assert final.state is TaskState.SUCCEEDED
    assert final.reported_cost is None  # fal reports none: the broker books the quote
    dest = rig.tmp / "out.mp4"
    await rig.adapter.fetch_output(final, dest)
    assert is_mp4(dest)
    sent = rig.emulator.recorder.of("submit")[0]
    assert sent.path == f"/{KLING}"
    assert sent.headers["Authorization"] == f"Key {KEY}"
    # The bare input, no {"input": ...} wrapper; kling takes no seed; duration is a string.
    assert sent.json == {"prompt": "a cat turns its head", "duration": "5",
                         "image_url": "https://img.example/cat.png"}
    # Status and result go to the URLs fal returned, without the submit's subpath.
    assert {r.path for r in rig.emulator.recorder.of("status")} == {
        f"/fal-ai/kling-video/requests/{submission.handle.provider_job_id}/status"
    }
    assert min(rig.fake.sleeps) >= rig.adapter.spec.poll_schedule.min_interval_s


async def test_veo_text_to_video_spells_duration_with_seconds_and_asks_for_audio(rig: Rig) -> None:
    _, state, _ = await run(rig, task("fal-ai/veo3/fast", image=None, duration_s=8, audio=True,
                                      resolution="1080p", aspect_ratio="9:16", seed=11))
    assert state is TaskState.SUCCEEDED
    assert rig.emulator.recorder.of("submit")[0].json == {
        "prompt": "a cat turns its head", "duration": "8s", "aspect_ratio": "9:16", "resolution": "1080p",
        "seed": 11, "generate_audio": True,
    }


async def test_a_result_whose_video_is_a_plain_url(rig: Rig) -> None:
    request_id, state, url = await run(rig, task("fal-ai/minimax/video-01/image-to-video"))
    assert state is TaskState.SUCCEEDED and url is not None and request_id in url


async def test_uploaded_bytes_travel_as_a_data_uri(rig: Rig) -> None:
    image = ImageInput(content_type="image/png", data=b"\x89PNG fake bytes")
    await rig.adapter.submit(task(image=image))
    assert rig.emulator.recorder.of("submit")[0].json["image_url"].startswith("data:image/png;base64,")

async def test_a_dropped_poll_is_resent_once_by_the_http_client_and_a_lasting_drop_is_unavailable(
    rig: Rig,
) -> None:
    # aiohttp itself resends an idempotent GET whose reused keep-alive connection closed unanswered
    # (RFC 9112 9.3.1), once and without a wait; the adapter adds no retry of its own.
    submission = await rig.adapter.submit(task())
    rig.emulator.inject("drop", "status")
    assert (await rig.adapter.status(submission.handle)).state is TaskState.QUEUED
    assert rig.emulator.recorder.count("status") == 2
    rig.emulator.inject("drop", "status", count=None)
    with pytest.raises(ProviderUnavailable):
        await rig.adapter.status(submission.handle)
    assert rig.fake.sleeps == []


async def test_validation_errors_are_rejected(rig: Rig) -> None:
    with pytest.raises(Rejected) as caught:  # pixverse takes 5 or 8 seconds
        await rig.adapter.submit(task("fal-ai/pixverse/v5.5/image-to-video", duration_s=10))
    assert caught.value.status == 422


@pytest.mark.parametrize(("status", "error_class"), [(402, InsufficientFunds), (403, AuthFailed)])
async def test_http_errors_map_by_status(rig: Rig, status: int, error_class: type[ProviderError]) -> None:
    rig.emulator.inject("http_error", "submit", status=status, code="some_error")
    with pytest.raises(error_class):
        await rig.adapter.submit(task())

@pytest.mark.parametrize(
    ("error_type", "error_class"),
    [
        ("content_policy_violation", ContentRejected),
        ("internal_server_error", ProviderUnavailable),
        ("generation_timeout", ProviderUnavailable),
        ("image_load_error", Rejected),
    ],
)
async def test_failed_requests_map_by_error_type(
    rig: Rig, error_type: str, error_class: type[ProviderError]
) -> None:
    rig.emulator.inject("task_fail", code=error_type)
    submission = await rig.adapter.submit(task())
    final = await poll_until_done(rig.adapter, submission.handle, clock=rig.fake.clock, sleep=rig.fake.sleep)
    assert final.state is TaskState.FAILED
    assert type(final.error) is error_class and final.error.provider_code == error_type


async def test_cancel_a_queued_request_and_not_a_finished_one(rig: Rig) -> None:
    submission = await rig.adapter.submit(task())
    assert await rig.adapter.cancel(submission.handle) is True
    assert (await rig.adapter.status(submission.handle)).state is TaskState.CANCELLED
    done = await rig.adapter.submit(task())
    rig.fake.now += 60
    assert await rig.adapter.cancel(done.handle) is False


async def test_a_request_that_never_finishes_times_out(rig: Rig) -> None:
    rig.emulator.inject("never_finish")
    submission = await rig.adapter.submit(task())
    with pytest.raises(TaskTimedOut):
        await poll_until_done(rig.adapter, submission.handle, clock=rig.fake.clock, sleep=rig.fake.sleep)


async def test_webhooks_parse_success_and_failure_and_refuse_garbage(rig: Rig) -> None:
    submission = await rig.adapter.submit(task(webhook_url="https://broker.example/v1/callbacks/fal"))
    assert rig.emulator.recorder.of("submit")[0].query == {"fal_webhook": "https://broker.example/v1/callbacks/fal"}
    rig.emulator.inject("task_fail", code="internal_server_error")
    failing = await rig.adapter.submit(task(webhook_url="https://broker.example/v1/callbacks/fal"))
    rig.fake.now += 60
    for handle, state in ((submission.handle, TaskState.SUCCEEDED), (failing.handle, TaskState.FAILED)):
        built = rig.emulator.webhook_request(rig.emulator.tasks[handle.provider_job_id])
        assert built is not None
        body, headers = built
        event = rig.adapter.parse_webhook(headers, body)
        assert event.provider_job_id == handle.provider_job_id and event.status.state is state
    for garbage in (b"not json", b'{"status": "OK"}', b'{"request_id": "x", "status": "MAYBE"}'):
        with pytest.raises(Rejected):
            rig.adapter.parse_webhook({}, garbage)


async def test_build_gives_a_fal_adapter(rig: Rig) -> None:
    assert isinstance(build(context("fal", rig.base_url, rig.session, rig.tmp, rig.fake)), FalAdapter)


FAL_ROUTES = [r for r in load_config(CONFIG_PATH).routes if r.provider == "fal"]


@pytest.mark.parametrize("route", FAL_ROUTES, ids=[r.model for r in FAL_ROUTES])
async def test_every_catalog_endpoint_is_accepted_by_the_queue(rig: Rig, route: RouteSpec) -> None:
    mode = route.modes[0]
    fields: dict[str, Any] = {
        "duration_s": route.durations.all()[-1],
        "aspect_ratio": route.aspect_ratios[0].value,
        "resolution": route.resolutions[0].value,
    }
    image = IMAGE if mode is Mode.IMAGE_TO_VIDEO else None
    _, state, url = await run(rig, task(route.model, image=image, **fields))
    assert state is TaskState.SUCCEEDED and url is not None


@pytest.mark.parametrize(
    ("model", "fields", "expected"),
    [
        ("fal-ai/pika/v2.2/image-to-video", {"duration_s": 10}, {"duration": 10, "resolution": "720p"}),
        ("fal-ai/veo3/image-to-video", {"duration_s": 8}, {"duration": "8s", "resolution": "720p"}),
        ("fal-ai/ovi/image-to-video", {}, {}),
        ("fal-ai/wan-25-preview/image-to-video", {"duration_s": 10, "resolution": "1080p"},
         {"duration": "10", "resolution": "1080p"}),
    ],
)
def test_duration_spelling_per_endpoint(
    model: str, fields: dict[str, Any], expected: dict[str, object]
) -> None:
    body = request_body(task(model, **fields))
    assert {k: v for k, v in body.items() if k in ("duration", "resolution", "num_frames")} == expected


def test_animatediff_counts_frames_and_names_its_size() -> None:
    render = task("fal-ai/fast-animatediff/text-to-video", image=None, duration_s=2, aspect_ratio="1:1")
    body = request_body(render)
    assert (body["num_frames"], body["fps"], body["video_size"]) == (16, 8, "square")
