"""The Replicate adapter against the Replicate emulator, on one fake clock shared by both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.base import ImageInput, RenderTask, TaskState
from adapters.emulators.replicate import ReplicateEmulator, create_app, new_secret, standard_webhook_headers
from adapters.errors import AuthFailed, GenerationFailed, ProviderError, RateLimited, Rejected, RequestInvalid
from adapters.polling import poll_until_done
from adapters.replicate import MODELS, ReplicateAdapter
from broker.schema import JobRequest
from pricing.units import CostUnit, ReportedCost
from tests.support.adapters import FakeTime, context, is_mp4, serving

KEY = "r8_test_token"
SECRET = new_secret()
IMAGE = ImageInput(content_type="image/*", url="https://img.example/still.jpg")


@dataclass
class Rig:
    fake: FakeTime
    emulator: ReplicateEmulator
    tmp: Path
    base_url: str
    session: aiohttp.ClientSession

    def adapter(self, **overrides: Any) -> ReplicateAdapter:
        fields: dict[str, Any] = {"api_key": KEY, "webhook_secret": SECRET, **overrides}
        ctx = context("replicate", self.base_url, self.session, self.tmp, self.fake, **fields)
        return ReplicateAdapter(ctx, timeout_s=2.0, wall_clock=self.fake.clock)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    fake = FakeTime(start=1_800_000_000.0)
    emulator = ReplicateEmulator(
        api_keys=(KEY,), render_seconds=60, clock=fake.clock, webhook_secret=SECRET, webhook_tick_s=3600
    )
    async with serving(create_app(emulator)) as server, aiohttp.ClientSession() as session:
        yield Rig(fake, emulator, tmp_path, str(server.make_url("")), session)


def task(model: str = "minimax/video-01", image: ImageInput | None = IMAGE, **fields: Any) -> RenderTask:
    webhook_url = fields.pop("webhook_url", None)
    request: dict[str, Any] = {"prompt": "leaves drift past", "duration_s": 6, **fields}
    if image is not None:
        request["image_url"] = image.url
    return RenderTask(
        attempt_id="att-1",
        model=model,
        request=JobRequest.model_validate(request),
        image=image,
        webhook_url=webhook_url,
    )


async def test_an_official_model_is_created_by_name_polled_and_fetched(rig: Rig) -> None:
    adapter = rig.adapter()
    submission = await adapter.submit(task())
    final = await poll_until_done(adapter, submission.handle, clock=rig.fake.clock, sleep=rig.fake.sleep)
    assert final.state is TaskState.SUCCEEDED and final.reported_cost is None  # per output: the quote
    dest = rig.tmp / "out.mp4"
    await adapter.fetch_output(final, dest)
    assert is_mp4(dest)
    assert await adapter.cancel(submission.handle) is False  # over: nothing to cancel
    sent = rig.emulator.recorder.of("submit")[0]
    assert sent.path == "/v1/models/minimax/video-01/predictions"
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.headers["Cancel-After"] == "900s"  # the poll deadline: Replicate stops billing there
    assert sent.json == {
        "input": {
            "prompt": "leaves drift past",
            "prompt_optimizer": True,
            "first_frame_image": "https://img.example/still.jpg",
        }
    }
    assert min(rig.fake.sleeps) >= adapter.spec.poll_schedule.min_interval_s


async def test_a_version_model_is_created_by_version_and_reports_its_hardware_seconds(rig: Rig) -> None:
    adapter = rig.adapter()
    job = task("lucataco/animate-diff", image=None, duration_s=2, aspect_ratio="1:1", seed=7)
    submission = await adapter.submit(job)
    final = await poll_until_done(adapter, submission.handle, clock=rig.fake.clock, sleep=rig.fake.sleep)
    sent = rig.emulator.recorder.of("submit")[0]
    assert sent.path == "/v1/predictions"
    assert sent.json["version"] == MODELS["lucataco/animate-diff"].version
    assert sent.json["input"] == {"prompt": "leaves drift past", "seed": 7}
    # 60 s render, the first quarter queued: 45 s on the hardware, billed per second of it.
    assert final.reported_cost == ReportedCost(Decimal("45.0"), CostUnit.COMPUTE_SECONDS)
    assert rig.emulator.charges()[submission.handle.provider_job_id] == 63_000  # 45 s x $0.0014


async def test_kling_takes_its_duration_and_ratio_and_refuses_others(rig: Rig) -> None:
    adapter = rig.adapter()
    await adapter.submit(task("kwaivgi/kling-v2.0", image=None, duration_s=10, aspect_ratio="9:16"))
    assert rig.emulator.recorder.of("submit")[0].json["input"] == {
        "prompt": "leaves drift past",
        "duration": 10,
        "aspect_ratio": "9:16",
    }
    with pytest.raises(RequestInvalid):
        await adapter.submit(task("kwaivgi/kling-v2.0", duration_s=6))
    with pytest.raises(RequestInvalid):
        await adapter.submit(task("owner/unknown-model"))


async def test_cancel_stops_a_running_prediction_and_it_is_charged_nothing(rig: Rig) -> None:
    adapter = rig.adapter()
    handle = (await adapter.submit(task())).handle
    rig.fake.now += 30
    assert (await adapter.status(handle)).state is TaskState.RUNNING
    assert await adapter.cancel(handle) is True
    status = await adapter.status(handle)
    assert status.state is TaskState.CANCELLED
    assert status.reported_cost == ReportedCost(Decimal(0), CostUnit.USD)  # per output: nothing made
    assert rig.emulator.charges() == {handle.provider_job_id: 0}


async def test_a_failed_prediction_may_be_retried_elsewhere(rig: Rig) -> None:
    rig.emulator.inject("task_fail", message="CUDA out of memory")
    adapter = rig.adapter()
    handle = (await adapter.submit(task())).handle
    rig.fake.now += 61
    status = await adapter.status(handle)
    assert status.state is TaskState.FAILED and isinstance(status.error, GenerationFailed)
    assert status.error.fallback and status.reported_cost == ReportedCost(Decimal(0), CostUnit.USD)


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"kind": "rate_limit", "retry_after_s": 7}, RateLimited),
        ({"kind": "http_error", "status": 401}, AuthFailed),
        ({"kind": "http_error", "status": 422}, RequestInvalid),
    ],
)
async def test_error_answers_map_by_status(
    rig: Rig, fault: dict[str, Any], error: type[ProviderError]
) -> None:
    kind = fault.pop("kind")
    rig.emulator.inject(kind, "submit", **fault)
    with pytest.raises(error) as raised:
        await rig.adapter().submit(task())
    if error is RateLimited:
        assert raised.value.retry_after_s == 7


async def test_an_expired_output_url_is_replaced_by_a_fresh_status(rig: Rig) -> None:
    rig.emulator.output_url_ttl_s = 120  # a short-lived signed URL; the data itself stays an hour
    adapter = rig.adapter()
    handle = (await adapter.submit(task())).handle
    rig.fake.now += 61
    first = await adapter.status(handle)
    rig.fake.now += 300
    with pytest.raises(AuthFailed):  # 403: the URL expired, not the output
        await adapter.fetch_output(first, rig.tmp / "stale.mp4")
    fresh = await adapter.status(handle)
    assert fresh.output_url is not None and fresh.output_url != first.output_url
    await adapter.fetch_output(fresh, rig.tmp / "fresh.mp4")
    assert is_mp4(rig.tmp / "fresh.mp4")
    rig.fake.now += adapter.spec.output_retention_s  # an hour after it ended, the output is removed
    gone = await adapter.status(handle)
    assert gone.state is TaskState.SUCCEEDED and gone.output_url is None


async def test_a_signed_webhook_is_accepted_and_a_forged_or_stale_one_refused(rig: Rig) -> None:
    adapter = rig.adapter()
    handle = (await adapter.submit(task(webhook_url="https://broker.example/v1/callbacks/replicate"))).handle
    sent = rig.emulator.recorder.of("submit")[0].json
    assert sent["webhook"].endswith("/v1/callbacks/replicate") and sent["webhook_events_filter"] == [
        "completed"
    ]
    rig.fake.now += 61
    built = rig.emulator.webhook_request(rig.emulator.tasks[handle.provider_job_id])
    assert built is not None
    body, headers = built
    event = adapter.parse_webhook(headers, body)
    assert event.provider_job_id == handle.provider_job_id and event.status.state is TaskState.SUCCEEDED
    assert event.status.output_url is not None

    forged = standard_webhook_headers(new_secret(), headers["webhook-id"], int(rig.fake.now), body)
    stale = standard_webhook_headers(SECRET, headers["webhook-id"], int(rig.fake.now) - 3600, body)
    tampered = body.replace(b"succeeded", b"failed")
    for bad_headers, bad_body in ((forged, body), (stale, body), (headers, tampered), ({}, body)):
        with pytest.raises(Rejected):
            adapter.parse_webhook(bad_headers, bad_body)
    with pytest.raises(Rejected):
        rig.adapter(webhook_secret=None).parse_webhook(headers, body)
