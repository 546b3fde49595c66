"""`/v1/jobs`: submit, read, list, cancel, and download the output (what a submit and a cancel decide
is `broker.jobs.acceptance`)."""

from __future__ import annotations

from aiohttp import web

from broker.api.artifact_responses import serve_artifact
from broker.api.common import identity_of, json_response
from broker.api.intake import read_intake
from broker.appkeys import ACCEPTANCE, CLOCK, DEPLOYMENT, STORE
from broker.auth import Identity
from broker.errors import Conflict, Forbidden, InvalidRequest, NotFound
from broker.jobs.retention import expired_message
from broker.schema import JobStatus
from broker.store import JobRecord
from broker.store.artifacts import output_key, poster_key

IDEMPOTENCY_KEY_MAX = 255
routes = web.RouteTableDef()


def job_body(record: JobRecord) -> dict[str, object]:
    return record.job.model_dump(mode="json")


def team_of(identity: Identity) -> str:
    if identity.team is None:
        raise Forbidden("jobs are submitted with a team key, not the admin key")
    return identity.team


async def visible_job(request: web.Request, identity: Identity, job_id: str | None = None) -> JobRecord:
    """The job named in the path (or `job_id`), if the caller may see it; another team's job is a 404."""
    job_id = job_id or request.match_info["job_id"]
    record = await request.app[STORE].get_job(job_id)
    if record is None or (not identity.admin and record.job.team != identity.team):
        config = request.app[DEPLOYMENT].config
        days = config.retention_for(identity.team) if identity.team else config.retention_days
        raise NotFound(expired_message(job_id, days, request.app[CLOCK]()) or "no such job")
    return record


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX:
        raise InvalidRequest(f"Idempotency-Key must be 1..{IDEMPOTENCY_KEY_MAX} characters")
    return key


@routes.post("/v1/jobs")
async def submit_job(request: web.Request) -> web.Response:
    identity = identity_of(request)
    team = team_of(identity)
    key = idempotency_key(request)
    intake = await read_intake(request)
    record, created = await request.app[ACCEPTANCE].submit(
        team,
        intake.request,
        request_hash=intake.request_hash,
        upload_bytes=intake.upload_bytes,
        idempotency_key=key,
    )
    if not created:
        return json_response(job_body(record), status=200)
    return json_response(job_body(record), status=202, headers={"Location": f"/v1/jobs/{record.id}"})


@routes.get("/v1/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    identity = identity_of(request)
    query = request.query
    try:
        status = JobStatus(query["status"]) if "status" in query else None
    except ValueError:
        raise InvalidRequest(f"status: must be one of {', '.join(s.value for s in JobStatus)}") from None
    try:
        limit = int(query.get("limit", "50"))
    except ValueError:
        raise InvalidRequest("limit: must be an integer") from None
    if not 1 <= limit <= 200:
        raise InvalidRequest("limit: must be between 1 and 200")
    team = None if identity.admin else identity.team
    records, cursor = await request.app[STORE].list_jobs(
        team=team, status=status, limit=limit, cursor=query.get("cursor")
    )
    return json_response({"jobs": [job_body(r) for r in records], "next_cursor": cursor})


@routes.get("/v1/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    record = await visible_job(request, identity_of(request))
    return json_response(job_body(record))


@routes.delete("/v1/jobs/{job_id}")
async def cancel_job(request: web.Request) -> web.Response:
    record = await visible_job(request, identity_of(request))
    stored = await request.app[ACCEPTANCE].cancel(record)
    return json_response(job_body(stored), status=202)


@routes.get("/v1/jobs/{job_id}/output")
async def get_output(request: web.Request) -> web.StreamResponse:
    record = await visible_job(request, identity_of(request))
    _check_has_output(record)
    return await serve_artifact(request, output_key(record.id), "video/mp4")


@routes.get("/v1/jobs/{job_id}/poster")
async def get_poster(request: web.Request) -> web.StreamResponse:
    """The first frame of the job's output, as a JPEG (outputs stored before posters were made have none:
    a 404)."""
    record = await visible_job(request, identity_of(request))
    _check_has_output(record)
    return await serve_artifact(request, poster_key(record.id), "image/jpeg")


def _check_has_output(record: JobRecord) -> None:
    if record.status is not JobStatus.SUCCEEDED:
        if record.status.terminal:
            raise Conflict(f"the job ended {record.status.value}: it has no output")
        raise Conflict(f"the job has no output yet (status {record.status.value})")
    if record.job.output is None:  # a succeeded job loses its output only by DELETE .../output
        raise NotFound("the job's output was deleted on request")
