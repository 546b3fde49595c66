"""PixelAPI's video endpoints (`api.pixelapi.dev`), from its pages (seeds 000 and 001).

    POST /v1/seedance/generate   multipart: prompt, resolution (720p|1080p), duration (5),
                                 camera_fixed (true|false), image (file, required)   55 credits
    POST /v1/video/generate      JSON {prompt, resolution, duration}, or the same as multipart with an
                                 optional image file part                           90 credits
    GET  /v1/seedance/{id}, GET /v1/video/{id}

Answers: `{generation_id, status: processing|completed|failed, estimated_seconds, credits_used,
processing_ms, output_url, error_message, credits_remaining}`. A failed generation is refunded:
`credits_used` drops to 0 and `credits_remaining` is restored. Auth is `Authorization: Bearer`.
Over `max_concurrent` (5) active jobs a submit is 429 with `Retry-After`; over the balance, 402.

Not in PixelAPI's pages, defined here [none]: error bodies `{"error": <code>, "message": ...}` with
codes `unauthorized`, `validation_error` (422), `insufficient_credits` (402), `concurrent_limit` and
`rate_limited` (429), `not_found`, `internal_error`. A failed job carries only `error_message`, as
PixelAPI documents ("status=failed with an error_message" for a failure, a timeout or a safety-filter
block, seed 001): no code tells a refused input from a crash. PixelAPI has no cancel endpoint and no
documented webhook body, so neither exists here.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from PIL import Image, UnidentifiedImageError

from adapters.emulators.app import base_app
from adapters.emulators.emulator import ProtocolError, ProviderEmulator, bearer_token, json_object
from adapters.emulators.media import Delivery, size_for_ratio
from adapters.emulators.tasks import EmulatedTask, Phase

CREDITS = {"seedance": 55, "video": 90}
RESOLUTIONS = frozenset({"720p", "1080p"})
CLIP_SECONDS = 5
IMAGE_MAX_BYTES = 10 * 1024 * 1024
CONCURRENT_RETRY_AFTER_S = 30


class PixelApiEmulator(ProviderEmulator):
    """PixelAPI's state: a credit balance (1 credit = $0.001) and a cap on concurrent video jobs."""

    provider = "pixelapi"
    # Seedance-style: 30 fps, a second longer than asked, with a soundtrack nobody asked for.
    delivery = Delivery(fps=30, extra_s=1, audio=True)
    rate_limit_code = "rate_limited"
    server_error_code = "internal_error"
    task_fail_code = "generation_failed"

    def __init__(self, *, credits: int = 10_000, max_concurrent: int = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.credits = credits
        self.max_concurrent = max_concurrent

    def credits_remaining(self) -> int:
        """The balance after every charge not refunded (failed jobs give their credits back)."""
        now = self.clock()
        spent = sum(t.cost for t in self.tasks.values() if t.phase(now) != Phase.FAILED)
        return self.credits - spent

    def error_response(self, error: ProtocolError, headers: Mapping[str, str] | None = None) -> web.Response:
        body: dict[str, Any] = {"error": error.code, "message": error.message, **error.extra}
        return web.json_response(body, status=error.status, headers=headers)

    def authenticate(self, request: web.Request) -> None:
        if bearer_token(request) not in self.api_keys:
            raise ProtocolError(401, "unauthorized", "Invalid or missing API key")

    def admit(self, cost: int) -> None:
        """Refuse a submit over the concurrency cap or the balance."""
        if self.active_count() >= self.max_concurrent:
            raise ProtocolError(
                429,
                "concurrent_limit",
                f"At most {self.max_concurrent} concurrent video jobs",
                headers={"Retry-After": str(CONCURRENT_RETRY_AFTER_S)},
            )
        if self.credits_remaining() < cost:
            raise ProtocolError(402, "insufficient_credits", "Not enough credits for this generation")


def _invalid(field: str, message: str) -> ProtocolError:
    return ProtocolError(422, "validation_error", message, extra={"field": field})


async def _fields(request: web.Request, image_required: bool) -> tuple[dict[str, str], bytes | None]:
    """The request's fields as strings and its image bytes, from multipart or (video only) JSON."""
    if request.content_type == "multipart/form-data":
        form = await request.post()
        image = form.get("image")
        data = image.file.read() if isinstance(image, web.FileField) else None
        fields = {k: str(v) for k, v in form.items() if not isinstance(v, web.FileField)}
    elif image_required:
        raise ProtocolError(415, "validation_error", "Send multipart/form-data with an image file part")
    else:
        body = await json_object(request, code="validation_error")
        fields = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in body.items()}
        data = None
    if image_required and data is None:
        raise _invalid("image", "image file is required")
    return fields, data


