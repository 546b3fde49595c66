"""`GET /v1/providers`: each provider's circuit, capacity in use, latency and error rate."""

from __future__ import annotations

from aiohttp import web

from broker.api.common import identity_of, json_response
from broker.api.provider_status import provider_statuses

routes = web.RouteTableDef()


@routes.get("/v1/providers")
async def list_providers(request: web.Request) -> web.Response:
    """Any valid key may read it: provider health is the same for every team."""
    identity_of(request)
    return json_response({"providers": [status.to_json() for status in await provider_statuses(request.app)]})
