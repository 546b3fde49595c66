"""`GET /metrics`: the Prometheus text format, with the store-backed gauges read at scrape time."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from broker.jobs.provider_status import refresh_provider_gauges
from broker.observability.metrics import METRICS, refresh_gauges

routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    await refresh_gauges(request.app)
    await refresh_provider_gauges(request.app)
    response = web.Response(body=request.app[METRICS].render())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response
