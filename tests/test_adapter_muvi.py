"""The muvi adapter against the muvi emulator, on one fake wall clock shared by both."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from adapters.base import ImageInput, RenderTask, TaskState, WebhookEvent
from adapters.emulators.muvi import MuviEmulator, create_app
from adapters.emulators.webhooks import muvi_signature_headers
from adapters.errors import (
    AuthFailed,
    ContentRejected,
    InsufficientFunds,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    Rejected,
)
from adapters.images import image_infeasibility
from adapters.muvi import IMAGE_ACCEPTANCE, MuviAdapter, build
from adapters.polling import poll_until_done
from broker.schema import JobRequest
from pricing.units import CostUnit, ReportedCost
from tests.support.adapters import FakeTime, context, is_mp4, price_rule, serving

KEY = "muvi-test-key"
SECRET = "muvi-webhook-secret-for-tests"
GEN4 = "runway/gen-4/image-to-video"
IMAGE = ImageInput(content_type="image/*", url="https://img.example/portrait.jpg")


@dataclass
class Rig:
    fake: FakeTime
    emulator: MuviEmulator
    tmp: Path
    base_url: str
    session: aiohttp.ClientSession
    adapter: MuviAdapter = field(init=False)

    def __post_init__(self) -> None:
        self.adapter = self.adapter_with()

    def adapter_with(self, **overrides: Any) -> MuviAdapter:
        fields: dict[str, Any] = {"api_key": KEY, "webhook_secret": SECRET, **overrides}
        ctx = context("muvi", self.base_url, self.session, self.tmp, self.fake, **fields)
        return MuviAdapter(ctx, timeout_s=0.5, wall_clock=self.fake.clock)


async def make_rig(tmp_path: Path, **emulator_options: Any) -> AsyncIterator[Rig]:
    fake = FakeTime(start=time.time())  # muvi speaks wall time: ETAs and webhook timestamps
    emulator = MuviEmulator(api_keys=(KEY,), render_seconds=120, clock=fake.clock, webhook_secret=SECRET,
                            webhook_tick_s=3600, **emulator_options)
    async with serving(create_app(emulator)) as server, aiohttp.ClientSession() as session:
        yield Rig(fake, emulator, tmp_path, str(server.make_url("")), session)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async for made in make_rig(tmp_path):
        yield made


def task(model: str = GEN4, image: ImageInput = IMAGE, webhook_url: str | None = None,
         **fields: object) -> RenderTask:
    request = JobRequest.model_validate({"prompt": "she turns to the camera",
                                         "image_url": "https://img.example/portrait.jpg", **fields})
    return RenderTask(attempt_id="att-1", model=model, request=request, image=image, webhook_url=webhook_url)


async def test_success_reports_micro_cents_worth_fifty_cents_and_fetches_the_output(rig: Rig) -> None:
    submission = await rig.adapter.submit(task())
    assert submission.reported_cost == ReportedCost(Decimal(500_000), CostUnit.MICRO_CENTS)
    assert submission.estimated_seconds == pytest.approx(120, abs=0.01)
    final = await poll_until_done(rig.adapter, submission.handle, clock=rig.fake.clock, sleep=rig.fake.sleep,
                                  estimated_seconds=submission.estimated_seconds)
    assert final.state is TaskState.SUCCEEDED and not final.refunded
    assert final.reported_cost == ReportedCost(Decimal(500_000), CostUnit.MICRO_CENTS)
    # The units trap: muvi's micro-cents are micro-dollars, so 5 s of runway/gen-4 is $0.50.
    assert str(price_rule("muvi", GEN4).reported_to_money(final.reported_cost)) == "0.500000"
    assert rig.fake.sleeps[0] == pytest.approx(96, abs=0.01)  # first poll near muvi's own estimate
    dest = rig.tmp / "out.mp4"
    await rig.adapter.fetch_output(final, dest)
    assert is_mp4(dest)
    sent = rig.emulator.recorder.of("submit")[0]
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.json == {
        "model": GEN4,
        "input": {"prompt": "she turns to the camera", "image_url": "https://img.example/portrait.jpg",
                  "aspect_ratio": "16:9", "duration": "5"},
    }


async def test_turbo_ten_seconds_duration_is_a_string(rig: Rig) -> None:
    submission = await rig.adapter.submit(task("runway/gen-4-turbo/image-to-video", duration_s=10,
                                               aspect_ratio="9:16"))
    assert rig.emulator.recorder.of("submit")[0].json["input"]["duration"] == "10"
    assert submission.reported_cost is not None
    turbo = price_rule("muvi", "runway/gen-4-turbo/image-to-video")
    assert str(turbo.reported_to_money(submission.reported_cost)) == "0.500000"


async def test_an_uploaded_image_is_infeasible_and_refused_before_sending(rig: Rig) -> None:
    reason = image_infeasibility(IMAGE_ACCEPTANCE, has_url=False, has_bytes=True, size_bytes=5000)
    assert reason is not None and "URL" in reason
    with pytest.raises(Rejected):
        await rig.adapter.submit(task(image=ImageInput(content_type="image/png", data=b"png bytes")))
    assert rig.emulator.submit_count() == 0

async def test_the_concurrency_cap_is_rate_limited_with_a_bounded_back_off(tmp_path: Path) -> None:
    async for capped in make_rig(tmp_path, max_concurrent=1):
        await capped.adapter.submit(task())
        with pytest.raises(RateLimited) as caught:
            await capped.adapter.submit(task())
        assert caught.value.provider_code == "CONCURRENT_JOBS_EXCEEDED"
        assert caught.value.retry_after_s is None
        assert capped.emulator.submit_count() == 2 and capped.fake.sleeps == []
        policy = capped.adapter.spec.submit_retry  # no Retry-After: exponential, three tries
        assert policy.delay_before_next(1, caught.value, 0.0) == 1.0
        assert policy.delay_before_next(2, caught.value, 1.0) == 2.0
        assert policy.delay_before_next(3, caught.value, 3.0) is None


async def test_an_empty_balance_is_insufficient_funds(tmp_path: Path) -> None:
    async for poor in make_rig(tmp_path, balance_micro_cents=100_000):
        with pytest.raises(InsufficientFunds) as caught:
            await poor.adapter.submit(task())
        assert caught.value.provider_code == "INSUFFICIENT_BALANCE"


@pytest.mark.parametrize(
    ("status", "code", "error_class"),
    [
        (400, "INVALID_INPUT", Rejected),
        (403, "MODEL_ACCESS_DENIED", AuthFailed),
        (500, "INTERNAL_ERROR", ProviderUnavailable),
    ],
)
async def test_http_errors_map_by_error_code(
    rig: Rig, status: int, code: str, error_class: type[ProviderError]
) -> None:
    rig.emulator.inject("http_error", "submit", status=status, code=code, count=None)
    with pytest.raises(error_class) as caught:
        await rig.adapter.submit(task())
    assert caught.value.provider_code == code

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


@pytest.mark.parametrize(
    ("code", "error_class"),
    [("GENERATION_FAILED", ProviderUnavailable), ("CONTENT_POLICY_VIOLATION", ContentRejected)],
)
async def test_failed_jobs_are_classified_and_refunded(
    rig: Rig, code: str, error_class: type[ProviderError]
) -> None:
    rig.emulator.inject("task_fail", code=code)
    submission = await rig.adapter.submit(task())
    final = await poll_until_done(rig.adapter, submission.handle, clock=rig.fake.clock, sleep=rig.fake.sleep)
    assert final.state is TaskState.FAILED and type(final.error) is error_class
    assert final.refunded and final.reported_cost == ReportedCost(Decimal(0), CostUnit.MICRO_CENTS)


async def test_cancel_works_while_pending_only(rig: Rig) -> None:
    pending = await rig.adapter.submit(task())
    assert await rig.adapter.cancel(pending.handle) is True
    cancelled = await rig.adapter.status(pending.handle)
    assert cancelled.state is TaskState.CANCELLED and cancelled.refunded
    running = await rig.adapter.submit(task())
    rig.fake.now += 60
    assert await rig.adapter.cancel(running.handle) is False


async def test_signed_webhooks_arrive_over_http_and_verify(rig: Rig) -> None:
    events: list[WebhookEvent] = []

    async def receive(request: web.Request) -> web.Response:
        events.append(rig.adapter.parse_webhook(request.headers, await request.read()))
        return web.json_response({"received": True})

    receiver = web.Application()
    receiver.router.add_post("/v1/callbacks/muvi", receive)
    async with serving(receiver) as server:
        hook = str(server.make_url("/v1/callbacks/muvi"))
        ok = await rig.adapter.submit(task(webhook_url=hook))
        rig.emulator.inject("task_fail", code="GENERATION_FAILED")
        bad = await rig.adapter.submit(task(webhook_url=hook))
        rig.fake.now += 130
        deliveries = await rig.emulator.deliver_due_webhooks()
    assert [d.status for d in deliveries] == [200, 200]
    by_job = {e.provider_job_id: e.status for e in events}
    assert by_job[ok.handle.provider_job_id].state is TaskState.SUCCEEDED
    assert by_job[ok.handle.provider_job_id].output_url is not None
    assert by_job[bad.handle.provider_job_id].state is TaskState.FAILED


def signed(body: bytes, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    return muvi_signature_headers(secret, body, int(at if at is not None else time.time()))


@pytest.mark.parametrize("case", ["tampered", "wrong_secret", "stale", "missing"])
async def test_webhooks_with_a_bad_signature_are_rejected(rig: Rig, case: str) -> None:
    body = b'{"jobId":"j1","status":"completed","output":"https://cdn.example/x.mp4"}'
    headers = {
        "tampered": signed(body.replace(b"x.mp4", b"y.mp4")),
        "wrong_secret": signed(body, secret="not-the-secret"),
        "stale": signed(body, at=rig.fake.now - 3600),
        "missing": {},
    }[case]
    with pytest.raises(Rejected):
        rig.adapter.parse_webhook(headers, body)
    assert rig.adapter.parse_webhook(signed(body, at=rig.fake.now), body).provider_job_id == "j1"


async def test_without_a_secret_no_webhook_is_trusted(rig: Rig) -> None:
    body = b'{"jobId":"j1","status":"completed"}'
    with pytest.raises(Rejected):
        rig.adapter_with(webhook_secret=None).parse_webhook(signed(body, at=rig.fake.now), body)
    assert isinstance(build(context("muvi", rig.base_url, rig.session, rig.tmp, rig.fake)), MuviAdapter)
