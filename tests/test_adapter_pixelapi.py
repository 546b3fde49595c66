"""The PixelAPI adapter against the PixelAPI emulator, on one fake clock shared by both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from adapters.base import ImageInput, RenderTask, TaskState
from adapters.emulators.pixelapi import PixelApiEmulator, create_app
from adapters.errors import (
    AuthFailed,
    GenerationFailed,
    InsufficientFunds,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    Rejected,
)
from adapters.failures import Scope, classify
from adapters.images import ImageFetchFailed
from adapters.pixelapi import PixelApiAdapter, build, parse_generation
from adapters.polling import poll_until_done
from broker.schema import JobRequest
from pricing.units import CostUnit, ReportedCost
from tests.support.adapters import FakeTime, context, is_mp4, png_bytes, price_rule, serving

KEY = "pixelapi-test-key"
JPEG = png_bytes(96, 64, "JPEG")
IMAGE = ImageInput(content_type="image/jpeg", data=JPEG)


@dataclass
class Rig:
    fake: FakeTime
    emulator: PixelApiEmulator
    adapter: PixelApiAdapter
    tmp: Path
    base_url: str
    session: aiohttp.ClientSession


async def make_rig(tmp_path: Path, **emulator_options: int) -> AsyncIterator[Rig]:
    fake = FakeTime()
    emulator = PixelApiEmulator(api_keys=(KEY,), render_seconds=20, clock=fake.clock, webhook_tick_s=3600,
                                **emulator_options)
    async with serving(create_app(emulator)) as server, aiohttp.ClientSession() as session:
        base_url = str(server.make_url(""))
        ctx = context("pixelapi", base_url, session, tmp_path, fake, api_key=KEY)
        yield Rig(fake, emulator, PixelApiAdapter(ctx, timeout_s=0.5), tmp_path, base_url, session)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async for made in make_rig(tmp_path):
        yield made


def task(model: str = "seedance", image: ImageInput | None = IMAGE, **fields: object) -> RenderTask:
    body: dict[str, object] = {"prompt": "the product turns slowly", **fields}
    if image is not None:
        body["image_url"] = "https://img.example/p.jpg"
    return RenderTask(attempt_id="att-1", model=model, request=JobRequest.model_validate(body), image=image)


async def test_seedance_success_with_cost_in_credits_and_output_fetched(rig: Rig) -> None:
    submission = await rig.adapter.submit(task(resolution="1080p", camera_fixed=True))
    assert submission.estimated_seconds == 20.0
    final = await poll_until_done(rig.adapter, submission.handle, clock=rig.fake.clock, sleep=rig.fake.sleep,
                                  estimated_seconds=submission.estimated_seconds)
    assert final.state is TaskState.SUCCEEDED and not final.refunded
    assert final.reported_cost == ReportedCost(Decimal(55), CostUnit.CREDITS)
    assert str(price_rule("pixelapi", "seedance").reported_to_money(final.reported_cost)) == "0.055000"
    dest = rig.tmp / "out.mp4"
    await rig.adapter.fetch_output(final, dest)
    assert is_mp4(dest)
    sent = rig.emulator.recorder.of("submit")[0]
    assert sent.path == "/v1/seedance/generate"
    assert sent.form == {"prompt": "the product turns slowly", "resolution": "1080p", "duration": "5",
                         "camera_fixed": "true"}
    assert sent.files["image"].data == JPEG and sent.files["image"].content_type == "image/jpeg"
    assert rig.fake.sleeps[0] == pytest.approx(16.0)  # the first poll near PixelAPI's own estimate


async def test_text_to_video_is_json_and_costs_ninety_credits(rig: Rig) -> None:
    submission = await rig.adapter.submit(task("video", image=None))
    final = await poll_until_done(rig.adapter, submission.handle, clock=rig.fake.clock, sleep=rig.fake.sleep)
    assert final.reported_cost is not None
    assert str(price_rule("pixelapi", "video").reported_to_money(final.reported_cost)) == "0.090000"
    sent = rig.emulator.recorder.of("submit")[0]
    assert sent.path == "/v1/video/generate"
    assert sent.json == {"prompt": "the product turns slowly", "resolution": "720p", "duration": 5}
    assert rig.emulator.recorder.of("status")[0].path == f"/v1/video/{submission.handle.provider_job_id}"


async def test_video_with_an_image_goes_multipart(rig: Rig) -> None:
    await rig.adapter.submit(task("video"))
    sent = rig.emulator.recorder.of("submit")[0]
    assert sent.files["image"].data == JPEG and "camera_fixed" not in sent.form


async def test_an_image_url_is_fetched_safely_before_upload(rig: Rig) -> None:
    with pytest.raises(ImageFetchFailed):
        await rig.adapter.submit(task(image=ImageInput(content_type="image/*", url="https://127.0.0.1/p.jpg")))
    assert rig.emulator.submit_count() == 0


async def test_requests_pixelapi_cannot_render_are_refused_before_sending(rig: Rig) -> None:
    for bad in (task(duration_s=8), task("seedance", image=None), task("kling")):
        with pytest.raises(Rejected):
            await rig.adapter.submit(bad)
    assert rig.emulator.submit_count() == 0


async def test_the_concurrency_cap_is_rate_limited_and_sent_again_after_its_retry_after(rig: Rig) -> None:
    for _ in range(5):
        await rig.adapter.submit(task())
    with pytest.raises(RateLimited) as caught:  # 429 Retry-After 30, raised without waiting
        await rig.adapter.submit(task())
    assert caught.value.retry_after_s == 30.0 and caught.value.status == 429
    assert rig.emulator.submit_count() == 6 and rig.fake.sleeps == []
    delay = rig.adapter.spec.submit_retry.delay_before_next(1, caught.value, 0.0)
    assert delay == 30.0  # within PixelAPI's 60 s cap
    rig.fake.now += delay  # the job's due time: by then the first five have finished
    await rig.adapter.submit(task())
    assert rig.emulator.submit_count() == 7


async def test_a_lasting_rate_limit_is_raised_and_given_up_after_the_policys_attempts(rig: Rig) -> None:
    rig.emulator.inject("rate_limit", "submit", retry_after_s=5, count=None)
    with pytest.raises(RateLimited) as caught:
        await rig.adapter.submit(task())
    assert caught.value.retry_after_s == 5.0
    assert rig.emulator.submit_count() == 1 and rig.fake.sleeps == []
    policy = rig.adapter.spec.submit_retry
    assert policy.delay_before_next(1, caught.value, 0.0) == 5.0
    assert policy.delay_before_next(2, caught.value, 5.0) == 5.0
    assert policy.delay_before_next(3, caught.value, 10.0) is None  # three tries, then the router


async def test_out_of_credits_is_insufficient_funds(tmp_path: Path) -> None:
    async for poor in make_rig(tmp_path, credits=50):
        with pytest.raises(InsufficientFunds) as caught:
            await poor.adapter.submit(task())
        assert caught.value.provider_code == "insufficient_credits" and caught.value.status == 402


@pytest.mark.parametrize(
    ("status", "code", "error_class"),
    [
        (422, "validation_error", Rejected),
        (500, "internal_error", ProviderUnavailable),
        (403, None, AuthFailed),
    ],
)
async def test_http_errors_map_by_code_and_status(
    rig: Rig, status: int, code: str | None, error_class: type[ProviderError]
) -> None:
    rig.emulator.inject("http_error", "submit", status=status, code=code, count=None)
    with pytest.raises(error_class):
        await rig.adapter.submit(task())

async def test_a_dropped_poll_is_resent_once_by_the_http_client_and_a_lasting_drop_is_unavailable(
    rig: Rig,
) -> None:
    # aiohttp itself resends an idempotent GET whose reused keep-alive connection closed unanswered
    # (RFC 9112 9.3.1), once and without a wait; the adapter adds no retry of its own.
    submission = await rig.adapter.submit(task())
    rig.emulator.inject("drop", "status")
    assert (await rig.adapter.status(submission.handle)).state is TaskState.RUNNING
    assert rig.emulator.recorder.count("status") == 2
    rig.emulator.inject("drop", "status", count=None)
    with pytest.raises(ProviderUnavailable):
        await rig.adapter.status(submission.handle)
    assert rig.fake.sleeps == []


async def test_a_failed_generation_is_refunded_and_classified_without_reading_its_message(rig: Rig) -> None:
    # PixelAPI documents only status=failed with an error_message, for a safety block as for a crash.
    rig.emulator.inject("task_fail", message="Your prompt was blocked by our content safety filter")
    submission = await rig.adapter.submit(task())
    final = await poll_until_done(rig.adapter, submission.handle, clock=rig.fake.clock, sleep=rig.fake.sleep)
    assert final.state is TaskState.FAILED and type(final.error) is GenerationFailed
    assert "content safety filter" in str(final.error)
    assert final.refunded and final.reported_cost == ReportedCost(Decimal(0), CostUnit.CREDITS)
    assert classify(final.error).scope is Scope.PROVIDER  # fall back, but not to PixelAPI's other model


def test_a_failed_generation_maps_by_its_status_field_alone() -> None:
    for message in ("content blocked", "render timed out", None):
        status = parse_generation({"generation_id": "g1", "status": "failed", "error_message": message})
        assert type(status.error) is GenerationFailed and status.error.provider_code is None


async def test_build_gives_a_pixelapi_adapter(rig: Rig) -> None:
    built = build(context("pixelapi", rig.base_url, rig.session, rig.tmp, rig.fake))
    assert isinstance(built, PixelApiAdapter)
