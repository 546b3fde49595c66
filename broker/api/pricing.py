"""`GET /v1/pricing` and `POST /v1/quotes`."""

from __future__ import annotations

from aiohttp import web

from broker.api.common import identity_of, json_response
from broker.api.intake import read_intake
from broker.appkeys import DEPLOYMENT, ROUTER, SETTINGS
from broker.errors import Forbidden
from pricing.table import pricing_table

routes = web.RouteTableDef()


@routes.get("/v1/pricing")
async def get_pricing(request: web.Request) -> web.Response:
    """Every route's price in its own unit and in USD for the durations it supports, and the size
    limits of a job's body and uploaded image (so a client can refuse a file before sending it)."""
    identity_of(request)
    settings = request.app[SETTINGS]
    limits = {"max_image_bytes": settings.max_image_bytes, "max_body_bytes": settings.max_body_bytes}
    return json_response({**pricing_table(request.app[DEPLOYMENT].config.routes), "limits": limits})


@routes.post("/v1/quotes")
async def post_quote(request: web.Request) -> web.Response:
    """Quote a job body for the caller's team without creating anything."""
    identity = identity_of(request)
    if identity.team is None:
        raise Forbidden("quotes are for a team: use a team key")
    intake = await read_intake(request)
    router = request.app[ROUTER]
    quote = await router.quote(identity.team, intake.request, upload_bytes=intake.upload_bytes)
    return json_response(quote.to_json())
