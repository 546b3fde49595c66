"""Replicate's predictions API (`api.replicate.com`), as the official `replicate` client (1.0.7) speaks it.

    POST /v1/models/{owner}/{name}/predictions  an official model: {"input", "webhook", ...}
    POST /v1/predictions                        any model by version: {"version", "input", ...}
    GET  /v1/predictions/{id}                   starting | processing | succeeded | failed | canceled
    POST /v1/predictions/{id}/cancel            -> the prediction

Sources: the client's `prediction.py` (the Prediction fields: `status`, `output`, `error`, `metrics`,
`urls`; `Prefer: wait=N`), `model.py` (the official-model path), `webhook.py` (Standard Webhooks
verification), `exceptions.py` (RFC 7807 problem details: `type`, `title`, `status`, `detail`);
replicate.com/docs/topics/predictions/data-retention and .../output-files (API outputs and their files
are removed after an hour; `data_removed` then reads true); sdks.replicate.com (predictions.create:
inputs as HTTP or data URLs, `Cancel-After`); replicate.com/pricing (hardware billed per second).

Submits carry `Cancel-After: <poll deadline>s`, so a prediction the broker stopped waiting for stops
billing at Replicate too, and no `Prefer: wait`: a video takes minutes, and a step holds no request
open (the emulator honours the header). Webhooks are asked for `completed` only and verified in the
Standard Webhooks form: `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">` under the
key in `whsec_<base64>`, within `TOLERANCE_S` of the wall clock.

Billing. Official models are billed per output (per video or per second of video, published per
model): a failed or cancelled prediction produced nothing and is charged nothing, reported as $0; a
success reports no figure, so the quote is booked. Models run by version are billed per second of
hardware time, whatever the outcome: the adapter reports `metrics.predict_time` as compute seconds.
Replicate keeps outputs an hour, so the spec's retention is 3600 s; each status read gives the
prediction's current output URL, which the broker asks for again before each fetch.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from adapters.answers import ENDED_UNSUCCESSFULLY, cost_of, state_of, task_status, text
from adapters.base import (
    AdapterContext,
    Clock,
    ImageAcceptance,
    PollSchedule,
    RenderTask,
    Submission,
    TaskHandle,
    TaskState,
    TaskStatus,
    WebhookEvent,
)
from adapters.errors import GenerationFailed, Rejected, RequestInvalid
from adapters.http import REQUEST_TIMEOUT_S, json_answer
from adapters.http_adapter import HttpAdapter
from adapters.images import image_reference
from adapters.spec import ACTIVE, HOUR_S, CancelTerms, ProviderSpec, Webhooks
from broker.schema import AspectRatio, Mode
from pricing.units import CostUnit, ReportedCost

PROVIDER = "replicate"
# "Use an HTTP URL for files over 256 KB; a data URL for smaller ones" (predictions.create).
IMAGE_ACCEPTANCE = ImageAcceptance(url=True, data_uri_max_bytes=256 * 1024)
SPEC = ProviderSpec(
    name=PROVIDER,
    output_retention_s=HOUR_S,
    poll_schedule=PollSchedule(min_interval_s=2.0, max_interval_s=20.0),
    image_acceptance=IMAGE_ACCEPTANCE,
    billing_unit=CostUnit.USD,  # official models; version models report compute seconds (above)
    webhooks=Webhooks.SIGNED,
    # A cancel stops a prediction starting or processing; an official model's cancelled prediction
    # produced no output and costs nothing. (A version model is charged the seconds it ran.)
    cancel=CancelTerms(stops=ACTIVE, refunds=ACTIVE),
)
TOLERANCE_S = 300.0  # a webhook older (or newer) than this is a replay, whatever its signature
WEBHOOK_EVENTS = ["completed"]

_STATES = {
    "starting": TaskState.QUEUED,
    "processing": TaskState.RUNNING,
    "succeeded": TaskState.SUCCEEDED,
    "failed": TaskState.FAILED,
    "canceled": TaskState.CANCELLED,
}
Fields = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ReplicateModel:
    """How one model is created and how it spells the unified fields (its page's input schema)."""

    version: str | None = None  # None: an official model, created by name
    image_field: str | None = None  # the first frame; None: text-to-video only
    durations: frozenset[int] = frozenset()  # values `duration` takes; empty: the model fixes it
    aspect_ratios: frozenset[AspectRatio] = frozenset()  # values `aspect_ratio` takes; empty: none
    negative_prompt_field: str | None = None
    seed_field: str | None = None
    extra: Mapping[str, Any] | None = None  # fixed inputs the broker always sends

    @property
    def official(self) -> bool:
        return self.version is None


# The catalog's models, from their replicate.com API pages (input schema per version).
MODELS: dict[str, ReplicateModel] = {
    # minimax/video-01:c8bcc475: prompt, first_frame_image, subject_reference, prompt_optimizer.
    # 6 s of 720p; with a first frame, the output keeps the image's aspect ratio.
    "minimax/video-01": ReplicateModel(image_field="first_frame_image", extra={"prompt_optimizer": True}),
    # kwaivgi/kling-v2.0:c17ab6fb: prompt, negative_prompt, aspect_ratio (16:9, 9:16, 1:1; ignored
    # with a start_image), start_image, cfg_scale (0.5), duration (5, 10).
    "kwaivgi/kling-v2.0": ReplicateModel(
        image_field="start_image",
        durations=frozenset({5, 10}),
        aspect_ratios=frozenset({AspectRatio.WIDE, AspectRatio.TALL, AspectRatio.SQUARE}),
        negative_prompt_field="negative_prompt",
    ),
    # lucataco/animate-diff:beecf59c (a community model, run by version on its hardware): path,
    # seed, steps, prompt, n_prompt, motion_module, guidance_scale. Text-to-video only.
    "lucataco/animate-diff": ReplicateModel(
        version="beecf59c4aee8d81bf04f0381033dfa10dc16e845b4ae00d281e2fa377e48a9f",
        negative_prompt_field="n_prompt",
        seed_field="seed",
    ),
}


def model_for(name: str) -> ReplicateModel:
    """The model `name` of the catalog; `RequestInvalid` for one this adapter does not know."""
    model = MODELS.get(name)
    if model is None:
        raise RequestInvalid(f"replicate model {name!r} is not one this adapter knows", provider=PROVIDER)
    return model


def model_input(task: RenderTask) -> Fields:
    """The model's `input` object for `task`, in the model's own field names."""
    request, model = task.request, model_for(task.model)
    body: Fields = {"prompt": request.prompt, **(model.extra or {})}
    if model.durations:
        if request.duration_s not in model.durations:
            raise RequestInvalid(
                f"replicate {task.model} renders {sorted(model.durations)} s, not {request.duration_s}",
                provider=PROVIDER,
            )
        body["duration"] = request.duration_s
    if model.aspect_ratios and request.aspect_ratio in model.aspect_ratios:
        body["aspect_ratio"] = request.aspect_ratio.value
    if model.seed_field and request.seed is not None:
        body[model.seed_field] = request.seed
    if request.resolved_mode is Mode.IMAGE_TO_VIDEO:
        if model.image_field is None:
            raise RequestInvalid(f"replicate {task.model} takes no image", provider=PROVIDER)
        if task.image is None:
            raise Rejected("image_to_video needs an image", provider=PROVIDER)
        body[model.image_field] = image_reference(task.image, IMAGE_ACCEPTANCE, PROVIDER)
    return body


def create_request(task: RenderTask) -> tuple[str, Fields]:
    """The path and JSON body of the create call: by name for official models, else by version."""
    model = model_for(task.model)
    body: Fields = {"input": model_input(task)}
    if task.webhook_url:
        body.update(webhook=task.webhook_url, webhook_events_filter=WEBHOOK_EVENTS)
    if model.official:
        return f"/v1/models/{task.model}/predictions", body
    return "/v1/predictions", {"version": model.version, **body}


def output_url(prediction: Mapping[str, Any]) -> str | None:
    """The video's URL: `output` is one URL, or a list whose first is the video; None once removed."""
    if prediction.get("data_removed") is True:
        return None
    output = prediction.get("output")
    if isinstance(output, list):
        output = output[0] if output else None
    return output if isinstance(output, str) and output.startswith(("https://", "http://")) else None


def _reported(prediction: Mapping[str, Any], state: TaskState, official: bool) -> ReportedCost | None:
    if official:  # billed per output: nothing delivered, nothing charged
        return ReportedCost(Decimal(0), CostUnit.USD) if state in ENDED_UNSUCCESSFULLY else None
    metrics = prediction.get("metrics")
    seconds = metrics.get("predict_time") if isinstance(metrics, dict) and state.terminal else None
    return cost_of(seconds, CostUnit.COMPUTE_SECONDS)


def parse_prediction(prediction: Mapping[str, Any], *, official: bool) -> TaskStatus:
    """A prediction (an answer or a webhook body) as a unified status. Nothing was charged that a
    zero cost could mean refunded: an official model bills only a delivered video."""
    state = state_of(_STATES, prediction, PROVIDER, "prediction")
    error = None
    if state is TaskState.FAILED:
        # Replicate says why a prediction failed only in words: another route may well succeed.
        error = GenerationFailed(f"replicate prediction failed: {prediction.get('error')}", provider=PROVIDER)
    return task_status(
        state,
        output_url=output_url(prediction),
        cost=_reported(prediction, state, official),
        error=error,
        refunded=False,
    )


def verify_signature(secret: str, headers: Mapping[str, str], body: bytes, now: float) -> None:
    """Check a Standard Webhooks signature as `replicate.webhooks.validate` does; `Rejected` if not."""
    webhook_id, timestamp = headers.get("webhook-id"), headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not webhook_id or not timestamp or not signatures:
        raise Rejected("replicate webhook lacks its webhook-id, -timestamp or -signature", provider=PROVIDER)
    try:
        sent_at = int(timestamp)
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (ValueError, binascii.Error) as exc:
        raise Rejected("replicate webhook timestamp or secret is malformed", provider=PROVIDER) from exc
    if abs(now - sent_at) > TOLERANCE_S:
        raise Rejected("replicate webhook timestamp is outside the tolerance", provider=PROVIDER)
    signed = webhook_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = hmac.new(key, signed, hashlib.sha256).digest()
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        try:
            given = base64.b64decode(value, validate=True)
        except binascii.Error:
            continue
        if version == "v1" and hmac.compare_digest(given, expected):
            return
    raise Rejected("replicate webhook signature does not match", provider=PROVIDER)


class ReplicateAdapter(HttpAdapter):
    """The Replicate adapter: problem details carry no finer code than the HTTP status (the `title`
    travels as the provider code). `wall_clock` reads Unix time, as webhook timestamps are."""

    spec = SPEC
    provider = PROVIDER
    no_message = "no detail"

    def __init__(
        self, ctx: AdapterContext, *, timeout_s: float = REQUEST_TIMEOUT_S, wall_clock: Clock = time.time
    ) -> None:
        super().__init__(ctx, timeout_s=timeout_s)
        self._wall_clock = wall_clock

    def error_fields(self, body: Mapping[str, Any]) -> tuple[str | None, str | None, Any]:
        return text(body.get("title")), text(body.get("detail")), None

    async def submit(self, task: RenderTask) -> Submission:
        """Create the prediction; it cancels itself at the poll deadline (`Cancel-After`)."""
        path, body = create_request(task)
        cancel_after = {"Cancel-After": f"{int(self.spec.poll_schedule.deadline_s)}s"}
        answer = await self.answer(
            "POST", self._base + path, submit=True, json_body=body, headers=cancel_after
        )
        prediction_id = self.created_id(answer, "id")
        official = "true" if model_for(task.model).official else "false"
        return Submission(handle=TaskHandle(prediction_id, task.model, data={"official": official}))

    async def status(self, handle: TaskHandle) -> TaskStatus:
        """Read the prediction (free); its output URL is the current one."""
        answer = await self.answer("GET", f"{self._base}/v1/predictions/{handle.provider_job_id}")
        return parse_prediction(answer, official=_official(handle))

    async def cancel(self, handle: TaskHandle) -> bool:
        """Cancel the prediction; True when it was still going and is now canceled (Replicate answers
        a finished one with the prediction as it ended), False for one it does not know."""
        reply = await self.request("POST", f"{self._base}/v1/predictions/{handle.provider_job_id}/cancel")
        if reply.status == 404:
            return False
        answer = json_answer(reply, self.reply_error, provider=PROVIDER, submit=False)
        return answer.get("status") == "canceled"

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """Verify the Standard Webhooks signature, then parse the prediction it carries."""
        lowered = {name.lower(): value for name, value in headers.items()}
        verify_signature(self.webhook_secret(), lowered, body, self._wall_clock())
        payload = self.webhook_json(body)
        prediction_id = self.webhook_task_id(payload, "id", _STATES)
        official = str(payload.get("model")) in _OFFICIAL_NAMES  # `model` is "owner/name"
        return WebhookEvent(prediction_id, parse_prediction(payload, official=official))


_OFFICIAL_NAMES = frozenset(name for name, model in MODELS.items() if model.official)


def _official(handle: TaskHandle) -> bool:
    official = handle.data.get("official")
    return model_for(handle.model).official if official is None else official == "true"


def build(ctx: AdapterContext) -> ReplicateAdapter:
    """The Replicate adapter factory."""
    return ReplicateAdapter.from_context(ctx)
