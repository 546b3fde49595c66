"""The doitong adapter against the doitong emulator, on one fake clock shared by both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from adapters.base import ImageInput, RenderTask, TaskState, WebhookEvent
from adapters.doitong import GENERATE, DoitongAdapter, build
from adapters.emulators.doitong import DoitongEmulator, create_app
from adapters.emulators.webhooks import doitong_signature_headers
from adapters.errors import (
    ContentRejected,
    InsufficientFunds,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    Rejected,
    SubmissionUncertain,
)
from adapters.polling import poll_until_done
from broker.config import load_config
from broker.schema import JobRequest
from pricing.rules import PriceRule, PriceUnit
from pricing.units import CostUnit, ReportedCost
from tests.support.adapters import CONFIG_PATH, FakeTime, context, is_mp4, serving

KEY = "doitong-test-key"
SECRET = "doitong-webhook-secret-for-tests"
IMAGE = ImageInput(content_type="image/*", url="https://img.example/still.jpg")


@dataclass
class Rig:
    fake: FakeTime
    emulator: DoitongEmulator
    tmp: Path
    base_url: str
    session: aiohttp.ClientSession
    adapter: DoitongAdapter = field(init=False)

    def __post_init__(self) -> None:
        self.adapter = self.adapter_with()

    def adapter_with(self, **overrides: Any) -> DoitongAdapter:
        fields: dict[str, Any] = {"api_key": KEY, "webhook_secret": SECRET, **overrides}
        return DoitongAdapter(context("doitong", self.base_url, self.session, self.tmp, self.fake, **fields),
                              timeout_s=0.5)


async def make_rig(tmp_path: Path, **emulator_options: Any) -> AsyncIterator[Rig]:
    fake = FakeTime()
    emulator = DoitongEmulator(api_keys=(KEY,), render_seconds=60, clock=fake.clock, webhook_secret=SECRET,
                               webhook_tick_s=3600, **emulator_options)
    async with serving(create_app(emulator)) as server, aiohttp.ClientSession() as session:
        yield Rig(fake, emulator, tmp_path, str(server.make_url("")), session)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async for made in make_rig(tmp_path):
        yield made


def task(image: ImageInput = IMAGE, attempt_id: str = "att-42", webhook_url: str | None = None,
         **fields: object) -> RenderTask:
    request = JobRequest.model_validate({"prompt": "leaves drift past",
                                         "image_url": "https://img.example/still.jpg", **fields})
    return RenderTask(attempt_id=attempt_id, model="runway-i2v", request=request, image=image,
                      webhook_url=webhook_url)


async def test_success_reports_credits_and_fetches_the_output(rig: Rig) -> None:
    submission = await rig.adapter.submit(task())
    final = await poll_until_done(rig.adapter, submission.handle, clock=rig.fake.clock, sleep=rig.fake.sleep)
    assert final.state is TaskState.SUCCEEDED and not final.refunded
    assert final.reported_cost == ReportedCost(Decimal(50), CostUnit.CREDITS)
    dest = rig.tmp / "out.mp4"
    await rig.adapter.fetch_output(final, dest)
    assert is_mp4(dest)
    sent = rig.emulator.recorder.of("submit")[0]
    assert sent.headers["Idempotency-Key"] == "att-42"
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.json["query"] == GENERATE
    assert sent.json["variables"] == {"input": {
        "type": "VIDEO",
        "provider": "runway-i2v",
        "input": {"imageUrl": "https://img.example/still.jpg", "prompt": "leaves drift past"},
        "options": {"duration": 5, "aspectRatio": "16:9", "version": "gen-4", "motionIntensity": "medium"},
    }}
    assert min(rig.fake.sleeps) >= rig.adapter.spec.poll_schedule.min_interval_s


def test_credits_convert_once_an_operator_prices_them() -> None:
    route = next(r for r in load_config(CONFIG_PATH).routes if r.provider == "doitong")
    assert route.price is None  # doitong publishes no USD per credit: the route stays unpriced
    rule = PriceRule(unit=PriceUnit.CREDITS_PER_VIDEO, amount=Decimal(50), usd_per_credit=Decimal("0.01"))
    assert str(rule.reported_to_money(ReportedCost(Decimal(50), CostUnit.CREDITS))) == "0.500000"


@pytest.mark.parametrize("fault", ["lose_answer", "malformed", "slow"])
async def test_a_lost_submit_answer_is_uncertain_and_sending_it_again_with_the_same_key_makes_one_job(
    rig: Rig, fault: str
) -> None:
    rig.emulator.inject(fault, "submit", delay_s=1.0)
    with pytest.raises(SubmissionUncertain) as caught:
        await rig.adapter.submit(task())
    assert rig.emulator.submit_count() == 1 and rig.fake.sleeps == []
    # doitong takes an idempotency key, so its policy sends a lost submit again.
    assert rig.adapter.spec.idempotent_submit
    assert rig.adapter.spec.submit_retry.delay_before_next(1, caught.value, 0.0) == 1.0
    submission = await rig.adapter.submit(task())  # the same attempt, sent again when the job is due
    assert list(rig.emulator.tasks) == [submission.handle.provider_job_id]
    keys = {r.headers["Idempotency-Key"] for r in rig.emulator.recorder.of("submit")}
    assert rig.emulator.submit_count() == 2 and keys == {"att-42"}


async def test_a_submit_lost_every_time_stays_uncertain_and_is_bounded(rig: Rig) -> None:
    rig.emulator.inject("lose_answer", "submit", count=None)
    policy = rig.adapter.spec.submit_retry
    tries, elapsed = 0, 0.0
    delays: list[float] = []
    while True:  # as the broker's submit step does, with each delay a due time
        with pytest.raises(SubmissionUncertain) as caught:
            await rig.adapter.submit(task())
        tries += 1
        delay = policy.delay_before_next(tries, caught.value, elapsed)
        if delay is None:
            break
        delays.append(delay)
        elapsed += delay
    assert delays == [1.0, 2.0, 4.0] and rig.fake.sleeps == []
    assert rig.emulator.submit_count() == 4 and len(rig.emulator.tasks) == 1

async def test_the_request_rate_limit_is_rate_limited_with_its_retry_after(tmp_path: Path) -> None:
    async for limited in make_rig(tmp_path, requests_per_minute=1):
        await limited.adapter.submit(task(attempt_id="a1"))
        with pytest.raises(RateLimited) as caught:
            await limited.adapter.submit(task(attempt_id="a2"))
        assert caught.value.provider_code == "RATE_LIMITED" and caught.value.retry_after_s == 60.0
        # 60 s to wait is over the retry policy's cap: the router falls back instead.
        assert limited.adapter.spec.submit_retry.delay_before_next(1, caught.value, 0.0) is None


async def test_out_of_credits_carries_the_amounts(tmp_path: Path) -> None:
    async for poor in make_rig(tmp_path, credits=20):
        with pytest.raises(InsufficientFunds) as caught:
            await poor.adapter.submit(task())
        assert caught.value.details == {"creditsRequired": 50, "creditsAvailable": 20}


@pytest.mark.parametrize(
    ("status", "code", "error_class"),
    [
        (400, "BAD_USER_INPUT", Rejected),
        (500, "INTERNAL_SERVER_ERROR", ProviderUnavailable),
        (402, "INSUFFICIENT_CREDITS", InsufficientFunds),
        (429, "CONCURRENT_LIMIT_EXCEEDED", RateLimited),
    ],
)
async def test_errors_map_by_extensions_code(
    rig: Rig, status: int, code: str, error_class: type[ProviderError]
) -> None:
    rig.emulator.inject("http_error", "submit", status=status, code=code, count=None)
    with pytest.raises(error_class) as caught:
        await rig.adapter.submit(task())
    assert caught.value.provider_code == code

async def test_what_doitong_cannot_take_is_refused_before_sending(rig: Rig) -> None:
    for bad in (task(aspect_ratio="4:3"), task(duration_s=7),
                task(image=ImageInput(content_type="image/png", data=b"bytes only"))):
        with pytest.raises(Rejected):
            await rig.adapter.submit(bad)
    assert rig.emulator.submit_count() == 0


async def test_a_dropped_poll_is_unavailable_and_not_resent_by_the_http_client(rig: Rig) -> None:
    # doitong polls over POST (GraphQL): not idempotent to the HTTP client, so even a drop is not resent.
    submission = await rig.adapter.submit(task())
    rig.emulator.inject("drop", "status")
    with pytest.raises(ProviderUnavailable):
        await rig.adapter.status(submission.handle)
    assert rig.emulator.recorder.count("status") == 1 and rig.fake.sleeps == []
    assert (await rig.adapter.status(submission.handle)).state is TaskState.RUNNING
    assert rig.emulator.recorder.count("status") == 2


@pytest.mark.parametrize(
    ("code", "error_class"),
    [("GENERATION_FAILED", ProviderUnavailable), ("CONTENT_MODERATED", ContentRejected)],
)
async def test_failed_jobs_are_classified_and_refunded(
    rig: Rig, code: str, error_class: type[ProviderError]
) -> None:
    rig.emulator.inject("task_fail", code=code)
    submission = await rig.adapter.submit(task())
    final = await poll_until_done(rig.adapter, submission.handle, clock=rig.fake.clock, sleep=rig.fake.sleep)
    assert final.state is TaskState.FAILED and type(final.error) is error_class
    assert final.refunded and final.reported_cost == ReportedCost(Decimal(0), CostUnit.CREDITS)


async def test_cancel_a_processing_job_but_not_a_finished_one(rig: Rig) -> None:
    running = await rig.adapter.submit(task(attempt_id="a1"))
    assert await rig.adapter.cancel(running.handle) is True
    status = await rig.adapter.status(running.handle)
    assert status.state is TaskState.CANCELLED and status.refunded
    done = await rig.adapter.submit(task(attempt_id="a2"))
    rig.fake.now += 61
    assert await rig.adapter.cancel(done.handle) is False


async def test_signed_webhooks_arrive_over_http_and_verify(rig: Rig) -> None:
    events: list[WebhookEvent] = []

    async def receive(request: web.Request) -> web.Response:
        events.append(rig.adapter.parse_webhook(request.headers, await request.read()))
        return web.json_response({"received": True})

    receiver = web.Application()
    receiver.router.add_post("/v1/callbacks/doitong", receive)
    async with serving(receiver) as server:
        submission = await rig.adapter.submit(task(webhook_url=str(server.make_url("/v1/callbacks/doitong"))))
        rig.fake.now += 61
        deliveries = await rig.emulator.deliver_due_webhooks()
    assert [d.status for d in deliveries] == [200]
    assert events[0].provider_job_id == submission.handle.provider_job_id
    assert events[0].status.state is TaskState.SUCCEEDED and events[0].status.output_url is not None


@pytest.mark.parametrize("case", ["tampered", "wrong_secret", "missing", "no_secret_configured"])
async def test_webhooks_with_a_bad_signature_are_rejected(rig: Rig, case: str) -> None:
    body = b'{"id":"j1","status":"completed","url":"https://cdn.example/j1.mp4","service":"runway-i2v"}'
    adapter = rig.adapter_with(webhook_secret=None) if case == "no_secret_configured" else rig.adapter
    headers = {
        "tampered": doitong_signature_headers(SECRET, body + b" "),
        "wrong_secret": doitong_signature_headers("other-secret", body),
        "missing": {},
        "no_secret_configured": doitong_signature_headers(SECRET, body),
    }[case]
    with pytest.raises(Rejected):
        adapter.parse_webhook(headers, body)
    good = rig.adapter.parse_webhook(doitong_signature_headers(SECRET, body), body)
    assert good.provider_job_id == "j1" and good.status.state is TaskState.SUCCEEDED


async def test_build_gives_a_doitong_adapter(rig: Rig) -> None:
    assert isinstance(build(context("doitong", rig.base_url, rig.session, rig.tmp, rig.fake)), DoitongAdapter)
