"""`GET /v1/inputs/{job_id}?expires=&sig=`: a running job's uploaded or `data:` image, for a provider
that takes images only as URLs. No auth header: the signature is the key (see `broker.jobs.hosted_inputs`).

A bad, missing or expired signature is a 403 before anything is looked up, so the URL space reveals
nothing; a signed URL of a job that has ended (its input released) or has no such image is a 404.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from adapters.images import InvalidImage, check_image
from broker.appkeys import ARTIFACTS, CLOCK, SETTINGS, STORE
from broker.errors import Forbidden, NotFound
from broker.jobs.hosted_inputs import InputHosting, verify
from broker.schema import JobRequest, decode_data_uri
from broker.store.artifacts import ArtifactStore

routes = web.RouteTableDef()


async def _image(request: JobRequest, artifacts: ArtifactStore) -> tuple[str, bytes] | None:
    """(content type, bytes) of the job's hosted image, or None when it has none to host (the image
    is checked and a data URI decoded on a worker thread)."""
    if request.image_upload is not None:
        data = await artifacts.read_upload(request.image_upload)
        return (await asyncio.to_thread(check_image, data)).content_type, data
    if request.image_url is not None and request.image_url.startswith("data:"):
        return await asyncio.to_thread(decode_data_uri, request.image_url)
    return None


@routes.get("/v1/inputs/{job_id}")
async def get_input(request: web.Request) -> web.Response:
    """Serve a hosted input to whoever holds its signed URL."""
    app = request.app
    hosting = InputHosting.from_settings(app[SETTINGS])
    if hosting is None:
        raise NotFound("this broker hosts no inputs (BROKER_PUBLIC_URL or BROKER_INPUT_SIGNING_SECRET unset)")
    job_id = request.match_info["job_id"]
    refused = verify(
        job_id, request.query.get("expires"), request.query.get("sig"), hosting.secret, app[CLOCK]()
    )
    if refused is not None:
        raise Forbidden(refused)
    record = await app[STORE].get_job(job_id)
    if record is None or record.job.status.terminal:
        raise NotFound("no input is hosted under this id (its job has ended)")
    try:
        found = await _image(record.job.request, app[ARTIFACTS])
    except (
        OSError,
        ValueError,
        InvalidImage,
    ) as exc:  # the upload was removed, or the stored data URI is bad
        raise NotFound("the job's input is no longer available") from exc
    if found is None:
        raise NotFound("the job has no uploaded or data: image to host")
    content_type, data = found
    return web.Response(body=data, content_type=content_type, headers={"Cache-Control": "private, no-store"})
