"""`/v1/videos`: OpenAI's videos API on the broker's jobs, so `OpenAI(api_key=team_key, base_url=".../v1")`
works as it is: `videos.create`, `create_and_poll`, `retrieve`, `list`, `download_content`, `delete`.

A video is a job: the same id, budgets, policies, quotes and books as `/v1/jobs` (submit and cancel go
through `broker.jobs.acceptance`), shown in OpenAI's shapes (`broker.api.video_views`). Errors answer
in OpenAI's body, `{"error": {"message", "type", "param", "code"}}`, translated here from the broker's
errors, with these statuses where OpenAI clients expect another than `/v1/jobs` gives:

- over the team's budget: 429 `insufficient_quota` (what OpenAI answers for a spent quota, so code
  written for OpenAI handles it; `x-should-retry: false` keeps the SDK from retrying what only a new
  budget window or a policy edit can fix) with the estimate and what remains in the message;
- no route can make the video: 400 (OpenAI's answer to parameters it cannot serve) with the reasons.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from aiohttp import web

from broker.api.artifact_responses import serve_artifact
from broker.api.common import identity_of, json_response
from broker.api.jobs import idempotency_key, team_of, visible_job
from broker.api.middleware import status_for
from broker.api.video_intake import bad, read_video_request
from broker.api.video_views import Catalog, deleted_body, error_type, page_body, video_body
from broker.appkeys import ACCEPTANCE, CLOCK, DEPLOYMENT, STORE
from broker.auth import Identity
from broker.errors import BudgetExceeded, Conflict, NoFeasibleRoute, NotFound
from broker.schema import BrokerError, JobStatus
from broker.store import JobRecord
from broker.store.artifacts import output_key, poster_key

routes = web.RouteTableDef()
log = structlog.get_logger("broker.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LIMIT_DEFAULT, LIMIT_MAX = 20, 100
_VARIANTS = ("video", "thumbnail", "spritesheet")
# When a client that follows `openai-poll-after-ms` (the SDK's `poll`) should look again.
_POLL_AFTER_MS = (250, 10_000)


def _param(details: Any) -> str | None:
    if isinstance(details, list) and details and isinstance(details[0], dict):
        field = details[0].get("field")
        return str(field) if field is not None else None
    return None


def _message(exc: BrokerError) -> str:
    """The error's message, with the figures or reasons a caller needs to act on it."""
    details = exc.details if isinstance(exc.details, dict) else {}
    if isinstance(exc, BudgetExceeded) and isinstance(details.get("remaining_usd"), dict):
        left = ", ".join(f"{window}: {usd} USD" for window, usd in details["remaining_usd"].items())
        return f"{exc.message}; remaining: {left}"
    if isinstance(exc, NoFeasibleRoute) and isinstance(details.get("rejected"), list):
        reasons = "; ".join(
            f"{r.get('provider')}/{r.get('model')}: {', '.join(r.get('reasons', []))}"
            for r in details["rejected"][:8]
            if isinstance(r, dict)
        )
        return f"{exc.message}: {reasons}" if reasons else exc.message
    return exc.message


def openai_error(
    status: int, message: str, code: str, param: str | None = None, details: Any = None
) -> web.Response:
    body = {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}
    if details is not None:
        body["error"]["details"] = details
    # The SDK retries 409 and 429 by default; none of these is fixed by asking again at once.
    headers = {"x-should-retry": "false"} if status < 500 else None
    return json_response(body, status=status, headers=headers)


def speaks_openai(handler: Handler) -> Handler:
    """Answer the broker's errors in OpenAI's error body, with the statuses OpenAI clients expect."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except BrokerError as exc:
            if isinstance(exc, BudgetExceeded):
                status, code = 429, "insufficient_quota"
            else:
                status = 400 if isinstance(exc, NoFeasibleRoute) else status_for(type(exc))
                code = "invalid_api_key" if status == 401 else exc.code.value
            if status >= 500:
                log.warning("request_failed", code=exc.code.value, error=exc.message, path=request.path)
            return openai_error(status, _message(exc), code, _param(exc.details), exc.details)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            message = exc.reason if exc.status != 413 else "the request body is larger than the limit"
            return openai_error(exc.status, message, "invalid_request")

    return wrapped


def _catalog(app: web.Application) -> Catalog:
    return Catalog.of(app[DEPLOYMENT].config.routes)


def _poll_after(request: web.Request, record: JobRecord) -> dict[str, str]:
    """`openai-poll-after-ms`: how long until the job's next step, for clients that follow it."""
    if record.status.terminal:
        return {}
    wait_ms = ((record.due_at or 0.0) - request.app[CLOCK]()) * 1000
    low, high = _POLL_AFTER_MS
    return {"openai-poll-after-ms": str(int(min(high, max(low, wait_ms))))}


def _about_pinned(exc: NoFeasibleRoute, models: list[str] | None) -> NoFeasibleRoute:
    """With the models pinned, only their routes' reasons: the others were left out on purpose."""
    rejected = exc.details.get("rejected") if isinstance(exc.details, dict) else None
    if not models or not isinstance(rejected, list):
        return exc
    names = set(models)
    pinned = [
        r
        for r in rejected
        if isinstance(r, dict) and ({f"{r.get('provider')}/{r.get('model')}", r.get("model")} & names)
    ]
    return NoFeasibleRoute(exc.message, details={**exc.details, "rejected": pinned}) if pinned else exc


