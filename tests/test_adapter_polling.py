"""The poll loop: first poll near the estimate, back-off, a floor between polls, a deadline."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from adapters.base import (
    ImageAcceptance,
    PollSchedule,
    RenderTask,
    Submission,
    TaskHandle,
    TaskState,
    TaskStatus,
    WebhookEvent,
)
from adapters.errors import AuthFailed, ProviderError, ProviderUnavailable, RateLimited
from adapters.http import NO_RETRY
from adapters.polling import TaskTimedOut, poll_until_done
from adapters.spec import DAY_S, ProviderSpec
from pricing.units import CostUnit
from tests.support.adapters import FakeTime

HANDLE = TaskHandle(provider_job_id="task-1", model="m")


class ScriptedAdapter:
    """Answers status polls from a script; records the fake time of every poll."""

    provider = "scripted"

    def __init__(self, fake: FakeTime, schedule: PollSchedule, script: Sequence[TaskStatus | ProviderError]):
        self.fake = fake
        self.spec = ProviderSpec(
            name="scripted",
            output_retention_s=DAY_S,
            poll_schedule=schedule,
            image_acceptance=ImageAcceptance(url=True),
            submit_retry=NO_RETRY,
            billing_unit=CostUnit.USD,
        )
        self.script = list(script)
        self.polled_at: list[float] = []

    async def status(self, handle: TaskHandle) -> TaskStatus:
        self.polled_at.append(self.fake.now)
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, ProviderError):
            raise step
        return step

    async def submit(self, task: RenderTask) -> Submission:
        raise AssertionError("not used")

    async def cancel(self, handle: TaskHandle) -> bool:
        return False

    async def fetch_output(self, status: TaskStatus, dest: Path) -> None:
        raise AssertionError("not used")

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        raise AssertionError("not used")


RUNNING = TaskStatus(state=TaskState.RUNNING)
DONE = TaskStatus(state=TaskState.SUCCEEDED, output_url="https://cdn/x.mp4")


def gaps(times: list[float], start: float) -> list[float]:
    points = [start, *times]
    return [round(b - a, 6) for a, b in itertools.pairwise(points)]


async def test_first_poll_near_the_estimate_then_backing_off_to_the_cap() -> None:
    fake = FakeTime()
    schedule = PollSchedule(min_interval_s=5, max_interval_s=20, backoff=2, deadline_s=600)
    adapter = ScriptedAdapter(fake, schedule, [RUNNING] * 5 + [DONE])
    status = await poll_until_done(adapter, HANDLE, clock=fake.clock, sleep=fake.sleep, estimated_seconds=100)
    assert status is DONE
    assert gaps(adapter.polled_at, 1000.0) == [80.0, 20.0, 20.0, 20.0, 20.0, 20.0]


async def test_never_polls_faster_than_the_minimum_interval() -> None:
    fake = FakeTime()
    schedule = PollSchedule(min_interval_s=5, max_interval_s=30, backoff=1.5, deadline_s=900)
    quick = TaskStatus(state=TaskState.RUNNING, estimated_seconds=0.5)
    adapter = ScriptedAdapter(fake, schedule, [quick] * 8 + [DONE])
    await poll_until_done(adapter, HANDLE, clock=fake.clock, sleep=fake.sleep, estimated_seconds=1)
    assert min(gaps(adapter.polled_at, 1000.0)) >= 5.0
    assert len(adapter.polled_at) == 9


async def test_deadline_raises_timed_out_and_stops_polling() -> None:
    fake = FakeTime()
    schedule = PollSchedule(min_interval_s=5, max_interval_s=30, deadline_s=120)
    adapter = ScriptedAdapter(fake, schedule, [RUNNING])
    with pytest.raises(TaskTimedOut) as caught:
        await poll_until_done(adapter, HANDLE, clock=fake.clock, sleep=fake.sleep)
    assert caught.value.code.value == "timed_out"
    assert isinstance(caught.value, ProviderUnavailable)
    assert adapter.polled_at[-1] <= 1000.0 + 120
    assert fake.now - 1000.0 <= 120


async def test_deadline_counts_from_the_submit_time_after_a_restart() -> None:
    fake = FakeTime(start=2000.0)
    schedule = PollSchedule(min_interval_s=5, deadline_s=100)
    adapter = ScriptedAdapter(fake, schedule, [RUNNING])
    with pytest.raises(TaskTimedOut):
        await poll_until_done(adapter, HANDLE, clock=fake.clock, sleep=fake.sleep, submitted_at=1000.0)
    assert adapter.polled_at == []


async def test_transient_poll_failures_are_waited_out() -> None:
    fake = FakeTime()
    schedule = PollSchedule(min_interval_s=5, max_interval_s=30, backoff=1.0, deadline_s=600)
    script: list[TaskStatus | ProviderError] = [
        ProviderUnavailable("502"),
        RateLimited("429", retry_after_s=17.0),
        RUNNING,
        DONE,
    ]
    adapter = ScriptedAdapter(fake, schedule, script)
    seen: list[TaskState] = []

    async def record(status: TaskStatus) -> None:
        seen.append(status.state)

    status = await poll_until_done(adapter, HANDLE, clock=fake.clock, sleep=fake.sleep, on_status=record)
    assert status is DONE
    # After a Retry-After the loop keeps the longer interval: it only ever backs off.
    assert gaps(adapter.polled_at, 1000.0) == [5.0, 5.0, 17.0, 17.0]
    assert seen == [TaskState.RUNNING, TaskState.SUCCEEDED]


async def test_a_lasting_failure_is_raised() -> None:
    fake = FakeTime()
    adapter = ScriptedAdapter(fake, PollSchedule(), [AuthFailed("key revoked")])
    with pytest.raises(AuthFailed):
        await poll_until_done(adapter, HANDLE, clock=fake.clock, sleep=fake.sleep)
    assert len(adapter.polled_at) == 1
