"""The adapter protocol: the one small seam between the broker and a video provider.

An adapter submits a render, reads its status into unified states, cancels it, fetches its output and
parses the provider's webhooks. Typed values in and out; failures are raised as the classes of
`adapters.errors`. Adapters hold no job state: everything needed to resume a task after a restart is
in its `TaskHandle`, which the runner stores with the attempt before it polls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import aiohttp

from adapters.errors import ProviderError
from broker.schema import JobRequest, Lifecycle
from pricing.units import ReportedCost

if TYPE_CHECKING:
    from adapters.spec import ProviderSpec

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ImageInput:
    """The job's image: bytes in hand (upload, data URI or fetched URL) and/or an https URL."""

    content_type: str
    data: bytes | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class ImageAcceptance:
    """Which image forms a provider takes. A form it lacks may make a route infeasible for a job."""

    url: bool
    data_uri_max_bytes: int | None = None  # None: no data URIs
    file_max_bytes: int | None = None  # None: no multipart file upload


@dataclass(frozen=True, slots=True)
class RenderTask:
    """What an adapter submits: the validated request on one model, with its image resolved."""

    attempt_id: str  # stable for the attempt; adapters that take an idempotency key use it
    model: str
    request: JobRequest
    image: ImageInput | None = None
    webhook_url: str | None = None


class TaskState(Lifecycle):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class TaskHandle:
    """Identifies a task at its provider; `data` holds JSON-safe strings such as fal's status URL."""

    provider_job_id: str
    model: str
    data: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Submission:
    handle: TaskHandle
    estimated_seconds: float | None = None
    reported_cost: ReportedCost | None = None


@dataclass(frozen=True, slots=True)
class TaskStatus:
    state: TaskState
    progress: float | None = None
    output_url: str | None = None
    reported_cost: ReportedCost | None = None  # the cost actually charged, in the provider's unit
    refunded: bool = False  # the provider returned what it charged for this task
    error: ProviderError | None = None  # set when state is FAILED
    estimated_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    provider_job_id: str
    status: TaskStatus


@dataclass(frozen=True, slots=True)
class PollSchedule:
    """When to poll: first near the provider's estimate, then backing off, never faster than allowed."""

    min_interval_s: float = 5.0
    max_interval_s: float = 30.0
    backoff: float = 1.5
    deadline_s: float = 900.0

    def first_delay(self, estimated_seconds: float | None) -> float:
        if estimated_seconds is None:
            return self.min_interval_s
        return min(max(self.min_interval_s, estimated_seconds * 0.8), self.max_interval_s * 4)

    def next_delay(self, previous_s: float) -> float:
        return min(max(self.min_interval_s, previous_s * self.backoff), self.max_interval_s)


@dataclass(frozen=True, slots=True)
class AdapterContext:
    """What every adapter is built from: the app's shared HTTP session, its endpoint and secrets."""

    provider: str
    base_url: str
    api_key: str | None
    session: aiohttp.ClientSession
    data_dir: Path
    webhook_secret: str | None = None
    timeout_s: float = 30.0  # per provider request, from `providers.<name>.timeout_s`
    max_concurrency: int = 1  # from `providers.<name>.max_concurrency`
    clock: Clock = time.monotonic
    sleep: Sleep = asyncio.sleep


class Adapter(Protocol):
    """A provider. Implementations live in `adapters/<provider>.py`."""

    provider: str
    # The provider's facts in one declaration (`adapters.spec`): output retention, submit idempotency
    # and retries (each delay a due time of the job, never a sleep in a request), poll schedule, image
    # forms, webhooks, cancel terms, billing unit.
    spec: ProviderSpec

    async def submit(self, task: RenderTask) -> Submission:
        """Start a render. Raises a `ProviderError`; `SubmissionUncertain` if the answer was lost."""
        ...

    async def status(self, handle: TaskHandle) -> TaskStatus:
        """Read the task's state. Never billed."""
        ...

    async def cancel(self, handle: TaskHandle) -> bool:
        """Ask the provider to cancel; True if it accepted. Providers that can't cancel return False."""
        ...

    async def fetch_output(self, status: TaskStatus, dest: Path) -> None:
        """Write the finished MP4 to `dest`."""
        ...

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """Verify (where the provider signs) and parse a webhook; `Rejected` on a bad signature."""
        ...


AdapterFactory = Callable[[AdapterContext], Adapter]
