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
from decimal import Decimal
from pathlib import Path
from typing import Any

from adapters.base import (
    AdapterContext,
    ImageAcceptance,
    PollSchedule,
    RenderTask,
    Submission,
    TaskHandle,
    TaskState,
    TaskStatus,
    WebhookEvent,
)
from adapters.errors import (
    ContentRejected,
    ProviderError,
    ProviderUnavailable,
    Rejected,
    RequestInvalid,
    SubmissionUncertain,
)
from adapters.http import (
    REQUEST_TIMEOUT_S,
    Reply,
    RetryPolicy,
    download_output,
    json_answer,
    retry_after_seconds,
    send,
    status_error,
)
from adapters.images import image_reference
from adapters.spec import DAY_S, CancelTerms, ProviderSpec, Webhooks
from broker.schema import AspectRatio, Mode, Resolution
from pricing.units import CostUnit, ReportedCost

PROVIDER = "runway"
API_VERSION = "2024-11-06"
IMAGE_ACCEPTANCE = ImageAcceptance(url=True, data_uri_max_bytes=5 * 1024 * 1024)
POLL_SCHEDULE = PollSchedule(min_interval_s=5.0, max_interval_s=30.0, backoff=1.5, deadline_s=900.0)
SUBMIT_RETRY = RetryPolicy(attempts=3, max_elapsed_s=60.0)
# Output URLs expire in 24-48 h (SDK): the lower bound. A task cancelled while PENDING or THROTTLED is
# refunded; one cancelled while RUNNING is charged in full.
SPEC = ProviderSpec(
    name=PROVIDER,
    output_retention_s=DAY_S,
    poll_schedule=POLL_SCHEDULE,
    image_acceptance=IMAGE_ACCEPTANCE,
    submit_retry=SUBMIT_RETRY,
    billing_unit=CostUnit.CREDITS,
    idempotent_submit=False,
    webhooks=Webhooks.NONE,
    cancel=CancelTerms(
        stops=frozenset({TaskState.QUEUED, TaskState.RUNNING}), refunds=frozenset({TaskState.QUEUED})
    ),
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


def error_for(
    status: int | None, code: str | None, message: str, retry_after_s: float | None = None
) -> ProviderError:
    """Runway's failures in our hierarchy: HTTP errors by status, failed tasks by `failureCode`."""
    if status is not None:
        return status_error(PROVIDER, status, message, provider_code=code, retry_after_s=retry_after_s)
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


def _reply_error(reply: Reply) -> ProviderError:
    body = reply.json_object() or {}
    message = body.get("error") if isinstance(body.get("error"), str) else None
    return error_for(
        reply.status,
        None,
        f"runway answered HTTP {reply.status}: {message or 'no message'}",
        retry_after_seconds(reply.headers.get("Retry-After")),
    )


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


def _credits(payload: dict[str, Any], key: str) -> ReportedCost | None:
    cost = payload.get(key)
    if isinstance(cost, dict) and isinstance(cost.get("credits"), int | float):
        return ReportedCost(Decimal(str(cost["credits"])), CostUnit.CREDITS)
    return None


def parse_task(payload: dict[str, Any]) -> TaskStatus:
    """A `GET /v1/tasks/{id}` answer as a unified status."""
    state = _STATES.get(str(payload.get("status")))
    if state is None:
        raise ProviderUnavailable(
            f"runway task has unknown status {payload.get('status')!r}", provider=PROVIDER
        )
    progress = payload.get("progress")
    output = payload.get("output")
    cost = _credits(payload, "cost")
    error = None
    if state is TaskState.FAILED:
        failure = payload.get("failure")
        code = payload.get("failureCode")
        error = error_for(None, code if isinstance(code, str) else None, f"runway task failed: {failure}")
    return TaskStatus(
        state=state,
        progress=float(progress) if isinstance(progress, int | float) else None,
        output_url=output[0] if isinstance(output, list) and output and isinstance(output[0], str) else None,
        reported_cost=cost,
        refunded=state in (TaskState.FAILED, TaskState.CANCELLED) and cost is not None and cost.amount == 0,
        error=error,
    )


class RunwayAdapter:
    """The Runway adapter over the app's shared session."""

    spec = SPEC
    provider = PROVIDER

    def __init__(self, ctx: AdapterContext, *, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self._ctx = ctx
        self._base = ctx.base_url.rstrip("/")
        self._timeout_s = timeout_s

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._ctx.api_key or ''}", "X-Runway-Version": API_VERSION}

    async def _call(self, method: str, path: str, *, submit: bool, body: Any = None) -> Reply:
        return await send(
            self._ctx.session,
            method,
            self._base + path,
            provider=PROVIDER,
            uncertain_if_lost=submit,
            timeout_s=self._timeout_s,
            headers=self._headers(),
            json_body=body,
        )

    async def _answer(self, method: str, path: str, *, submit: bool, body: Any = None) -> dict[str, Any]:
        async def once() -> dict[str, Any]:
            reply = await self._call(method, path, submit=submit, body=body)
            return json_answer(reply, _reply_error, provider=PROVIDER, submit=submit)

        return await once()

    async def submit(self, task: RenderTask) -> Submission:
        """Create the task; retried only on answers that prove it was not created (429, 5xx)."""
        body = request_body(task)
        path = f"/v1/{task.request.resolved_mode.value}"  # image_to_video | text_to_video
        answer = await self._answer("POST", path, submit=True, body=body)
        task_id = answer.get("id")
        if not isinstance(task_id, str) or not task_id:
            raise SubmissionUncertain(
                "runway accepted the submit but its answer has no task id", provider=PROVIDER
            )
        return Submission(handle=TaskHandle(provider_job_id=task_id, model=task.model))

    async def status(self, handle: TaskHandle) -> TaskStatus:
        """Read the task (free; safe to repeat)."""
        answer = await self._answer("GET", f"/v1/tasks/{handle.provider_job_id}", submit=False)
        return parse_task(answer)

    async def cancel(self, handle: TaskHandle) -> bool:
        """Cancel an active task; True when Runway accepted."""
        reply = await self._call("DELETE", f"/v1/tasks/{handle.provider_job_id}", submit=False)
        if reply.ok:
            return True
        if reply.status == 404:
            return False
        raise _reply_error(reply)

    async def fetch_output(self, status: TaskStatus, dest: Path) -> None:
        """Download the task's MP4 (Runway's output URLs are signed; no auth header)."""
        await download_output(self._ctx.session, status, dest, provider=PROVIDER)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """Runway sends no webhooks, so anything claiming to be one is refused."""
        raise Rejected("runway sends no webhooks", provider=PROVIDER)


def build(ctx: AdapterContext) -> RunwayAdapter:
    """The Runway adapter factory."""
    return RunwayAdapter(ctx, timeout_s=ctx.timeout_s)
