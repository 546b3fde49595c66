"""The part every provider emulator shares: tasks, recording, faults, downloads, webhooks, admin API.

A provider module subclasses `ProviderEmulator` with its auth rule, its error body and its webhook
body, and adds its routes to `build_app()`. Route names say the endpoint kind ("submit:...",
"status", "cancel", "result"); the middleware records every provider request under that kind, then
applies the fault plan, then authenticates, then runs the handler.

Admin endpoints, for a test in another process (no auth, never recorded):
    GET|POST|DELETE /_emulator/faults     list, add (one fault object or a list), clear
    GET|DELETE      /_emulator/requests   list what was received, forget it
    GET             /_emulator/webhooks   list the webhooks delivered
    GET             /_emulator/tasks      list the tasks and their phases
    GET             /_emulator/media/{id}.mp4   a finished task's video (the providers' output URLs)
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar

import aiohttp
from aiohttp import web

from adapters.emulators.faults import Endpoint, Fault, FaultKind, FaultPlan
from adapters.emulators.media import make_mp4
from adapters.emulators.recorder import RecordedRequest, Recorder
from adapters.emulators.tasks import Clock, EmulatedTask, Phase
from adapters.emulators.webhooks import WebhookDelivery, deliver

ADMIN_PREFIX = "/_emulator"


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

    def __init__(
        self,
        *,
        api_keys: Sequence[str] = ("emulator-key",),
        render_seconds: float = 0.2,
        clock: Clock = time.time,
        webhook_secret: str | None = None,
        queue_fraction: float = 0.25,
        webhook_tick_s: float = 0.02,
    ) -> None:
        self.api_keys = tuple(api_keys)
        self.render_seconds = render_seconds
        self.clock = clock
        self.webhook_secret = webhook_secret
        self.queue_fraction = queue_fraction
        self.webhook_tick_s = webhook_tick_s
        self.tasks: dict[str, EmulatedTask] = {}
        self.faults = FaultPlan()
        self.recorder = Recorder()
        self.webhooks: list[WebhookDelivery] = []
        self._session: aiohttp.ClientSession | None = None

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
            render_s=self.render_seconds,
            base_url=str(request.url.origin()),
            queue_fraction=self.queue_fraction,
            **fields,
        )
        fault = self.faults.take_task()
        if fault is not None and fault.kind == FaultKind.TASK_FAIL:
            task.fail_code = fault.code or self.task_fail_code
            task.fail_message = fault.message or f"emulated failure {task.fail_code}"
        elif fault is not None:
            task.never_finish = True
        self.tasks[task.id] = task
        return task

    def find_task(self, task_id: str) -> EmulatedTask | None:
        task = self.tasks.get(task_id)
        return None if task is None or task.deleted else task

    def phase(self, task: EmulatedTask) -> Phase:
        return task.phase(self.clock())

    def active_count(self) -> int:
        """Tasks not yet terminal: what provider concurrency limits count."""
        now = self.clock()
        return sum(1 for t in self.tasks.values() if not t.deleted and not t.phase(now).terminal)

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

    async def _lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        loop_task = asyncio.create_task(self._webhook_loop())
        yield
        loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop_task
        if self._session is not None:
            await self._session.close()

    # ---- the app ---------------------------------------------------------------------------
    def build_app(self) -> web.Application:
        """The shared app: middleware, admin routes and downloads. Provider modules add their routes."""
        app = web.Application(middlewares=[_emulate], client_max_size=32 * 1024 * 1024)
        app[EMULATOR_KEY] = self
        app.cleanup_ctx.append(self._lifecycle)
        app.router.add_get(ADMIN_PREFIX + "/media/{task_id}.mp4", _download, name="download")
        add_admin_routes(app)
        return app


EMULATOR_KEY = web.AppKey("emulator", ProviderEmulator)


def endpoint_of(request: web.Request) -> Endpoint | None:
    """The endpoint kind named by the matched route; None for admin routes."""
    name = request.match_info.route.name
    if name is None:
        return Endpoint.ANY  # an unknown path: recorded, so a test sees a wrong URL was called
    if name.startswith("admin"):
        return None
    return Endpoint(name.split(":")[0])


@web.middleware
async def _emulate(request: web.Request, handler: Any) -> web.StreamResponse:
    emulator = request.app[EMULATOR_KEY]
    endpoint = endpoint_of(request)
    if endpoint is None:
        response: web.StreamResponse = await handler(request)
        return response
    endpoint = await emulator.endpoint_for(request, endpoint)
    await emulator.recorder.record(request, endpoint)
    fault = emulator.faults.take_http(endpoint) if endpoint != Endpoint.ANY else None
    try:
        if fault is not None:
            early = await _fault_before(emulator, request, fault)
            if early is not None:
                return early
        if endpoint != Endpoint.DOWNLOAD:
            emulator.authenticate(request)
        response = await handler(request)
    except ProtocolError as error:
        response = emulator.error_response(error, error.headers)
    response.headers.update(emulator.extra_headers())
    if fault is not None:
        return _fault_after(request, fault, response)
    return response


async def _fault_before(
    emulator: ProviderEmulator, request: web.Request, fault: Fault
) -> web.StreamResponse | None:
    """Answer for a fault that replaces the handler; None to let the handler run."""
    if fault.kind == FaultKind.RATE_LIMIT:
        retry_after = str(max(0, math.ceil(fault.retry_after_s)))
        code = fault.code or emulator.rate_limit_code
        error = ProtocolError(429, code, fault.message or "Too many requests")
        return emulator.error_response(error, {"Retry-After": retry_after, **emulator.extra_headers()})
    if fault.kind in (FaultKind.SERVER_ERROR, FaultKind.HTTP_ERROR):
        default_status, default_code = (503, emulator.server_error_code)
        if fault.kind == FaultKind.HTTP_ERROR:
            default_status, default_code = (400, "BAD_REQUEST")
        status = fault.status or default_status
        error = ProtocolError(status, fault.code or default_code, fault.message or f"emulated {status}")
        return emulator.error_response(error, emulator.extra_headers())
    if fault.kind == FaultKind.SLOW:
        await asyncio.sleep(fault.delay_s)
    elif fault.kind == FaultKind.DROP:
        return _drop(request)
    return None


def _fault_after(request: web.Request, fault: Fault, response: web.StreamResponse) -> web.StreamResponse:
    """Spoil an answer the handler already produced (its side effects stand)."""
    if fault.kind == FaultKind.LOSE_ANSWER:
        return _drop(request)
    if fault.kind == FaultKind.MALFORMED:
        return web.Response(
            status=response.status, body=b'{"id": "truncated', content_type="application/json"
        )
    return response


def _drop(request: web.Request) -> web.Response:
    """Close the connection without an answer; the client sees a server disconnect."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=204)


