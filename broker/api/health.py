"""Liveness and readiness."""

from __future__ import annotations

from aiohttp import web

from broker.api.common import json_response
from broker.appkeys import RUNNER, STORE
from broker.errors import NotReady

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    await request.app[STORE].ping()
    runner = request.app[RUNNER]
    if not runner.running:
        raise NotReady("the job runner is not running")
    # A loop that died was restarted (and logged); say how often, so a flapping runner is visible.
    return json_response({"status": "ready", "runner_restarts": runner.restarts})