def _check_fields(fields: dict[str, str]) -> None:
    if not fields.get("prompt"):
        raise _invalid("prompt", "prompt is required")
    if fields.get("resolution", "720p") not in RESOLUTIONS:
        raise _invalid("resolution", "resolution must be 720p or 1080p")
    if fields.get("duration", str(CLIP_SECONDS)) != str(CLIP_SECONDS):
        raise _invalid("duration", "duration is fixed at 5 seconds")
    if fields.get("camera_fixed", "false") not in ("true", "false"):
        raise _invalid("camera_fixed", "camera_fixed must be true or false")


def _image_size(data: bytes) -> tuple[int, int]:
    """The uploaded image's size: the output keeps its aspect ratio."""
    if not data or len(data) > IMAGE_MAX_BYTES:
        raise _invalid("image", "image must be a non-empty file of at most 10 MB")
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError) as exc:
        raise _invalid("image", "image is not a readable picture") from exc


async def _generate(request: web.Request, kind: str) -> web.Response:
    emulator = request.app[PIXELAPI_KEY]
    fields, image = await _fields(request, image_required=kind == "seedance")
    _check_fields(fields)
    width, height = _image_size(image) if image is not None else (16, 9)
    emulator.admit(CREDITS[kind])
    out_w, out_h = size_for_ratio(width, height)
    task = emulator.create_task(
        request,
        kind,
        duration_s=CLIP_SECONDS,
        width=out_w,
        height=out_h,
        cost=CREDITS[kind],
        params={"kind": kind, **fields, "image_bytes": len(image or b"")},
    )
    return web.json_response(generation_json(emulator, task))


async def _seedance_generate(request: web.Request) -> web.Response:
    return await _generate(request, "seedance")


async def _video_generate(request: web.Request) -> web.Response:
    return await _generate(request, "video")


def generation_json(emulator: PixelApiEmulator, task: EmulatedTask) -> dict[str, Any]:
    """A generation as both its submit and its poll answer it."""
    now = emulator.clock()
    phase = task.phase(now)
    done = phase.terminal
    ends_at = task.ends_at
    remaining = max(0.0, ends_at - now) if ends_at is not None else task.render_s
    status = {Phase.SUCCEEDED: "completed", Phase.FAILED: "failed"}.get(phase, "processing")
    return {
        "generation_id": task.id,
        "status": status,
        "estimated_seconds": 0 if done else max(1, round(remaining)),
        "credits_used": 0 if phase == Phase.FAILED else task.cost,
        "processing_ms": round(((ends_at if done and ends_at else now) - task.created_at) * 1000),
        "output_url": task.output_url if phase == Phase.SUCCEEDED else None,
        "error_message": task.fail_message if phase == Phase.FAILED else None,
        "credits_remaining": emulator.credits_remaining(),
    }


async def _poll(request: web.Request) -> web.Response:
    emulator = request.app[PIXELAPI_KEY]
    task = emulator.find_task(request.match_info["generation_id"])
    kind = str(request.match_info.route.name).split(":")[1]  # "status:seedance" or "status:video"
    if task is None or task.params["kind"] != kind:
        raise ProtocolError(404, "not_found", "Generation not found")
    return web.json_response(generation_json(emulator, task))


PIXELAPI_KEY = web.AppKey("pixelapi_emulator", PixelApiEmulator)


def create_app(emulator: PixelApiEmulator | None = None) -> web.Application:
    """The PixelAPI emulator app."""
    emulator = emulator or PixelApiEmulator()
    app = base_app(emulator)
    app[PIXELAPI_KEY] = emulator
    app.router.add_post("/v1/seedance/generate", _seedance_generate, name="submit:seedance")
    app.router.add_post("/v1/video/generate", _video_generate, name="submit:video")
    app.router.add_get("/v1/seedance/{generation_id}", _poll, name="status:seedance")
    app.router.add_get("/v1/video/{generation_id}", _poll, name="status:video")
    return app