async def _download(request: web.Request) -> web.Response:
    emulator = request.app[EMULATOR_KEY]
    task = emulator.find_task(request.match_info["task_id"])
    if task is None or emulator.phase(task) != Phase.SUCCEEDED:
        return web.Response(status=404, text="Not Found")
    body = make_mp4(task.width, task.height, task.duration_s)
    return web.Response(body=body, content_type="video/mp4")


def add_admin_routes(app: web.Application) -> None:
    """The control endpoints other processes use to set faults and read what happened."""
    faults = ADMIN_PREFIX + "/faults"
    app.router.add_get(faults, _list_faults, name="admin:faults")
    app.router.add_post(faults, _add_faults, name="admin:add-faults")
    app.router.add_delete(faults, _clear_faults, name="admin:clear-faults")
    app.router.add_get(ADMIN_PREFIX + "/requests", _list_requests, name="admin:requests")
    app.router.add_delete(ADMIN_PREFIX + "/requests", _clear_requests, name="admin:clear-requests")
    app.router.add_get(ADMIN_PREFIX + "/webhooks", _list_webhooks, name="admin:webhooks")
    app.router.add_get(ADMIN_PREFIX + "/tasks", _list_tasks, name="admin:tasks")


async def _list_faults(request: web.Request) -> web.Response:
    return web.json_response([f.to_json() for f in request.app[EMULATOR_KEY].faults.pending])


async def _add_faults(request: web.Request) -> web.Response:
    emulator = request.app[EMULATOR_KEY]
    try:
        data = await request.json()
        items = data if isinstance(data, list) else [data]
        faults = [Fault.from_json(item) for item in items]
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    for fault in faults:
        emulator.faults.add(fault)
    return web.json_response([f.to_json() for f in faults], status=201)


async def _clear_faults(request: web.Request) -> web.Response:
    request.app[EMULATOR_KEY].faults.clear()
    return web.Response(status=204)


async def _list_requests(request: web.Request) -> web.Response:
    return web.json_response([r.summary() for r in request.app[EMULATOR_KEY].requests])


async def _clear_requests(request: web.Request) -> web.Response:
    request.app[EMULATOR_KEY].recorder.clear()
    return web.Response(status=204)


async def _list_webhooks(request: web.Request) -> web.Response:
    deliveries = request.app[EMULATOR_KEY].webhooks
    return web.json_response(
        [{"task_id": d.task_id, "url": d.url, "status": d.status, "error": d.error} for d in deliveries]
    )


async def _list_tasks(request: web.Request) -> web.Response:
    emulator = request.app[EMULATOR_KEY]
    return web.json_response(
        [
            {"id": t.id, "model": t.model, "phase": emulator.phase(t).value, "deleted": t.deleted}
            for t in emulator.tasks.values()
        ]
    )


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
