"""`POST /v1/callbacks/{provider}`: provider webhooks, verified by the provider's adapter.

A webhook only wakes the poll of its task: the provider's status endpoint stays the one source of
truth, so a forged or replayed webhook can at most cause one extra status read.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from broker.api.common import json_response
from broker.api.intake import JSON_MAX_DEPTH, too_deep
from broker.appkeys import ADAPTERS, RUNNER
from broker.errors import InvalidRequest, NotFound

log = structlog.get_logger("broker.callbacks")
routes = web.RouteTableDef()


@routes.post("/v1/callbacks/{provider}")
async def provider_callback(request: web.Request) -> web.Response:
    provider = request.match_info["provider"]
    adapter = request.app[ADAPTERS].get(provider)
    if adapter is None:
        raise NotFound(f"no configured provider named {provider!r}")
    body = await request.read()
    if too_deep(body) is not None:  # before any adapter's JSON parser can recurse on it
        raise InvalidRequest(f"the body nests deeper than {JSON_MAX_DEPTH} levels")
    event = adapter.parse_webhook(request.headers, body)
    log.info(
        "provider_webhook",
        provider=provider,
        provider_job_id=event.provider_job_id,
        state=event.status.state.value,
    )
    await request.app[RUNNER].notify(provider, event.provider_job_id)
    return json_response({"received": True})
