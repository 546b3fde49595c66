"""Answering with an artifact (a job's output or poster): a short-lived presigned redirect where the
artifact store signs URLs (S3), the file where it keeps files, a stream otherwise.

`serve_artifact(request, poster_key(job_id), "image/jpeg")` is how any handler hands out a job's
poster (the `thumbnail` of a video) once it has checked the caller may see the job.
"""

from __future__ import annotations

from aiohttp import web

from broker.appkeys import ARTIFACTS
from broker.errors import NotFound

# Long enough for a client to follow the redirect and start a download (S3 checks the expiry when the
# request starts, not while the body flows); short enough that a leaked URL is soon useless.
SIGNED_URL_S = 300


async def serve_artifact(request: web.Request, key: str, content_type: str) -> web.StreamResponse:
    """The artifact under `key`, or a 404 that says it is missing from the artifact store."""
    artifacts = request.app[ARTIFACTS]
    local = artifacts.local_path(key)
    if local is not None:
        if not local.is_file():
            raise NotFound("the job's file is missing from the artifact store")
        return web.FileResponse(local, headers={"Content-Type": content_type})
    if not await artifacts.exists(key):
        raise NotFound("the job's file is missing from the artifact store")
    signed = await artifacts.signed_url(key, SIGNED_URL_S)
    if signed is not None:
        return web.Response(status=302, headers={"Location": signed, "Cache-Control": "private, no-store"})
    response = web.StreamResponse(headers={"Content-Type": content_type})
    await response.prepare(request)
    async for chunk in artifacts.stream(key):
        await response.write(chunk)
    await response.write_eof()
    return response
