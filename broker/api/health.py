"""Liveness and readiness."""

from __future__ import annotations

from aiohttp import web

from broker.api.common import json_response
from broker.appkeys import RUNNER, STORE
from broker.errors import NotReady
from broker.store.durability import durability_problem

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
    body: dict[str, object] = {"status": "ready", "runner_restarts": runner.restarts}
    # Ready all the same (taking every replica out would stop the service), but said where it is checked.
    if (problem := await durability_problem(request.app[STORE])) is not None:
        body["warnings"] = [problem]
    return json_response(body)
