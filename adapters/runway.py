"""Runway (`api.dev.runwayml.com`), as the official `runwayml` SDK speaks it.

    POST   /v1/image_to_video | /v1/text_to_video  -> {"id"}
    GET    /v1/tasks/{id}     PENDING | THROTTLED | RUNNING | SUCCEEDED | FAILED | CANCELLED
    DELETE /v1/tasks/{id}     cancels an active task (deletes a finished one)

Requests carry `X-Runway-Version`. Terminal tasks report `cost.credits`, the credits actually charged
(0 when refunded). Runway asks for no status polls faster than every 5 s and sends no webhooks.
A submit is never repeated once it may have reached Runway: it takes no idempotency key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters.answers import cost_of, number, state_of, task_status, text
from adapters.base import (
    AdapterContext,
    ImageAcceptance,
    PollSchedule,
    RenderTask,
    Submission,
    TaskHandle,
    TaskState,
    TaskStatus,
)
from adapters.errors import (
    ContentRejected,
    ProviderError,
    ProviderUnavailable,
    Rejected,
    RequestInvalid,
)
from adapters.http_adapter import HttpAdapter
from adapters.images import image_reference
from adapters.spec import ACTIVE, DAY_S, QUEUED, CancelTerms, ProviderSpec
from broker.schema import AspectRatio, Mode, Resolution
from pricing.units import CostUnit

PROVIDER = "runway"
API_VERSION = "2024-11-06"
IMAGE_ACCEPTANCE = ImageAcceptance(url=True, data_uri_max_bytes=5 * 1024 * 1024)
# Output URLs expire in 24-48 h (SDK): the lower bound. A task cancelled while PENDING or THROTTLED is
# refunded; one cancelled while RUNNING is charged in full.
SPEC = ProviderSpec(
    name=PROVIDER,
    output_retention_s=DAY_S,
    poll_schedule=PollSchedule(min_interval_s=5.0, max_interval_s=30.0),
    image_acceptance=IMAGE_ACCEPTANCE,
    billing_unit=CostUnit.CREDITS,
    cancel=CancelTerms(stops=ACTIVE, refunds=QUEUED),
)

_STATES = {
    "PENDING": TaskState.QUEUED,
    "THROTTLED": TaskState.QUEUED,
    "RUNNING": TaskState.RUNNING,
    "SUCCEEDED": TaskState.SUCCEEDED,
    "FAILED": TaskState.FAILED,
    "CANCELLED": TaskState.CANCELLED,
}

_GEN4 = {
    AspectRatio.WIDE: "1280:720",
    AspectRatio.TALL: "720:1280",
    AspectRatio.CLASSIC: "1104:832",
    AspectRatio.PORTRAIT: "832:1104",
    AspectRatio.SQUARE: "960:960",
    AspectRatio.CINEMA: "1584:672",
}
_VEO_HD = {AspectRatio.WIDE: "1280:720", AspectRatio.TALL: "720:1280"}
_VEO_FULL_HD = {AspectRatio.WIDE: "1920:1080", AspectRatio.TALL: "1080:1920"}


@dataclass(frozen=True, slots=True)
class _Shape:
    """How a model names its output size per resolution, and whether it takes `audio`."""

    ratios: Mapping[Resolution, Mapping[AspectRatio, str]]
    audio: bool = False
    text_ratios: Mapping[Resolution, Mapping[AspectRatio, str]] | None = None  # when text-to-video differs


# The models `runwayml` 5.24 takes (tests/test_catalog_sdk.py checks this against its request types);
# gen3a_turbo and veo3 are gone from the API.
_MODELS: dict[str, _Shape] = {
    "gen4.5": _Shape({Resolution.HD: _GEN4}, text_ratios={Resolution.HD: _VEO_HD}),
    "gen4_turbo": _Shape({Resolution.HD: _GEN4}),
    "veo3.1": _Shape({Resolution.HD: _VEO_HD, Resolution.FULL_HD: _VEO_FULL_HD}, audio=True),
    "veo3.1_fast": _Shape({Resolution.HD: _VEO_HD, Resolution.FULL_HD: _VEO_FULL_HD}, audio=True),
}


def error_for(code: str | None, message: str) -> ProviderError:
    """A failed Runway task in our hierarchy, by its `failureCode` (HTTP errors go by status)."""
    code = code or ""
    common: dict[str, Any] = {"provider": PROVIDER, "provider_code": code or None}
    # SAFETY.INPUT.*, SAFETY.OUTPUT.*, INPUT_PREPROCESSING.SAFETY.*: the same input fails everywhere.
    if code.startswith("SAFETY.") or ".SAFETY." in code:
        return ContentRejected(message, **common)
    if code.startswith(("ASSET.", "INPUT_PREPROCESSING.")):
        return Rejected(message, **common)
    if code.startswith("INTERNAL"):
        return ProviderUnavailable(message, **common)
    return ProviderError(message, **common)


def ratio_for(
    model: str, aspect_ratio: AspectRatio, resolution: Resolution, mode: Mode = Mode.IMAGE_TO_VIDEO
) -> str:
    """Runway's `ratio` string for a model, e.g. gen4_turbo 16:9 720p -> "1280:720"."""
    shape = _MODELS.get(model)
    if shape is None:
        raise RequestInvalid(f"runway model {model!r} is not one this adapter knows", provider=PROVIDER)
    table = shape.text_ratios if mode is Mode.TEXT_TO_VIDEO and shape.text_ratios else shape.ratios
    ratio = table.get(resolution, {}).get(aspect_ratio)
    if ratio is None:
        raise RequestInvalid(
            f"runway {model} has no {aspect_ratio.value} {mode.value} output at {resolution.value}",
            provider=PROVIDER,
        )
    return ratio


