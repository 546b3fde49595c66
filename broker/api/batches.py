"""`/v1/batches`: submit up to 1,000 jobs at once (all or none), read the batch, its manifest, and
cancel what has not ended (what a batch submit and cancel decide is `broker.jobs.batches`)."""

from __future__ import annotations

from aiohttp import web

from broker.api.batch_views import batch_body, item_error, manifest_body, manifest_csv, parse_batch
from broker.api.common import identity_of, json_response
from broker.api.intake import deployment_problems
from broker.api.jobs import idempotency_key, team_of
from broker.api.offload import in_process
from broker.appkeys import BATCHES, CLOCK, DEPLOYMENT, STORE
from broker.errors import InvalidRequest, NotFound, UnsupportedMediaType
from broker.jobs.retention import expired_batch_message
from broker.store.batches import BatchRecord

routes = web.RouteTableDef()


async def visible_batch(request: web.Request) -> BatchRecord:
    """The batch in the path, if the caller may see it; another team's batch is a 404, and so is an
    expired one, saying so."""
    identity = identity_of(request)
    batch_id = request.match_info["batch_id"]
    batch = await request.app[STORE].get_batch(batch_id)
    if batch is None or (not identity.admin and batch.team != identity.team):
        config = request.app[DEPLOYMENT].config
        days = config.retention_for(identity.team) if identity.team else config.retention_days
        raise NotFound(expired_batch_message(batch_id, days, request.app[CLOCK]()) or "no such batch")
    return batch


@routes.post("/v1/batches")
async def submit_batch(request: web.Request) -> web.Response:
    team = team_of(identity_of(request))
    key = idempotency_key(request)
    if request.content_type != "application/json":
        raise UnsupportedMediaType('send application/json: {"items": [job, ...], "metadata": {...}}')
    raw = await request.read()
    items, metadata, digest = await in_process(request.app, len(raw), parse_batch, raw)
    for index, item in enumerate(items):
        if problems := deployment_problems(request.app, item):
            raise item_error(index, InvalidRequest("invalid request", details=problems))
    batch, created = await request.app[BATCHES].submit(
        team, items, request_hash=digest, metadata=metadata, idempotency_key=key
    )
    body = batch_body(batch, await request.app[STORE].get_jobs(batch.job_ids))
    if not created:
        return json_response(body, status=200)
    return json_response(body, status=202, headers={"Location": f"/v1/batches/{batch.id}"})


@routes.get("/v1/batches/{batch_id}")
async def get_batch(request: web.Request) -> web.Response:
    batch = await visible_batch(request)
    return json_response(batch_body(batch, await request.app[STORE].get_jobs(batch.job_ids)))


@routes.get("/v1/batches/{batch_id}/manifest")
async def get_manifest(request: web.Request) -> web.Response:
    batch = await visible_batch(request)
    form = request.query.get("format", "json")
    if form not in ("json", "csv"):
        raise InvalidRequest("format: must be json or csv")
    manifest = manifest_body(batch, await request.app[STORE].get_jobs(batch.job_ids))
    if form == "csv":
        return web.Response(text=manifest_csv(manifest), content_type="text/csv")
    return json_response(manifest)


@routes.delete("/v1/batches/{batch_id}")
async def cancel_batch(request: web.Request) -> web.Response:
    batch = await visible_batch(request)
    before = await request.app[STORE].get_jobs(batch.job_ids)
    after = await request.app[BATCHES].cancel(batch)
    body = batch_body(batch, after)
    body["cancel_requested"] = sum(1 for r in before if r is not None and not r.status.terminal)
    return json_response(body, status=202)
