"""`DELETE /v1/jobs/{job_id}/output`: remove a finished job's video and poster on request (the owning
team's key or the admin key), keeping its books: the job record, its attempts and their costs stay,
and so do the cost reports and reconciliation that read them. The job's `output` becomes null, and
`GET .../output` then answers 404 saying it was deleted. Deleting again is a no-op (204 both times).
"""

from __future__ import annotations

import structlog
from aiohttp import web

from broker.api.common import identity_of
from broker.api.jobs import visible_job
from broker.appkeys import ARTIFACTS, STORE
from broker.errors import Conflict
from broker.schema import JobStatus
from broker.store import JobRecord
from broker.store.artifacts import output_key, poster_key

log = structlog.get_logger("broker.api")
routes = web.RouteTableDef()
WRITE_TRIES = 5  # the record may move under us (a team webhook's delivery status); compare-and-set again


@routes.delete("/v1/jobs/{job_id}/output")
async def delete_output(request: web.Request) -> web.Response:
    identity = identity_of(request)
    record = await visible_job(request, identity)
    if record.status is not JobStatus.SUCCEEDED:
        raise Conflict(f"the job has no output to delete (status {record.status.value})")
    # The files first: a record that still names an output whose files are gone answers 404 on download,
    # whereas files left behind a record that says none would never be found to delete again.
    artifacts = request.app[ARTIFACTS]
    await artifacts.delete(output_key(record.id))
    await artifacts.delete(poster_key(record.id))
    await _forget_output(request, record)
    log.info(
        "output_deleted",
        job_id=record.id,
        team=record.job.team,
        by="admin" if identity.admin else identity.team,
    )
    return web.Response(status=204)


async def _forget_output(request: web.Request, record: JobRecord | None) -> None:
    store = request.app[STORE]
    for _ in range(WRITE_TRIES):
        if record is None or record.job.output is None:
            return
        if await store.replace_job(record.evolve(output=None)) is not None:
            return
        record = await store.get_job(record.id)
    raise Conflict("the job kept changing while its output was deleted; the files are gone, try again")
