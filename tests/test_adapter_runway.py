"""The Runway adapter against the Runway emulator, on one fake clock shared by both."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.base import ImageInput, RenderTask, TaskHandle, TaskState
from adapters.emulators.runway import RunwayEmulator, create_app
from adapters.errors import (
    AuthFailed,
    ContentRejected,
    InsufficientFunds,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    Rejected,
    RequestInvalid,
    SubmissionUncertain,
)
from adapters.polling import TaskTimedOut, poll_until_done
from adapters.runway import RunwayAdapter, build, ratio_for
from broker.config import load_config
from broker.schema import AspectRatio, JobRequest, Mode, Resolution
from pricing.units import CostUnit, ReportedCost
from tests.support.adapters import (
    CONFIG_PATH,
    FakeTime,
    context,
    is_mp4,
    png_bytes,
    price_rule,
    serving,
)

PNG = png_bytes(64, 48)
KEY = "runway-test-key"


@dataclass
class Rig:
    fake: FakeTime
    emulator: RunwayEmulator
    adapter: RunwayAdapter
    tmp: Path
    base_url: str
    session: aiohttp.ClientSession


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    fake = FakeTime()
    emulator = RunwayEmulator(api_keys=(KEY,), render_seconds=60, clock=fake.clock)
    async with serving(create_app(emulator)) as server, aiohttp.ClientSession() as session:
        base_url = str(server.make_url(""))
        ctx = context("runway", base_url, session, tmp_path, fake, api_key=KEY)
        yield Rig(fake, emulator, RunwayAdapter(ctx, timeout_s=0.5), tmp_path, base_url, session)


def i2v(model: str = "gen4_turbo", image: ImageInput | None = None, **fields: object) -> RenderTask:
    request = JobRequest.model_validate({"prompt": "a slow zoom", "image_url": "https://img.example/cat.png",
                                         **fields})
    return RenderTask(
        attempt_id="att-1",
        model=model,
        request=request,
        image=image or ImageInput(content_type="image/png", data=PNG),
    )


async def test_success_fetches_the_output_and_reports_the_cost_in_credits(rig: Rig) -> None:
    submission = await rig.adapter.submit(i2v(seed=7))
    assert submission.handle.model == "gen4_turbo"
    final = await poll_until_done(rig.adapter, submission.handle, clock=rig.fake.clock, sleep=rig.fake.sleep)
    assert final.state is TaskState.SUCCEEDED and not final.refunded
    assert final.reported_cost == ReportedCost(Decimal(25), CostUnit.CREDITS)
    money = price_rule("runway", "gen4_turbo").reported_to_money(final.reported_cost)
    assert str(money) == "0.250000"
    dest = rig.tmp / "out.mp4"
    await rig.adapter.fetch_output(final, dest)
    assert is_mp4(dest)

    sent = rig.emulator.recorder.of("submit")[0]
    assert sent.path == "/v1/image_to_video"
    assert sent.headers["X-Runway-Version"] == "2024-11-06"
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.json == {
        "model": "gen4_turbo",
        "ratio": "1280:720",
        "duration": 5,
        "promptText": "a slow zoom",
        "seed": 7,
        "promptImage": f"data:image/png;base64,{base64.b64encode(PNG).decode()}",
    }


async def test_polls_are_never_closer_than_five_seconds_and_never_billed(rig: Rig) -> None:
    submission = await rig.adapter.submit(i2v())
    await poll_until_done(rig.adapter, submission.handle, clock=rig.fake.clock, sleep=rig.fake.sleep)
    polls = rig.emulator.recorder.count("status")
    assert polls == len(rig.fake.sleeps) >= 3
    assert min(rig.fake.sleeps) >= 5.0
    assert rig.emulator.submit_count() == 1


async def test_an_https_image_url_is_passed_through(rig: Rig) -> None:
    image = ImageInput(content_type="image/png", url="https://img.example/cat.png")
    await rig.adapter.submit(i2v(image=image))
    assert rig.emulator.recorder.of("submit")[0].json["promptImage"] == "https://img.example/cat.png"


@pytest.mark.parametrize(
    ("model", "aspect", "resolution", "ratio"),
    [
        ("gen4_turbo", AspectRatio.TALL, Resolution.HD, "720:1280"),
        ("gen4_turbo", AspectRatio.CINEMA, Resolution.HD, "1584:672"),
        ("gen4.5", AspectRatio.SQUARE, Resolution.HD, "960:960"),
        ("gen4.5", AspectRatio.CLASSIC, Resolution.HD, "1104:832"),
        ("veo3.1", AspectRatio.WIDE, Resolution.FULL_HD, "1920:1080"),
        ("veo3.1_fast", AspectRatio.TALL, Resolution.HD, "720:1280"),
    ],
)
def test_ratio_strings(model: str, aspect: AspectRatio, resolution: Resolution, ratio: str) -> None:
    assert ratio_for(model, aspect, resolution) == ratio


async def test_veo_takes_audio_and_an_unsupported_ratio_is_refused_before_sending(rig: Rig) -> None:
    await rig.adapter.submit(i2v("veo3.1", duration_s=8, resolution="1080p", audio=True))
    assert rig.emulator.recorder.of("submit")[0].json["audio"] is True
    assert rig.emulator.recorder.of("submit")[0].json["ratio"] == "1920:1080"
    with pytest.raises(Rejected):
        await rig.adapter.submit(i2v("veo3.1", duration_s=8, aspect_ratio="1:1"))
    assert rig.emulator.submit_count() == 1


async def test_text_to_video_uses_its_endpoint(rig: Rig) -> None:
    request = JobRequest(prompt="waves at dusk", duration_s=8)
    await rig.adapter.submit(RenderTask(attempt_id="a", model="veo3.1_fast", request=request))
    sent = rig.emulator.recorder.of("submit")[0]
    assert sent.path == "/v1/text_to_video" and "promptImage" not in sent.json


@pytest.mark.parametrize(("retry_after", "delay"), [(7, 7.0), (45, None)])
async def test_a_rate_limit_is_raised_at_once_and_its_retry_after_is_the_policy_delay(
    rig: Rig, retry_after: int, delay: float | None
) -> None:
    rig.emulator.inject("rate_limit", "submit", retry_after_s=retry_after)
    with pytest.raises(RateLimited) as caught:
        await rig.adapter.submit(i2v())
    assert caught.value.retry_after_s == float(retry_after) and caught.value.status == 429
    assert rig.emulator.submit_count() == 1 and rig.emulator.tasks == {}
    assert rig.fake.sleeps == []  # the adapter never waits: the broker parks the job instead
    # Within max_delay_s (30 s) the broker sends again after Retry-After; beyond it, it falls back.
    assert rig.adapter.spec.submit_retry.delay_before_next(1, caught.value, 0.0) == delay
    submission = await rig.adapter.submit(i2v())  # the send the broker makes when the job is due
    assert list(rig.emulator.tasks) == [submission.handle.provider_job_id]
    assert rig.emulator.submit_count() == 2


async def test_a_lasting_rate_limit_is_given_up_after_the_policys_attempts(rig: Rig) -> None:
    rig.emulator.inject("rate_limit", "submit", retry_after_s=4, count=None)
    with pytest.raises(RateLimited) as caught:
        await rig.adapter.submit(i2v())
    assert caught.value.retry_after_s == 4.0 and caught.value.status == 429
    assert rig.emulator.submit_count() == 1 and rig.fake.sleeps == []
    policy = rig.adapter.spec.submit_retry
    assert policy.delay_before_next(1, caught.value, 0.0) == 4.0
    assert policy.delay_before_next(2, caught.value, 4.0) == 4.0
    assert policy.delay_before_next(3, caught.value, 8.0) is None  # three tries, then the router

async def test_a_dropped_connection_before_the_submit_ran_is_still_uncertain(rig: Rig) -> None:
    # The client cannot tell a drop before handling from one after: both are uncertain.
    rig.emulator.inject("drop", "submit")
    with pytest.raises(SubmissionUncertain):
        await rig.adapter.submit(i2v())

async def test_a_dropped_poll_is_resent_once_by_the_http_client_not_the_adapter(rig: Rig) -> None:
    # aiohttp itself resends an idempotent GET whose reused keep-alive connection closed unanswered
    # (RFC 9112 9.3.1): a transport resend with no wait, not an adapter retry.
    submission = await rig.adapter.submit(i2v())
    rig.emulator.inject("drop", "status")
    status = await rig.adapter.status(submission.handle)
    assert status.state in (TaskState.QUEUED, TaskState.RUNNING)
    assert rig.emulator.recorder.count("status") == 2 and rig.fake.sleeps == []


@pytest.mark.parametrize("fault", ["drop", "malformed", "server_error"])
async def test_lasting_status_faults_are_unavailable(rig: Rig, fault: str) -> None:
    submission = await rig.adapter.submit(i2v())
    rig.emulator.inject(fault, "status", count=None)
    with pytest.raises(ProviderUnavailable):
        await rig.adapter.status(submission.handle)
    # One request (a drop: plus aiohttp's one resend of the GET), never a sleep in the adapter.
    assert rig.emulator.recorder.count("status") == (2 if fault == "drop" else 1)
    assert rig.fake.sleeps == []


@pytest.mark.parametrize(
    ("status", "error_class"),
    [(402, InsufficientFunds), (400, RequestInvalid), (403, AuthFailed), (404, ProviderError)],
)
async def test_http_errors_map_by_status(rig: Rig, status: int, error_class: type[ProviderError]) -> None:
    rig.emulator.inject("http_error", "submit", status=status)
    with pytest.raises(error_class) as caught:
        await rig.adapter.submit(i2v())
    assert type(caught.value) is error_class and caught.value.status == status

@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        ("SAFETY.INPUT.TEXT", ContentRejected),
        ("SAFETY.OUTPUT.VIDEO", ContentRejected),
        ("INPUT_PREPROCESSING.SAFETY.TEXT", ContentRejected),
        ("ASSET.INVALID", Rejected),
        ("INTERNAL.BAD_OUTPUT.CODE01", ProviderUnavailable),
    ],
)
async def test_failure_codes_map_to_classes_and_failed_tasks_are_refunded(
    rig: Rig, code: str, error_class: type[ProviderError]
) -> None:
    rig.emulator.inject("task_fail", code=code)
    submission = await rig.adapter.submit(i2v())
    final = await poll_until_done(rig.adapter, submission.handle, clock=rig.fake.clock, sleep=rig.fake.sleep)
    assert final.state is TaskState.FAILED
    assert type(final.error) is error_class and final.error.provider_code == code
    assert final.refunded and final.reported_cost == ReportedCost(Decimal(0), CostUnit.CREDITS)


async def test_cancel_stops_the_task_and_it_is_refunded(rig: Rig) -> None:
    submission = await rig.adapter.submit(i2v())
    assert await rig.adapter.cancel(submission.handle) is True
    status = await rig.adapter.status(submission.handle)
    assert status.state is TaskState.CANCELLED and status.refunded
    assert await rig.adapter.cancel(TaskHandle(provider_job_id="no-such-task", model="gen4_turbo")) is False


async def test_a_task_that_never_finishes_times_out_at_the_deadline(rig: Rig) -> None:
    rig.emulator.inject("never_finish")
    submission = await rig.adapter.submit(i2v())
    with pytest.raises(TaskTimedOut):
        await poll_until_done(rig.adapter, submission.handle, clock=rig.fake.clock, sleep=rig.fake.sleep)
    assert sum(rig.fake.sleeps) <= rig.adapter.spec.poll_schedule.deadline_s
    assert min(rig.fake.sleeps) >= 5.0

async def test_build_gives_a_runway_adapter(rig: Rig) -> None:
    adapter = build(context("runway", rig.base_url, rig.session, rig.tmp, rig.fake, api_key=KEY))
    assert isinstance(adapter, RunwayAdapter)
    assert adapter.spec.poll_schedule.min_interval_s >= 5.0


async def test_a_throttled_task_reads_as_queued_and_still_finishes(tmp_path: Path) -> None:
    fake = FakeTime()
    emulator = RunwayEmulator(api_keys=(KEY,), render_seconds=20, clock=fake.clock, max_concurrency=1,
                              webhook_tick_s=3600)
    async with serving(create_app(emulator)) as server, aiohttp.ClientSession() as session:
        ctx = context("runway", str(server.make_url("")), session, tmp_path, fake, api_key=KEY)
        adapter = RunwayAdapter(ctx)
        await adapter.submit(i2v())
        waiting = await adapter.submit(i2v())
        fake.now += 10
        assert (await adapter.status(waiting.handle)).state is TaskState.QUEUED  # THROTTLED at Runway
        final = await poll_until_done(adapter, waiting.handle, clock=fake.clock, sleep=fake.sleep)
        assert final.state is TaskState.SUCCEEDED


def test_gen45_text_to_video_has_only_landscape_and_portrait() -> None:
    assert ratio_for("gen4.5", AspectRatio.TALL, Resolution.HD, Mode.TEXT_TO_VIDEO) == "720:1280"
    assert ratio_for("gen4.5", AspectRatio.SQUARE, Resolution.HD, Mode.IMAGE_TO_VIDEO) == "960:960"
    with pytest.raises(Rejected):
        ratio_for("gen4.5", AspectRatio.SQUARE, Resolution.HD, Mode.TEXT_TO_VIDEO)


RUNWAY_RUNS = [
    (route.model, mode, route.durations.all()[-1], aspect, resolution)
    for route in load_config(CONFIG_PATH).routes
    if route.provider == "runway"
    for mode in route.modes
    for aspect in route.aspect_ratios
    for resolution in route.resolutions
]


@pytest.mark.parametrize(("model", "mode", "duration", "aspect", "resolution"), RUNWAY_RUNS)
async def test_every_catalog_combination_is_accepted_or_refused_before_sending(
    rig: Rig, model: str, mode: Mode, duration: int, aspect: AspectRatio, resolution: Resolution
) -> None:
    fields: dict[str, Any] = {"prompt": "waves", "duration_s": duration, "aspect_ratio": aspect,
                              "resolution": resolution, "mode": mode}
    image = None
    if mode is Mode.IMAGE_TO_VIDEO:
        fields["image_url"] = "https://img.example/cat.png"
        image = ImageInput(content_type="image/png", url="https://img.example/cat.png")
    render = RenderTask("att", model, JobRequest.model_validate(fields), image)
    try:
        await rig.adapter.submit(render)
    except Rejected:
        assert rig.emulator.submit_count() == 0  # refused here, never a 400 from Runway
    else:
        assert rig.emulator.submit_count() == 1
