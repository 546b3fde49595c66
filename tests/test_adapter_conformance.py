"""Every provider against the same cases, each judged by what its own `spec` declares.

Submit, poll and fetch; cancel as `spec.cancel` says; the fault matrix against each emulator (a 429
with Retry-After, 5xx, 401, a timeout, a malformed or lost answer: one request each, never a wait in
the adapter, and `spec.submit_retry` deciding what the broker does next); costs in
`spec.billing_unit`; webhooks as `spec.webhooks` says. Providers are listed in
`tests/support/conformance.py`: a new one is an entry there. Provider-specific behaviour stays in
`tests/test_adapter_<provider>.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.base import TaskState
from adapters.errors import (
    AuthFailed,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    Rejected,
    SubmissionUncertain,
)
from adapters.spec import Webhooks
from tests.support.adapters import is_mp4
from tests.support.conformance import ALL, PROVIDERS, SLOW_S, Rig, rig_for

HTTP = [p.name for p in PROVIDERS]
HOOK = "https://broker.example/v1/callbacks/provider"


@pytest.fixture(params=ALL)
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    async with rig_for(request.param, tmp_path) as made:
        yield made


@pytest.fixture(params=HTTP)
async def http(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    async with rig_for(request.param, tmp_path) as made:
        yield made


async def test_a_task_is_submitted_polled_to_success_and_its_output_fetched(rig: Rig) -> None:
    submission = await rig.adapter.submit(rig.task())
    assert submission.handle.provider_job_id
    final = await rig.finish(submission.handle)
    assert final.state is TaskState.SUCCEEDED and final.error is None and not final.refunded
    dest = rig.tmp / "out.mp4"
    await rig.adapter.fetch_output(final, dest)
    assert is_mp4(dest)
    if rig.fake is not None:  # never polled faster than the provider allows
        assert min(rig.fake.sleeps) >= rig.adapter.spec.poll_schedule.min_interval_s


async def test_costs_are_reported_in_the_billing_unit(rig: Rig) -> None:
    submission = await rig.adapter.submit(rig.task())
    final = await rig.finish(submission.handle)
    unit = rig.adapter.spec.billing_unit
    reported = [c for c in (submission.reported_cost, final.reported_cost) if c is not None]
    assert all(cost.unit is unit for cost in reported)
    if rig.provider is None or rig.provider.reports_cost:
        assert final.reported_cost is not None and final.reported_cost.amount > 0
    else:
        assert reported == []  # the broker books the quote


@pytest.mark.parametrize("state", [TaskState.QUEUED, TaskState.RUNNING])
async def test_cancel_stops_and_refunds_what_the_spec_says(rig: Rig, state: TaskState) -> None:
    terms = rig.adapter.spec.cancel
    handle = await rig.task_in(state)
    seen = (await rig.adapter.status(handle)).state
    if seen is not state:
        pytest.skip(f"{rig.name} never shows a task as {state.value}")
    stopped = await rig.adapter.cancel(handle)
    assert stopped is (state in terms.stops)
    after = await rig.adapter.status(handle) if rig.fake is not None else await rig.finish(handle)
    if not stopped:
        assert after.state is not TaskState.CANCELLED
        return
    assert after.state is TaskState.CANCELLED
    charged = after.reported_cost is not None and after.reported_cost.amount > 0
    if state in terms.refunds:
        assert not charged
    else:
        assert not after.refunded


SUBMIT_FAULTS: list[tuple[str, dict[str, object], type[ProviderError]]] = [
    ("rate_limit", {"retry_after_s": 7}, RateLimited),
    ("server_error", {"status": 503}, ProviderUnavailable),
    ("server_error", {"status": 502}, ProviderUnavailable),
    ("http_error", {"status": 401}, AuthFailed),
    ("slow", {"delay_s": SLOW_S}, SubmissionUncertain),
    ("malformed", {}, SubmissionUncertain),
    ("lose_answer", {}, SubmissionUncertain),
]


@pytest.mark.parametrize(
    ("fault", "fields", "error_class"), SUBMIT_FAULTS, ids=[f"{f}-{e.__name__}" for f, _, e in SUBMIT_FAULTS]
)
async def test_a_submit_fault_is_raised_after_one_request_and_the_policy_decides_the_next(
    http: Rig, fault: str, fields: dict[str, object], error_class: type[ProviderError]
) -> None:
    emulator, fake = http.http
    emulator.inject(fault, "submit", **fields)
    with pytest.raises(error_class) as caught:
        await http.adapter.submit(http.task())
    error = caught.value
    assert isinstance(error, error_class) and error.provider == http.name
    assert emulator.submit_count() == 1 and fake.sleeps == []  # sent once; the broker waits, not us
    policy, spec = http.adapter.spec.submit_retry, http.adapter.spec
    delay = policy.delay_before_next(1, error, 0.0)
    if isinstance(error, RateLimited):
        assert error.retry_after_s == 7.0 and error.status == 429 and delay == 7.0
    elif isinstance(error, ProviderUnavailable):
        assert error.status == fields["status"] and delay == policy.base_delay_s
    elif isinstance(error, SubmissionUncertain):
        # Sent again only where the provider takes an idempotency key; else it may pay twice.
        assert (delay is not None) is spec.idempotent_submit
    else:
        assert delay is None
    if not isinstance(error, SubmissionUncertain):
        assert emulator.tasks == {}  # refused: nothing was created, so sending again is safe
    submission = await http.adapter.submit(http.task())  # the send the broker makes when it is due
    assert submission.handle.provider_job_id in emulator.tasks


STATUS_FAULTS: list[tuple[str, dict[str, object], type[ProviderError]]] = [
    ("rate_limit", {"retry_after_s": 3}, RateLimited),
    ("server_error", {"status": 503}, ProviderUnavailable),
    ("slow", {"delay_s": SLOW_S}, ProviderUnavailable),
    ("malformed", {}, ProviderUnavailable),
]


@pytest.mark.parametrize(
    ("fault", "fields", "error_class"), STATUS_FAULTS, ids=[f"{f}-{e.__name__}" for f, _, e in STATUS_FAULTS]
)
async def test_a_status_fault_is_raised_after_one_request_and_the_next_poll_reads_the_task(
    http: Rig, fault: str, fields: dict[str, object], error_class: type[ProviderError]
) -> None:
    emulator, fake = http.http
    submission = await http.adapter.submit(http.task())
    emulator.inject(fault, "status", **fields)
    with pytest.raises(error_class) as caught:
        await http.adapter.status(submission.handle)
    assert not isinstance(caught.value, SubmissionUncertain)  # a poll is safe to repeat
    if isinstance(caught.value, RateLimited):
        assert caught.value.retry_after_s == 3.0
    assert emulator.recorder.count("status") == 1 and fake.sleeps == []
    status = await http.adapter.status(submission.handle)
    assert status.state in (TaskState.QUEUED, TaskState.RUNNING)
    assert emulator.recorder.count("status") == 2


async def test_a_wrong_key_is_auth_failed_and_creates_nothing(http: Rig) -> None:
    assert http.provider is not None and http.context is not None and http.fake is not None
    wrong = http.provider.adapter(http.context(api_key="not-the-key"), http.fake)
    with pytest.raises(AuthFailed) as caught:
        await wrong.submit(http.task())
    assert caught.value.status in (401, 403) and http.http[0].tasks == {}
    assert "not-the-key" not in str(caught.value)


async def test_webhooks_are_handled_as_the_spec_says(rig: Rig) -> None:
    kind = rig.adapter.spec.webhooks
    if kind is Webhooks.NONE:
        with pytest.raises(Rejected):
            rig.adapter.parse_webhook({"Content-Type": "application/json"}, b'{"id": "t1", "status": "done"}')
    if rig.emulator is None:
        assert kind is Webhooks.NONE
        return
    emulator, fake = rig.http
    submission = await rig.adapter.submit(rig.task(webhook_url=HOOK))
    fake.now += rig.render_s * 1.5
    built = emulator.webhook_request(emulator.tasks[submission.handle.provider_job_id])
    assert (built is None) is (kind is Webhooks.NONE)  # the emulator and the spec agree
    if built is None:
        return
    body, headers = built
    event = rig.adapter.parse_webhook(headers, body)
    assert event.provider_job_id == submission.handle.provider_job_id
    assert event.status.state is TaskState.SUCCEEDED
    if kind is Webhooks.UNSIGNED:  # a cue to poll: whatever parses is believed only after a poll
        for garbage in (b"not json", b"[]", b"{}"):
            with pytest.raises(Rejected):
                rig.adapter.parse_webhook(headers, garbage)
        return
    emulator.inject("forge_webhook")
    forged = await rig.adapter.submit(rig.task(webhook_url=HOOK, attempt_id="att-2"))
    fake.now += rig.render_s * 1.5
    forged_built = emulator.webhook_request(emulator.tasks[forged.handle.provider_job_id])
    assert forged_built is not None
    for bad_body, bad_headers in (forged_built, (body + b" ", headers), (body, {})):
        with pytest.raises(Rejected):
            rig.adapter.parse_webhook(bad_headers, bad_body)