def request_body(task: RenderTask) -> dict[str, Any]:
    """The JSON body of Runway's create call for `task`."""
    request = task.request
    body: dict[str, Any] = {
        "model": task.model,
        "ratio": ratio_for(task.model, request.aspect_ratio, request.resolution, request.resolved_mode),
        "duration": request.duration_s,
    }
    if request.prompt:
        body["promptText"] = request.prompt
    if request.seed is not None:
        body["seed"] = request.seed
    if _MODELS[task.model].audio:
        body["audio"] = request.audio
    if request.resolved_mode is Mode.IMAGE_TO_VIDEO:
        if task.image is None:
            raise Rejected("image_to_video needs an image", provider=PROVIDER)
        body["promptImage"] = image_reference(task.image, IMAGE_ACCEPTANCE, PROVIDER)
    return body


def parse_task(payload: dict[str, Any]) -> TaskStatus:
    """A `GET /v1/tasks/{id}` answer as a unified status."""
    state = state_of(_STATES, payload, PROVIDER, "task")
    charged = payload.get("cost")
    error = None
    if state is TaskState.FAILED:
        code = text(payload.get("failureCode"))
        error = error_for(code, f"runway task failed: {payload.get('failure')}")
    output = payload.get("output")
    return task_status(
        state,
        progress=number(payload.get("progress")),
        output_url=output[0] if isinstance(output, list) and output else None,
        cost=cost_of(charged.get("credits"), CostUnit.CREDITS) if isinstance(charged, dict) else None,
        error=error,
    )


class RunwayAdapter(HttpAdapter):
    """The Runway adapter: its HTTP errors go by status alone; `X-Runway-Version` on every request."""

    spec = SPEC
    provider = PROVIDER

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "X-Runway-Version": API_VERSION}

    def error_fields(self, body: Mapping[str, Any]) -> tuple[str | None, str | None, Any]:
        return None, text(body.get("error")), None

    async def submit(self, task: RenderTask) -> Submission:
        """Create the task (sent once: the broker retries a 429 or 5xx as a due time)."""
        body = request_body(task)
        path = f"/v1/{task.request.resolved_mode.value}"  # image_to_video | text_to_video
        answer = await self.answer("POST", self._base + path, submit=True, json_body=body)
        return Submission(handle=TaskHandle(provider_job_id=self.created_id(answer, "id"), model=task.model))

    async def status(self, handle: TaskHandle) -> TaskStatus:
        """Read the task (free; safe to repeat)."""
        return parse_task(await self.answer("GET", f"{self._base}/v1/tasks/{handle.provider_job_id}"))

    async def cancel(self, handle: TaskHandle) -> bool:
        """Cancel an active task; True when Runway accepted, False for a task it does not know."""
        return await self.cancel_request("DELETE", f"{self._base}/v1/tasks/{handle.provider_job_id}")


def build(ctx: AdapterContext) -> RunwayAdapter:
    """The Runway adapter factory."""
    return RunwayAdapter.from_context(ctx)