@routes.post("/v1/videos")
@speaks_openai
async def create_video(request: web.Request) -> web.StreamResponse:
    team = team_of(identity_of(request))
    key = idempotency_key(request)
    intake = await read_video_request(request, _catalog(request.app))
    try:
        record, _ = await request.app[ACCEPTANCE].submit(
            team,
            intake.request,
            request_hash=intake.request_hash,
            upload_bytes=intake.upload_bytes,
            idempotency_key=key,
        )
    except NoFeasibleRoute as exc:
        raise _about_pinned(exc, intake.request.constraints.models) from None
    return json_response(video_body(record), headers=_poll_after(request, record))


@routes.get("/v1/videos/{job_id}")
@speaks_openai
async def get_video(request: web.Request) -> web.StreamResponse:
    record = await visible_job(request, identity_of(request))
    return json_response(video_body(record), headers=_poll_after(request, record))


def _limit(request: web.Request) -> int:
    text = request.query.get("limit", str(LIMIT_DEFAULT))
    if not text.isdigit() or not 1 <= int(text) <= LIMIT_MAX:
        raise bad("limit", f"must be a whole number from 1 to {LIMIT_MAX}")
    return int(text)


async def _oldest_first(
    request: web.Request, identity: Identity, after: str | None, limit: int
) -> tuple[list[JobRecord], bool]:
    """A page in creation order: the jobs created since `after` (the store lists newest first)."""
    since = datetime(1970, 1, 1, tzinfo=UTC)
    if after is not None:
        try:
            since = (await visible_job(request, identity, after)).job.created_at
        except NotFound:
            raise bad(
                "after", f"no video {after!r}: give the id of the last video of the previous page"
            ) from None
    until = datetime.fromtimestamp(request.app[CLOCK](), UTC) + timedelta(days=1)
    team = None if identity.admin else identity.team
    found = await request.app[STORE].jobs_created_between(since, until, team=team)
    newer = sorted((r for r in found if after is None or r.id > after), key=lambda r: r.id)
    return newer[:limit], len(newer) > limit


@routes.get("/v1/videos")
@speaks_openai
async def list_videos(request: web.Request) -> web.StreamResponse:
    identity = identity_of(request)
    limit = _limit(request)
    order = request.query.get("order", "desc")
    after = request.query.get("after") or None
    if order not in ("asc", "desc"):
        raise bad("order", "must be asc or desc")
    if after is not None and len(after) > 128:
        raise bad("after", "not a video id")
    if order == "asc":
        records, has_more = await _oldest_first(request, identity, after, limit)
    else:
        team = None if identity.admin else identity.team
        records, cursor = await request.app[STORE].list_jobs(team=team, limit=limit, cursor=after)
        has_more = cursor is not None
    return json_response(page_body(records, has_more))


@routes.get("/v1/videos/{job_id}/content")
@speaks_openai
async def get_video_content(request: web.Request) -> web.StreamResponse:
    record = await visible_job(request, identity_of(request))
    variant = request.query.get("variant", "video")
    if variant not in _VARIANTS:
        raise bad("variant", f"must be one of {', '.join(_VARIANTS)}")
    if record.status is not JobStatus.SUCCEEDED:
        raise Conflict(f"the video has no content yet (status {video_body(record)['status']})")
    if record.job.output is None:  # a succeeded job loses its output only by DELETE /v1/jobs/{id}/output
        raise NotFound("the video's content was deleted on request")
    if variant == "spritesheet":
        raise NotFound("this broker makes no spritesheets; ask for variant=video or variant=thumbnail")
    if variant == "thumbnail":  # the poster stored with the output: its first frame, as a JPEG
        return await serve_artifact(request, poster_key(record.id), "image/jpeg")
    return await serve_artifact(request, output_key(record.id), "video/mp4")


@routes.delete("/v1/videos/{job_id}")
@speaks_openai
async def delete_video(request: web.Request) -> web.StreamResponse:
    """Cancel the video's job (also at its provider); a finished one is kept for the books: deleted false."""
    record = await visible_job(request, identity_of(request))
    if record.status is JobStatus.CANCELLED:
        return json_response(deleted_body(record, True, "the video was already cancelled"))
    if record.status.terminal:
        message = (
            f"the video already {video_body(record)['status']}; the broker keeps finished videos and their"
            " jobs for the team's books"
        )
        return json_response(deleted_body(record, False, message))
    try:
        stored = await request.app[ACCEPTANCE].cancel(record)
    except Conflict:  # it ended while we asked
        fresh = await request.app[STORE].get_job(record.id)
        ended = fresh.status if fresh is not None else record.status
        cancelled = ended is JobStatus.CANCELLED
        return json_response(
            deleted_body(fresh or record, cancelled, f"the video already ended: {ended.value}")
        )
    return json_response(deleted_body(stored, True, "cancelled; a running render is stopped at its provider"))
