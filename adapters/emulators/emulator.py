"""The state every provider emulator shares: keys, tasks, fault plan, recorded requests, webhooks.

A provider module subclasses `ProviderEmulator` with its auth rule, its error body and its webhook
body, builds its app on `app.base_app()`, and raises `ProtocolError` from handlers to answer in the
provider's error format.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import math
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar

import aiohttp
from aiohttp import web

from adapters.emulators.faults import Endpoint, Fault, FaultKind, FaultPlan
from adapters.emulators.media import CONFORMING, Delivery, clip
from adapters.emulators.recorder import RecordedRequest, Recorder
from adapters.emulators.tasks import Clock, EmulatedTask, Phase
from adapters.emulators.webhooks import WebhookDelivery, deliver


class ProtocolError(Exception):
    """Raised by handlers; the middleware answers it in the provider's error format."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = dict(extra or {})  # more fields for the provider's error body
        self.headers = dict(headers or {})


class ProviderEmulator(abc.ABC):
    """State of one emulated provider: its keys, tasks, fault plan, recorded requests and webhooks."""

    provider: ClassVar[str]
    rate_limit_code: ClassVar[str] = "RATE_LIMITED"
    server_error_code: ClassVar[str] = "INTERNAL_ERROR"
    task_fail_code: ClassVar[str] = "INTERNAL_ERROR"
    delivery: Delivery = CONFORMING  # how its clips differ from what was asked (see media.py)

    def __init__(
        self,
        *,
        api_keys: Sequence[str] = ("emulator-key",),
        render_seconds: float = 0.2,
        clock: Clock = time.time,
        webhook_secret: str | None = None,
        queue_fraction: float = 0.25,
        webhook_tick_s: float = 0.02,
        render_seconds_max: float | None = None,
        seed: int | None = None,
    ) -> None:
        self.api_keys = tuple(api_keys)
        self.render_seconds = render_seconds
        # With a maximum, each render takes a time drawn evenly from [render_seconds, render_seconds_max]
        # (real renders vary; a fair-share bench must not see them end in lockstep).
        self.render_seconds_max = render_seconds_max
        self._random = random.Random(seed)
        self.clock = clock
        self.webhook_secret = webhook_secret
        self.queue_fraction = queue_fraction
        self.webhook_tick_s = webhook_tick_s
        self.tasks: dict[str, EmulatedTask] = {}
        self.faults = FaultPlan()
        self.recorder = Recorder()
        self.webhooks: list[WebhookDelivery] = []
        self._session: aiohttp.ClientSession | None = None
        self._warming: set[asyncio.Future[bytes]] = set()

    # ---- for tests -------------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        return self.recorder.requests

    def submit_count(self) -> int:
        """How many submit requests arrived (answered or not)."""
        return self.recorder.count(Endpoint.SUBMIT)

    def inject(self, kind: FaultKind | str, endpoint: Endpoint | str = Endpoint.ANY, **fields: Any) -> Fault:
        """Plan a fault: `emulator.inject("rate_limit", "submit", retry_after_s=2)`."""
        return self.faults.inject(kind, endpoint, **fields)

    # ---- tasks -----------------------------------------------------------------------------
    def create_task(self, request: web.Request, model: str, **fields: Any) -> EmulatedTask:
        """Start a task now; the next planned task fault, if any, shapes how it ends."""
        task = EmulatedTask(
            model=model,
            created_at=self.clock(),
            render_s=self.next_render_s(),
            base_url=str(request.url.origin()),
            queue_fraction=self.queue_fraction,
            **fields,
        )
        fault = self.faults.take_task()
        if fault is not None and fault.kind == FaultKind.TASK_FAIL:
            task.fail_code = fault.code or self.task_fail_code
            task.fail_message = fault.message or f"emulated failure {task.fail_code}"
        elif fault is not None and fault.kind == FaultKind.NEVER_FINISH:
            task.never_finish = True
        elif fault is not None:
            task.forged_webhook = True
        self.tasks[task.id] = task
        self._warm(task)
        return task

    def next_render_s(self) -> float:
        """How long the next task renders: `render_seconds`, or a draw up to `render_seconds_max`."""
        if self.render_seconds_max is None or self.render_seconds_max <= self.render_seconds:
            return self.render_seconds
        return self._random.uniform(self.render_seconds, self.render_seconds_max)

    def _warm(self, task: EmulatedTask) -> None:
        """Encode the task's clip on a worker thread now, while it "renders": the answers that need the
        clip (its size in a result, the download) then find it cached instead of encoding on the loop."""
        warming = asyncio.get_running_loop().run_in_executor(
            None, clip, task.width, task.height, task.duration_s, self.delivery
        )
        self._warming.add(warming)
        warming.add_done_callback(self._warming.discard)

    def find_task(self, task_id: str) -> EmulatedTask | None:
        task = self.tasks.get(task_id)
        return None if task is None or task.deleted else task

    def phase(self, task: EmulatedTask) -> Phase:
        return task.phase(self.clock())

    def charged(self, task: EmulatedTask) -> int:
        """What `task` costs the account in the end, in the provider's unit: taken at submit, given
        back when the task failed or was cancelled (providers with other rules override this)."""
        return 0 if self.phase(task) in (Phase.FAILED, Phase.CANCELLED) else task.cost

    def charges(self) -> dict[str, int]:
        """Every task's charge by task id: the provider's own books, to compare the broker's with."""
        return {task_id: self.charged(task) for task_id, task in self.tasks.items()}

    def active_count(self) -> int:
        """Tasks not yet terminal: what provider concurrency limits count."""
        now = self.clock()
        return sum(1 for t in self.tasks.values() if not t.deleted and not t.phase(now).terminal)

    def peak_active(self) -> int:
        """The most tasks that were ever not yet terminal at one moment (from every task's timeline)."""
        now = self.clock()
        events: list[tuple[float, int]] = []
        for task in self.tasks.values():
            end = task.finished_at(now)
            events.append((task.created_at, 1))
            events.append((now if end is None else end, -1))
        peak = active = 0
        for _, step in sorted(events):  # an end sorts before a start at the same instant
            active += step
            peak = max(peak, active)
        return peak

    def stats(self) -> dict[str, Any]:
        """Counts for load tests: tasks, tasks active now and at the peak, requests per endpoint."""
        created = [t.created_at for t in self.tasks.values()]
        return {
            "tasks": len(self.tasks),
            "active": self.active_count(),
            "peak_active": self.peak_active(),
            "requests": dict(Counter(r.endpoint.value for r in self.requests)),
            "first_task_at": min(created, default=None),
            "last_task_at": max(created, default=None),
        }

    def next_free_slot(self, limit: int) -> float:
        """When a task created now could begin under `limit` concurrent renders; math.inf: never."""
        now = self.clock()
        ends = sorted(
            math.inf if t.ends_at is None else t.ends_at
            for t in self.tasks.values()
            if not t.deleted and not t.phase(now).terminal
        )
        return now if len(ends) < limit else ends[len(ends) - limit]

    # ---- provider protocol hooks -------------------------------------------------------------
    @abc.abstractmethod
    def error_response(self, error: ProtocolError, headers: Mapping[str, str] | None = None) -> web.Response:
        """The provider's error answer."""

    @abc.abstractmethod
    def authenticate(self, request: web.Request) -> None:
        """Raise `ProtocolError` unless the request carries the provider's credentials."""

    def webhook_request(self, task: EmulatedTask) -> tuple[bytes, dict[str, str]] | None:
        """The body and headers of `task`'s completion webhook; None where the provider sends none."""
        return None

    def signing_secret(self, task: EmulatedTask) -> str | None:
        """The secret `task`'s webhook is signed with: a wrong one under a forge_webhook fault."""
        if self.webhook_secret is None:
            return None
        return "forged-" + self.webhook_secret if task.forged_webhook else self.webhook_secret

    async def endpoint_for(self, request: web.Request, named: Endpoint) -> Endpoint:
        """The endpoint kind of a request; GraphQL providers refine the route's kind from the body."""
        return named

    def extra_headers(self) -> dict[str, str]:
        """Headers on every provider answer (doitong's rate-limit headers)."""
        return {}

    # ---- webhooks --------------------------------------------------------------------------
    async def deliver_due_webhooks(self) -> list[WebhookDelivery]:
        """Send the webhook of every task that reached a terminal phase and has not sent one."""
        now = self.clock()
        due = [
            t for t in self.tasks.values() if t.webhook_url and not t.webhook_sent and t.phase(now).terminal
        ]
        sent: list[WebhookDelivery] = []
        for task in due:
            task.webhook_sent = True
            built = self.webhook_request(task)
            if built is None or task.webhook_url is None:
                continue
            body, headers = built
            delivery = await deliver(self._http(), task.id, task.webhook_url, body, headers)
            self.webhooks.append(delivery)
            sent.append(delivery)
        return sent

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self._session

    async def _webhook_loop(self) -> None:
        while True:
            await asyncio.sleep(self.webhook_tick_s)
            await self.deliver_due_webhooks()

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        """The app's cleanup context: the webhook sender runs while the app does."""
        loop_task = asyncio.create_task(self._webhook_loop())
        yield
        loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop_task
        if self._session is not None:
            await self._session.close()


EMULATOR_KEY = web.AppKey("emulator", ProviderEmulator)


async def json_object(request: web.Request, code: str = "INVALID_INPUT") -> dict[str, Any]:
    """The request's JSON object body, or a 400 `ProtocolError` with `code`."""
    try:
        data = await request.json()
    except ValueError as exc:
        raise ProtocolError(400, code, "Request body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise ProtocolError(400, code, "Request body must be a JSON object")
    return data


def bearer_token(request: web.Request, scheme: str = "Bearer") -> str | None:
    """The credential after `scheme` in the Authorization header, if present."""
    header = request.headers.get("Authorization", "")
    prefix = scheme + " "
    return header[len(prefix) :].strip() if header.startswith(prefix) else None
