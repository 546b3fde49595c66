"""`GET /v1/providers`: each provider's circuit, capacity in use, queue, latency and error rate."""

from __future__ import annotations

from aiohttp import web

from broker.api.common import identity_of, json_response
from broker.api.provider_status import provider_statuses

routes = web.RouteTableDef()


@routes.get("/v1/providers")
async def list_providers(request: web.Request) -> web.Response:
    """Any valid key may read it: provider health is the same for every team. A team key sees its own
    team's row of each queue (and the totals); the admin key every team's."""
    identity = identity_of(request)
    team = None if identity.admin else identity.team
    statuses = await provider_statuses(request.app)
    return json_response({"providers": [status.to_json(team) for status in statuses]})
