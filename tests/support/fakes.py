"""A fake provider for driving the runner in tests: scripted outcomes, recorded calls."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from adapters.base import (
    AdapterContext,
    ImageAcceptance,
    PollSchedule,
    RenderTask,
    Submission,
    TaskHandle,
    TaskState,
    TaskStatus,
    WebhookEvent,
)
from adapters.emulators.media import make_mp4
from adapters.errors import ProviderError, Rejected
from adapters.http import NO_RETRY
from adapters.spec import DAY_S, ProviderSpec
from local_backend.formats import frame_size
from pricing.units import CostUnit, ReportedCost


@dataclass
class Script:
    """What the fake provider does with every task."""

    polls_to_finish: int = 1
    submit_error: ProviderError | None = None
    fail_with: ProviderError | None = None
    credits: Decimal | None = None  # reported cost in credits
    status_raises: Exception | None = None  # a bug in an adapter, not a provider failure
    output: bytes | None = None  # what the provider delivers; None: a clip of the asked shape


@dataclass
class FakeProvider:
    name: str
    script: Script = field(default_factory=Script)
    submits: list[RenderTask] = field(default_factory=list)
    status_calls: int = 0
    cancels: list[str] = field(default_factory=list)
    _polls: dict[str, int] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _tasks: dict[str, RenderTask] = field(default_factory=dict)

    def build(self, ctx: AdapterContext) -> FakeAdapter:
        return FakeAdapter(self)


class FakeAdapter:
    spec = ProviderSpec(
        name="fake",
        output_retention_s=DAY_S,
        poll_schedule=PollSchedule(min_interval_s=0.01, max_interval_s=0.02, deadline_s=30),
        image_acceptance=ImageAcceptance(url=True, data_uri_max_bytes=5_000_000, file_max_bytes=10_000_000),
        submit_retry=NO_RETRY,  # a scripted failure falls back at once
        billing_unit=CostUnit.USD,  # sends no webhooks: polled
    )

    def __init__(self, provider: FakeProvider) -> None:
        self.fake = provider
        self.provider = provider.name

    async def submit(self, task: RenderTask) -> Submission:
        if self.fake.script.submit_error is not None:
            raise self.fake.script.submit_error
        self.fake.submits.append(task)
        task_id = f"{self.provider}-{next(self.fake._ids)}"
        self.fake._tasks[task_id] = task
        self.fake._polls[task_id] = 0
        return Submission(handle=TaskHandle(task_id, task.model), estimated_seconds=0.01)

    async def status(self, handle: TaskHandle) -> TaskStatus:
        self.fake.status_calls += 1
        if self.fake.script.status_raises is not None:
            raise self.fake.script.status_raises
        if handle.provider_job_id in self.fake.cancels:  # a cancelled task ends at once, unbilled
            return TaskStatus(state=TaskState.CANCELLED)
        seen = self.fake._polls[handle.provider_job_id] = self.fake._polls[handle.provider_job_id] + 1
        script = self.fake.script
        if seen < script.polls_to_finish:
            return TaskStatus(state=TaskState.RUNNING, progress=seen / script.polls_to_finish)
        cost = None if script.credits is None else ReportedCost(script.credits, CostUnit.CREDITS)
        if script.fail_with is not None:
            return TaskStatus(state=TaskState.FAILED, error=script.fail_with, reported_cost=cost)
        return TaskStatus(
            state=TaskState.SUCCEEDED, output_url=f"fake://{handle.provider_job_id}", reported_cost=cost
        )

    async def cancel(self, handle: TaskHandle) -> bool:
        self.fake.cancels.append(handle.provider_job_id)
        return True

    async def fetch_output(self, status: TaskStatus, dest: Path) -> None:
        output = self.fake.script.output
        if output is None:  # a conforming clip: the broker keeps it as delivered
            task_id = (status.output_url or "").removeprefix("fake://")
            request = self.fake._tasks[task_id].request
            width, height = frame_size(request.aspect_ratio.value, request.resolution.value)
            output = make_mp4(width, height, request.duration_s)
        dest.write_bytes(output)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        raise Rejected("the fake provider sends no webhooks")
