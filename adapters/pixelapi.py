"""PixelAPI's video endpoints (`api.pixelapi.dev`), from its pages (seeds 000 and 001).

    model "seedance": POST /v1/seedance/generate, multipart prompt, resolution, duration (5),
                      camera_fixed, image (file)                         -> GET /v1/seedance/{id}
    model "video":    POST /v1/video/generate, JSON {prompt, resolution, duration}, or multipart
                      with an `image` file part to animate it            -> GET /v1/video/{id}

Answers: `{generation_id, status: processing|completed|failed, estimated_seconds, credits_used,
output_url, error_message, ...}`. Clips are a fixed 5 s. A failed generation is refunded (its
`credits_used` falls to 0). A failed generation says why only in `error_message` (a broken render, a
timeout or the safety filter alike, seed 001): it is `GenerationFailed`, never read for words. PixelAPI
has no cancel endpoint and no documented webhook. Error codes in error bodies (`error`) are the
emulator's definitions [none]; the status code decides where they are absent. A submit is never
repeated once it may have landed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp

from adapters.answers import cost_of, number, state_of, task_status, text
from adapters.base import (
    AdapterContext,
    ImageAcceptance,
    ImageInput,
    PollSchedule,
    RenderTask,
    Submission,
    TaskHandle,
    TaskState,
    TaskStatus,
)
from adapters.errors import (
    ContentRejected,
    GenerationFailed,
    InsufficientFunds,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    Rejected,
    RequestInvalid,
)
from adapters.http import RetryPolicy
from adapters.http_adapter import ErrorCodes, HttpAdapter
from adapters.images import image_with_bytes
from adapters.spec import NO_CANCEL, ProviderSpec
from broker.schema import Mode
from pricing.units import CostUnit

PROVIDER = "pixelapi"
CLIP_SECONDS = 5
IMAGE_ACCEPTANCE = ImageAcceptance(url=False, file_max_bytes=10 * 1024 * 1024)
# PixelAPI suggests polling every 5 s; renders take 90-150 s and the submit gives an estimate.
SUBMIT_RETRY = RetryPolicy(attempts=3, max_elapsed_s=90.0, max_delay_s=60.0)
# PixelAPI publishes no output retention and cannot cancel a generation.
SPEC = ProviderSpec(
    name=PROVIDER,
    poll_schedule=PollSchedule(min_interval_s=5.0, max_interval_s=20.0),
    image_acceptance=IMAGE_ACCEPTANCE,
    billing_unit=CostUnit.CREDITS,
    submit_retry=SUBMIT_RETRY,
    cancel=NO_CANCEL,
)
MODELS = ("seedance", "video")

_STATES = {"processing": TaskState.RUNNING, "completed": TaskState.SUCCEEDED, "failed": TaskState.FAILED}


# By error code first (even on a 429), then by HTTP status.
CODES = ErrorCodes(
    by_code={
        "content_blocked": ContentRejected,
        "rate_limited": RateLimited,
        "concurrent_limit": RateLimited,
        "insufficient_credits": InsufficientFunds,
        "validation_error": RequestInvalid,
        "generation_failed": ProviderUnavailable,
        "internal_error": ProviderUnavailable,
    },
    over_429=(ProviderError,),
)


def form_fields(task: RenderTask) -> dict[str, str]:
    """The text fields of a generate call, as PixelAPI spells them."""
    request = task.request
    if task.model not in MODELS:
        raise RequestInvalid(
            f"pixelapi model {task.model!r} is not one of {', '.join(MODELS)}", provider=PROVIDER
        )
    if request.duration_s != CLIP_SECONDS:
        raise RequestInvalid(f"pixelapi renders {CLIP_SECONDS} s clips only", provider=PROVIDER)
    fields = {"prompt": request.prompt, "resolution": request.resolution.value, "duration": str(CLIP_SECONDS)}
    if task.model == "seedance":
        fields["camera_fixed"] = "true" if request.camera_fixed else "false"
    return fields


def _form(fields: Mapping[str, str], data: bytes, content_type: str) -> aiohttp.FormData:
    """A fresh multipart body (aiohttp consumes a FormData when it is sent)."""
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    extension = content_type.rpartition("/")[2] or "png"
    form.add_field("image", data, filename=f"image.{extension}", content_type=content_type)
    return form


def parse_generation(payload: Mapping[str, Any]) -> TaskStatus:
    """A generation answer (submit or poll) as a unified status."""
    state = state_of(_STATES, payload, PROVIDER, "generation")
    cost = cost_of(payload.get("credits_used"), CostUnit.CREDITS)
    estimate = number(payload.get("estimated_seconds"))
    error = None
    if state is TaskState.FAILED:
        error = GenerationFailed(
            f"pixelapi generation failed: {payload.get('error_message') or 'no message'}",
            provider=PROVIDER,
        )
    return task_status(
        state,
        output_url=payload.get("output_url"),
        cost=cost,
        # PixelAPI refunds every failed generation; credits_used then reads 0.
        refunded=state is TaskState.FAILED and (cost is None or cost.amount == 0),
        error=error,
        estimated_seconds=float(estimate) if estimate is not None and estimate > 0 else None,
    )


class PixelApiAdapter(HttpAdapter):
    """The PixelAPI adapter: no cancel, no webhooks."""

    spec = SPEC
    provider = PROVIDER
    codes = CODES

    def error_fields(self, body: Mapping[str, Any]) -> tuple[str | None, str | None, Any]:
        return text(body.get("error")), body.get("message") or None, None

    async def submit(self, task: RenderTask) -> Submission:
        """Start a generation: multipart with the image file, or JSON for text-only `video`."""
        fields = form_fields(task)
        image = await self._image(task)
        form = _form(fields, image.data, image.content_type) if image and image.data else None
        answer = await self.answer(
            "POST",
            f"{self._base}/v1/{task.model}/generate",
            submit=True,
            data=form,
            json_body=None if form is not None else {**fields, "duration": CLIP_SECONDS},
        )
        generation_id = self.created_id(answer, "generation_id")
        first = parse_generation(answer)
        return Submission(
            handle=TaskHandle(provider_job_id=generation_id, model=task.model),
            estimated_seconds=first.estimated_seconds,
            reported_cost=first.reported_cost,
        )

    async def _image(self, task: RenderTask) -> ImageInput | None:
        """The image with its bytes (fetched from its URL if need be), or None for text-only `video`."""
        if task.request.resolved_mode is Mode.IMAGE_TO_VIDEO:
            if task.image is None:
                raise Rejected("image_to_video needs an image", provider=PROVIDER)
            return await image_with_bytes(task.image)
        if task.model == "seedance":
            raise Rejected(
                "pixelapi seedance animates an image; text-only jobs use `video`", provider=PROVIDER
            )
        return None

    async def status(self, handle: TaskHandle) -> TaskStatus:
        """Read the generation (free; safe to repeat)."""
        url = f"{self._base}/v1/{handle.model}/{handle.provider_job_id}"
        return parse_generation(await self.answer("GET", url))


def build(ctx: AdapterContext) -> PixelApiAdapter:
    """The PixelAPI adapter factory."""
    return PixelApiAdapter.from_context(ctx)
