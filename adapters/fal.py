"""fal.ai's queue (`queue.fal.run`), as `fal_client` speaks it.

    POST {model}[?fal_webhook=]   the model's input as the bare JSON body
                                  -> {request_id, status_url, response_url, cancel_url, queue_position}
    GET  status_url               IN_QUEUE | IN_PROGRESS | COMPLETED (a failure is COMPLETED + error)
    GET  response_url             the result: {"video": {"url"}} or {"video": "<url>"}
    PUT  cancel_url               202 cancellation requested | 400 already completed

`model` is the fal endpoint id (`fal-ai/kling-video/v2.5-turbo/pro/image-to-video`); status, result
and cancel go to the URLs fal returned, which must share the configured origin (our key goes with
them). fal reports no cost: the broker books the quote. A submit is never repeated once it may have
reached fal. fal signs webhooks with ED25519 keys from its JWKS, which this adapter does not verify:
the broker treats a webhook only as a cue to poll, and the status URL stays the source of truth.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from yarl import URL

from adapters.answers import text
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
    RateLimited,
    Rejected,
    RequestInvalid,
    SubmissionUncertain,
)
from adapters.http import REQUEST_TIMEOUT_S
from adapters.http_adapter import Auth, ErrorCodes, HttpAdapter
from adapters.images import image_reference
from adapters.spec import ACTIVE, QUEUED, CancelTerms, ProviderSpec, Webhooks
from broker.schema import AspectRatio, Mode
from pricing.units import CostUnit

PROVIDER = "fal"
# fal takes data URIs in its image fields; bigger images would need fal's storage upload.
IMAGE_ACCEPTANCE = ImageAcceptance(url=True, data_uri_max_bytes=10 * 1024 * 1024)
# fal publishes no output retention.
SPEC = ProviderSpec(
    name=PROVIDER,
    poll_schedule=PollSchedule(min_interval_s=2.0, max_interval_s=15.0),
    image_acceptance=IMAGE_ACCEPTANCE,
    billing_unit=CostUnit.USD,
    webhooks=Webhooks.UNSIGNED,
    cancel=CancelTerms(stops=ACTIVE, refunds=QUEUED),
)

CANCELLED = "request_cancelled"
_CONTENT = frozenset({"content_policy_violation"})
_UNAVAILABLE = frozenset(
    {
        "internal_server_error",
        "internal_error",
        "generation_timeout",
        "downstream_service_error",
        "downstream_service_unavailable",
        "request_timeout",
        "startup_timeout",
        "rate_limited",
    }
)
# fal's answer to the request the broker built: the catalog or the adapter is wrong for the endpoint.
_REQUEST = frozenset({"validation_error", "bad_request", "feature_not_supported"})
_INPUT = frozenset(
    {
        "image_too_small",
        "image_too_large",
        "image_load_error",
        "file_download_error",
        "file_too_large",
        "face_detection_error",
        "unsupported_image_format",
    }
)
_URL_KEYS = ("status_url", "response_url", "cancel_url")
# By `error_type`, then by HTTP status; a content refusal stays one even on a 429.
CODES = ErrorCodes(
    by_code={
        **dict.fromkeys(_CONTENT, ContentRejected),
        **dict.fromkeys(_UNAVAILABLE, ProviderUnavailable),
        **dict.fromkeys(_REQUEST, RequestInvalid),
        **dict.fromkeys(_INPUT, Rejected),
    },
    prefixes=(("runner_", ProviderUnavailable), ("unsupported_", Rejected)),
    over_429=(ContentRejected,),
)


Fields = dict[str, Any]
_ANIMATEDIFF_FPS = 8
_VIDEO_SIZES = {
    AspectRatio.WIDE: "landscape_16_9",
    AspectRatio.TALL: "portrait_16_9",
    AspectRatio.SQUARE: "square",
    AspectRatio.CLASSIC: "landscape_4_3",
    AspectRatio.PORTRAIT: "portrait_4_3",
}


def _duration_string(duration_s: int) -> Fields:
    return {"duration": str(duration_s)}


def _duration_seconds(duration_s: int) -> Fields:
    return {"duration": f"{duration_s}s"}


def _duration_int(duration_s: int) -> Fields:
    return {"duration": duration_s}


def _duration_frames(duration_s: int) -> Fields:
    return {"num_frames": duration_s * _ANIMATEDIFF_FPS, "fps": _ANIMATEDIFF_FPS}


def _aspect_ratio(aspect: AspectRatio) -> Fields:
    return {"aspect_ratio": aspect.value}


def _video_size(aspect: AspectRatio) -> Fields:
    return {"video_size": _VIDEO_SIZES.get(aspect, "landscape_16_9")}


@dataclass(frozen=True, slots=True)
class _Inputs:
    """How one fal endpoint spells the unified fields; None leaves a field out (the model fixes it)."""

    duration: Callable[[int], Fields] | None = _duration_string
    aspect: Callable[[AspectRatio], Fields] | None = None
    resolution: bool = False
    seed: bool = True
    audio_field: str | None = None


# Per endpoint of the catalog, from fal's model pages: image-to-video endpoints mostly take the
# image's own aspect; durations are strings ("5"), veo's carry a unit ("8s"); some models fix theirs.
_VEO_T2V = _Inputs(_duration_seconds, _aspect_ratio, resolution=True, audio_field="generate_audio")
_VEO_I2V = _Inputs(_duration_seconds, resolution=True, audio_field="generate_audio")
_FIXED_LENGTH = _Inputs(duration=None)
_MODELS: dict[str, _Inputs] = {
    "fal-ai/wan-25-preview/image-to-video": _Inputs(resolution=True),
    "fal-ai/wan-25-preview/text-to-video": _Inputs(aspect=_aspect_ratio, resolution=True),
    "fal-ai/kling-video/v2.5-turbo/pro/image-to-video": _Inputs(seed=False),
    "fal-ai/kling-video/v2.5-turbo/pro/text-to-video": _Inputs(aspect=_aspect_ratio, seed=False),
    "fal-ai/kling-video/v1/standard/image-to-video": _Inputs(seed=False),
    "fal-ai/kling-video/o3/standard/image-to-video": _Inputs(seed=False),
    "fal-ai/veo3": _VEO_T2V,
    "fal-ai/veo3/fast": _VEO_T2V,
    "fal-ai/veo3/image-to-video": _VEO_I2V,
    "fal-ai/veo3/fast/image-to-video": _VEO_I2V,
    "fal-ai/ovi": _FIXED_LENGTH,
    "fal-ai/ovi/image-to-video": _FIXED_LENGTH,
    "fal-ai/pixverse/v5.5/image-to-video": _Inputs(resolution=True, audio_field="generate_audio_switch"),
    "fal-ai/pixverse/v5.5/text-to-video": _Inputs(
        aspect=_aspect_ratio, resolution=True, audio_field="generate_audio_switch"
    ),
    "fal-ai/pixverse/v4.5/image-to-video": _Inputs(resolution=True),
    "fal-ai/pixverse/v5/text-to-video": _Inputs(aspect=_aspect_ratio, resolution=True),
    "fal-ai/minimax-video/image-to-video": _Inputs(duration=None, seed=False),
    "fal-ai/minimax/video-01/image-to-video": _Inputs(duration=None, seed=False),
    "fal-ai/luma-dream-machine/image-to-video": _Inputs(duration=None, aspect=_aspect_ratio, seed=False),
    "fal-ai/pika/v2.2/image-to-video": _Inputs(_duration_int, resolution=True),
    "fal-ai/vidu/image-to-video": _FIXED_LENGTH,
    "fal-ai/fast-animatediff/text-to-video": _Inputs(_duration_frames, _video_size),
}
_DEFAULT = _Inputs(aspect=_aspect_ratio, resolution=True)


def request_body(task: RenderTask) -> dict[str, Any]:
    """The bare JSON input of the fal endpoint `task.model`."""
    request = task.request
    inputs = _MODELS.get(task.model, _DEFAULT)
    body: dict[str, Any] = {"prompt": request.prompt}
    if inputs.duration is not None:
        body.update(inputs.duration(request.duration_s))
    if inputs.aspect is not None:
        body.update(inputs.aspect(request.aspect_ratio))
    if inputs.resolution:
        body["resolution"] = request.resolution.value
    if inputs.seed and request.seed is not None:
        body["seed"] = request.seed
    if inputs.audio_field is not None:
        body[inputs.audio_field] = request.audio
    if request.resolved_mode is Mode.IMAGE_TO_VIDEO:
        if task.image is None:
            raise Rejected("image_to_video needs an image", provider=PROVIDER)
        body["image_url"] = image_reference(task.image, IMAGE_ACCEPTANCE, PROVIDER)
    return body


def video_url(result: Mapping[str, Any]) -> str | None:
    """The output URL of a fal result: `video.url`, or `video` itself where a model gives a string."""
    video = result.get("video")
    if isinstance(video, str):
        return video
    if isinstance(video, dict) and isinstance(video.get("url"), str):
        return str(video["url"])
    return None


def _url(handle: TaskHandle, key: str) -> str:
    url = handle.data.get(key)
    if url is None:
        raise ProviderError(f"fal task handle has no {key}", provider=PROVIDER)
    return url


class FalAdapter(HttpAdapter):
    """The fal queue adapter: status, result and cancel go to the URLs fal returned."""

    spec = SPEC
    provider = PROVIDER
    auth = Auth(scheme="Key")
    codes = CODES
    no_message = "see details"

    def __init__(self, ctx: AdapterContext, *, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        super().__init__(ctx, timeout_s=timeout_s)
        self._origin = URL(self._base).origin()

    def error_fields(self, body: Mapping[str, Any]) -> tuple[str | None, str | None, Any]:
        detail = body.get("detail")
        error_type = body.get("error_type")
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            # 422 validation details carry the type per field (content_policy_violation among them).
            error_type = error_type or detail[0].get("type")
        return text(error_type), text(detail), None

    def _same_origin(self, url: Any) -> bool:
        return isinstance(url, str) and URL(url).origin() == self._origin

    async def submit(self, task: RenderTask) -> Submission:
        """Queue the request (sent once: the broker retries a 429 or 5xx as a due time)."""
        params = {"fal_webhook": task.webhook_url} if task.webhook_url else None
        answer = await self.answer(
            "POST",
            f"{self._base}/{task.model.strip('/')}",
            submit=True,
            json_body=request_body(task),
            params=params,
        )
        request_id = answer.get("request_id")
        urls = {key: answer.get(key) for key in _URL_KEYS}
        if not isinstance(request_id, str) or not all(self._same_origin(u) for u in urls.values()):
            raise SubmissionUncertain(
                "fal queued the request but its answer lacks usable URLs", provider=PROVIDER
            )
        data = {key: str(value) for key, value in urls.items()}
        return Submission(handle=TaskHandle(provider_job_id=request_id, model=task.model, data=data))

    async def status(self, handle: TaskHandle) -> TaskStatus:
        """Read the request's status, and its result once it completed (both free)."""
        answer = await self.answer("GET", _url(handle, "status_url"))
        state = answer.get("status")
        if state == "IN_QUEUE":
            return TaskStatus(state=TaskState.QUEUED)
        if state == "IN_PROGRESS":
            return TaskStatus(state=TaskState.RUNNING)
        if state != "COMPLETED":
            raise ProviderUnavailable(f"fal request has unknown status {state!r}", provider=PROVIDER)
        error_type = answer.get("error_type")
        if error_type == CANCELLED:
            return TaskStatus(state=TaskState.CANCELLED)
        if answer.get("error") is not None or error_type is not None:
            error = CODES.error(
                PROVIDER, None, text(error_type), f"fal request failed: {answer.get('error')}"
            )
            return TaskStatus(state=TaskState.FAILED, error=error)
        return await self._result(handle)

    async def _result(self, handle: TaskHandle) -> TaskStatus:
        try:
            result = await self.answer("GET", _url(handle, "response_url"))
        except (RateLimited, ProviderUnavailable):
            raise
        except ProviderError as exc:  # the request completed, and its result is its failure
            return TaskStatus(state=TaskState.FAILED, error=exc)
        url = video_url(result)
        if url is None:
            raise ProviderUnavailable("fal result has no video URL", provider=PROVIDER)
        return TaskStatus(state=TaskState.SUCCEEDED, progress=1.0, output_url=url)

    async def cancel(self, handle: TaskHandle) -> bool:
        """Ask fal to cancel; False when the request already completed (400) or is unknown."""
        return await self.cancel_request("PUT", _url(handle, "cancel_url"), too_late=frozenset({400, 404}))

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """Parse fal's `{request_id, status: OK|ERROR, payload, error}` (a cue to poll; unverified)."""
        payload = self.webhook_json(body)
        request_id = self.webhook_task_id(payload, "request_id", ("OK", "ERROR"))
        if payload["status"] == "OK":
            result = payload.get("payload")
            url = video_url(result) if isinstance(result, dict) else None
            status = TaskStatus(state=TaskState.SUCCEEDED, output_url=url)
        else:
            status = TaskStatus(
                state=TaskState.FAILED,
                error=ProviderError(f"fal request failed: {payload.get('error')}", provider=PROVIDER),
            )
        return WebhookEvent(provider_job_id=request_id, status=status)


def build(ctx: AdapterContext) -> FalAdapter:
    """The fal adapter factory."""
    return FalAdapter.from_context(ctx)
