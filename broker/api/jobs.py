"""`/v1/jobs`: submit, read, list, cancel, and download the output."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from aiohttp import web

from broker.api.common import identity_of, json_response
from broker.api.intake import Intake, read_intake
from broker.appkeys import ARTIFACTS, OBSERVERS, RUNNER, STORE
from broker.auth import Identity
from broker.errors import Conflict, Forbidden, InvalidRequest, NoFeasibleRoute, NotFound
from broker.jobs import budgets
from broker.jobs.routing import current_policy, quote_for
from broker.observability.events import notify
from broker.schema import Job, JobStatus, RouteRef
from broker.store import IdempotencyConflict, JobRecord, Store, StoreUnavailable

IDEMPOTENCY_KEY_MAX = 255
routes = web.RouteTableDef()


def new_id(prefix: str, at: datetime) -> str:
    """A unique id that sorts by creation time: milliseconds in hex, then randomness."""
    return f"{prefix}_{int(at.timestamp() * 1000):012x}{secrets.token_hex(5)}"


def job_body(record: JobRecord) -> dict[str, object]:
    return record.job.model_dump(mode="json")


def _team_of(identity: Identity) -> str:
    if identity.team is None:
        raise Forbidden("jobs are submitted with a team key, not the admin key")
    return identity.team


async def visible_job(request: web.Request, identity: Identity) -> JobRecord:
    """The job named in the path, if the caller may see it; another team's job is a 404."""
    record = await request.app[STORE].get_job(request.match_info["job_id"])
    if record is None or (not identity.admin and record.job.team != identity.team):
        raise NotFound("no such job")
    return record


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX:
        raise InvalidRequest(f"Idempotency-Key must be 1..{IDEMPOTENCY_KEY_MAX} characters")
    return key


async def _replay(store: Store, team: str, key: str, intake: Intake) -> web.Response | None:
    """The job a repeated Idempotency-Key already made (checked before quoting and reserving, so a
    retry gets its job even when the budget or the routes have changed since); 409 for another body.
    Two first submits racing each other are settled by the store's create."""
    existing = await store.find_idempotent_job(team, key)
    if existing is None:
        return None
    if existing.request_hash != intake.request_hash:
        raise IdempotencyConflict(
            "this Idempotency-Key was used with a different request body", details={"job_id": existing.id}
        )
    return json_response(job_body(existing), status=200)


@routes.post("/v1/jobs")
async def submit_job(request: web.Request) -> web.Response:
    identity = identity_of(request)
    team = _team_of(identity)
    idempotency_key = _idempotency_key(request)
    intake = await read_intake(request)
    app, store = request.app, request.app[STORE]
    if idempotency_key is not None and (replay := await _replay(store, team, idempotency_key, intake)):
        return replay
    policy = await current_policy(app, team)
    quote = await quote_for(app, team, intake.request, upload_bytes=intake.upload_bytes, policy=policy)
    if quote.chosen is None:
        raise NoFeasibleRoute(
            "no route can serve this job", details={"rejected": [r.to_json() for r in quote.rejected]}
        )
    now = datetime.now(UTC)
    estimate = quote.chosen.cost
    job = Job(
        id=new_id("job", now),
        team=team,
        status=JobStatus.QUEUED,
        request=intake.request,
        route=RouteRef(
            provider=quote.chosen.route.provider,
            model=quote.chosen.route.model,
            estimated_cost_usd=str(estimate),
            unpriced=quote.chosen.unpriced,
        ),
        estimated_cost_usd=str(estimate),
        created_at=now,
        updated_at=now,
    )
    record = JobRecord(
        job=job,
        request_hash=intake.request_hash,
        idempotency_key=idempotency_key,
        baseline_cost_usd=str(quote.baseline.cost) if quote.baseline else None,
        policy=policy.model_dump(mode="json", exclude_none=True),
        reserved_usd=str(estimate),
    )
    windows = budgets.budget_windows(team, policy, now)
    await budgets.reserve(store, job.id, estimate, windows)
    try:
        stored, created = await store.create_job(record)
    except StoreUnavailable:
        # A create that timed out may still have made the job (Redis): releasing its hold now could
        # let it run unreserved. The budget sweeper settles it once the job ends, or to 0 if none exists.
        raise
    except BaseException:
        await store.settle_budget(job.id, 0)
        raise
    if not created:
        await store.settle_budget(job.id, 0)  # a replay: the first job holds the reservation
        return json_response(job_body(stored), status=200)
    notify(app[OBSERVERS], None, stored)
    app[RUNNER].wake()
    return json_response(job_body(stored), status=202, headers={"Location": f"/v1/jobs/{stored.id}"})


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


async def request_cancel(store: Store, record: JobRecord) -> JobRecord:
    """Cancel a job: at once if no worker holds it and it has not been submitted, else flag it."""
    while True:
        if record.status.terminal:
            raise Conflict(f"the job already ended: {record.status.value}")
        now = datetime.now(UTC)
        untouched = not record.job.attempts and record.lease_owner is None
        if untouched:
            changed = record.evolve(status=JobStatus.CANCELLED, updated_at=now, completed_at=now)
        else:
            # Due now: a job waiting for its next poll is cancelled at once, not at that poll.
            changed = record.model_copy(update={"cancel_requested": True, "due_at": None})
        stored = await store.replace_job(changed)
        if stored is not None:
            if untouched:
                await store.settle_budget(record.id, 0)
            return stored
        fresh = await store.get_job(record.id)
        if fresh is None:
            raise NotFound("no such job")
        record = fresh


@routes.delete("/v1/jobs/{job_id}")
async def cancel_job(request: web.Request) -> web.Response:
    record = await visible_job(request, identity_of(request))
    stored = await request_cancel(request.app[STORE], record)
    notify(request.app[OBSERVERS], record, stored)
    request.app[RUNNER].wake()
    return json_response(job_body(stored), status=202)


@routes.get("/v1/jobs/{job_id}/output")
async def get_output(request: web.Request) -> web.StreamResponse:
    record = await visible_job(request, identity_of(request))
    if record.status is not JobStatus.SUCCEEDED or record.job.output is None:
        raise Conflict(f"the job has no output yet (status {record.status.value})")
    path = request.app[ARTIFACTS].output_path(record.id)
    if not path.exists():
        raise NotFound("the job's output file is missing from the artifact store")
    return web.FileResponse(path, headers={"Content-Type": "video/mp4"})
