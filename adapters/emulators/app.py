"""The shared aiohttp app under every provider emulator: the middleware that records, injects faults
and authenticates, and the download route for outputs.

Route names say the endpoint kind ("submit:...", "status", "cancel", "result", "download"); the
middleware records every provider request under that kind, then applies the fault plan (so a 429 or
a dropped connection comes before auth, as from a load balancer), then authenticates, then runs the
handler. Admin routes (admin.py) skip all of that.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from aiohttp import web

from adapters.emulators.admin import ADMIN_PREFIX, add_admin_routes
from adapters.emulators.emulator import EMULATOR_KEY, ProtocolError, ProviderEmulator
from adapters.emulators.faults import Endpoint, Fault, FaultKind
from adapters.emulators.media import clip
from adapters.emulators.tasks import Phase

CLIENT_MAX_SIZE = 32 * 1024 * 1024  # room for Runway's 5 MB data URIs and multipart uploads


def base_app(emulator: ProviderEmulator) -> web.Application:
    """The shared app: middleware, admin routes and downloads. Provider modules add their routes."""
    app = web.Application(middlewares=[_emulate], client_max_size=CLIENT_MAX_SIZE)
    app[EMULATOR_KEY] = emulator
    app.cleanup_ctx.append(emulator.lifecycle)
    app.router.add_get(ADMIN_PREFIX + "/media/{task_id}.mp4", _download, name="download")
    add_admin_routes(app)
    return app


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
    body = clip(task.width, task.height, task.duration_s, emulator.delivery)
    return web.Response(body=body, content_type="video/mp4")
