"""muvi / PixelByte's job API (`api.muvi.video`), from its docs (seed 002, providers.md).

    POST /v1/jobs/submit          {"model", "input": {prompt, image_url, aspect_ratio, duration: "5"},
                                   "webhookUrl"?} -> {jobId, status, estimatedCompletionTime, costMicroCents}
    GET  /v1/jobs/{jobId}         pending | processing | completed | failed | cancelled
    POST /v1/jobs/{jobId}/cancel  pending jobs only -> {jobId, status, refundedMicroCents}

`model` is muvi's slug (`runway/gen-4/image-to-video`). muvi's "micro-cents" are micro-dollars (see
pricing); the cost quoted at submit is what a finished job is charged unless the job answer says
otherwise. The image must be an https URL. Webhooks carry `X-PixelByte-Timestamp` and
`X-PixelByte-Signature: sha256=HMAC(secret, "<timestamp>." + raw body)` (the signed message as
adapters/emulators/webhooks.py defines it) and are refused when stale. A submit is never repeated
once it may have reached muvi.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from adapters.answers import SEED_STATES, cost_of, number, state_of, task_status, text
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
from adapters.errors import (
    AuthFailed,
    InsufficientFunds,
    ProviderUnavailable,
    RateLimited,
    Rejected,
    RequestInvalid,
)
from adapters.http import REQUEST_TIMEOUT_S
from adapters.http_adapter import SAFETY_PREFIX, SEED_CODES, ErrorCodes, HttpAdapter, signature_matches
from adapters.images import image_reference
from adapters.spec import QUEUED, CancelTerms, ProviderSpec, Webhooks
from broker.schema import Mode
from pricing.units import CostUnit, ReportedCost

PROVIDER = "muvi"
IMAGE_ACCEPTANCE = ImageAcceptance(url=True)
# muvi publishes no output retention. It cancels (and refunds in full) pending jobs only.
SPEC = ProviderSpec(
    name=PROVIDER,
    poll_schedule=PollSchedule(min_interval_s=5.0, max_interval_s=30.0),
    image_acceptance=IMAGE_ACCEPTANCE,
    billing_unit=CostUnit.MICRO_CENTS,
    webhooks=Webhooks.SIGNED,
    cancel=CancelTerms(stops=QUEUED, refunds=QUEUED),
)
TIMESTAMP_HEADER = "X-PixelByte-Timestamp"
SIGNATURE_HEADER = "X-PixelByte-Signature"
WEBHOOK_TOLERANCE_S = 300.0
_COST_KEY = "cost_micro_cents"

_STATES = SEED_STATES
# By `error.code` first (a 429 is always a rate limit), then by HTTP status.
CODES = ErrorCodes(
    by_code={
        "CONCURRENT_JOBS_EXCEEDED": RateLimited,
        "INVALID_INPUT": RequestInvalid,
        "INSUFFICIENT_BALANCE": InsufficientFunds,
        "MODEL_ACCESS_DENIED": AuthFailed,
        "UNAUTHORIZED": AuthFailed,
        "INTERNAL_ERROR": ProviderUnavailable,
        **SEED_CODES,
    },
    prefixes=SAFETY_PREFIX,
)


def _error_fields(error: Any) -> tuple[str | None, str]:
    if not isinstance(error, dict):
        return None, "no message"
    return text(error.get("code")), str(error.get("message") or "no message")


def request_body(task: RenderTask) -> dict[str, Any]:
    """muvi's submit body: the input nested, `duration` as a string."""
    request = task.request
    if request.resolved_mode is not Mode.IMAGE_TO_VIDEO or task.image is None:
        raise Rejected("muvi's models animate an image; this job has none", provider=PROVIDER)
    body: dict[str, Any] = {
        "model": task.model,
        "input": {
            "prompt": request.prompt,
            "image_url": image_reference(task.image, IMAGE_ACCEPTANCE, PROVIDER),
            "aspect_ratio": request.aspect_ratio.value,
            "duration": str(request.duration_s),
        },
    }
    if task.webhook_url:
        body["webhookUrl"] = task.webhook_url
    return body


def _micro_cents(value: Any) -> ReportedCost | None:
    return cost_of(value, CostUnit.MICRO_CENTS)


def _output(payload: Mapping[str, Any]) -> str | None:
    output = payload.get("output")
    if isinstance(output, str):
        return output
    outputs = payload.get("outputs")
    if isinstance(outputs, list) and outputs and isinstance(outputs[0], dict):
        url = outputs[0].get("url")
        return url if isinstance(url, str) else None
    return None


def parse_job(payload: Mapping[str, Any], quoted: ReportedCost | None) -> TaskStatus:
    """A job answer (or webhook) as a unified status; `quoted` is the cost muvi gave at submit."""
    state = state_of(_STATES, payload, PROVIDER, "job")
    charged = _micro_cents(payload.get("costMicroCents"))
    if charged is None and state is TaskState.SUCCEEDED:
        charged = quoted
    if state is TaskState.CANCELLED:  # only pending jobs cancel, and muvi refunds them in full
        charged = ReportedCost(Decimal(0), CostUnit.MICRO_CENTS)
    error = None
    if state is TaskState.FAILED:
        code, message = _error_fields(payload.get("error"))
        error = CODES.error(PROVIDER, None, code, f"muvi job failed: {message}")
    progress = number(payload.get("progress"))
    return task_status(
        state,
        progress=progress / 100 if progress is not None else None,
        output_url=_output(payload),
        cost=charged,
        error=error,
    )


class MuviAdapter(HttpAdapter):
    """The muvi adapter. `wall_clock` reads Unix time (ETAs and webhook timestamps)."""

    spec = SPEC
    provider = PROVIDER
    codes = CODES

    def __init__(
        self, ctx: AdapterContext, *, timeout_s: float = REQUEST_TIMEOUT_S, wall_clock: Clock = time.time
    ) -> None:
        super().__init__(ctx, timeout_s=timeout_s)
        self._wall_clock = wall_clock

    def error_fields(self, body: Mapping[str, Any]) -> tuple[str | None, str | None, Any]:
        code, message = _error_fields(body.get("error"))
        return code, message, None

    async def submit(self, task: RenderTask) -> Submission:
        """Submit the job (sent once: the broker retries a 429 or 5xx as a due time)."""
        body = request_body(task)
        answer = await self.answer("POST", f"{self._base}/v1/jobs/submit", submit=True, json_body=body)
        job_id = self.created_id(answer, "jobId")
        cost = _micro_cents(answer.get("costMicroCents"))
        data = {_COST_KEY: str(cost.amount)} if cost is not None else {}
        return Submission(
            handle=TaskHandle(provider_job_id=job_id, model=task.model, data=data),
            estimated_seconds=self._seconds_until(answer.get("estimatedCompletionTime")),
            reported_cost=cost,
        )

    def _seconds_until(self, iso_time: Any) -> float | None:
        if not isinstance(iso_time, str):
            return None
        try:
            moment = datetime.fromisoformat(iso_time.replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            return None
        return max(0.0, moment.timestamp() - self._wall_clock())

    async def status(self, handle: TaskHandle) -> TaskStatus:
        """Read the job (free; safe to repeat)."""
        answer = await self.answer("GET", f"{self._base}/v1/jobs/{handle.provider_job_id}")
        quoted = handle.data.get(_COST_KEY)
        return parse_job(answer, ReportedCost(Decimal(quoted), CostUnit.MICRO_CENTS) if quoted else None)

    async def cancel(self, handle: TaskHandle) -> bool:
        """Cancel a pending job; False once it is processing or done (muvi cancels only pending ones)."""
        return await self.cancel_request(
            "POST",
            f"{self._base}/v1/jobs/{handle.provider_job_id}/cancel",
            too_late=frozenset(),
            too_late_codes=frozenset({"INVALID_INPUT", "JOB_NOT_FOUND"}),
        )

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """Verify the signature and freshness of a muvi webhook, then parse it."""
        self._verify(headers, body)
        payload = self.webhook_json(body)
        job_id = self.webhook_task_id(payload, "jobId", _STATES)
        return WebhookEvent(provider_job_id=job_id, status=parse_job(payload, None))

    def _verify(self, headers: Mapping[str, str], body: bytes) -> None:
        secret = self.webhook_secret()
        stamp = headers.get(TIMESTAMP_HEADER, "")
        if not stamp.isdigit() or abs(self._wall_clock() - int(stamp)) > WEBHOOK_TOLERANCE_S:
            raise Rejected("muvi webhook timestamp is missing or stale", provider=PROVIDER)
        if not signature_matches(secret, stamp.encode() + b"." + body, headers.get(SIGNATURE_HEADER, "")):
            raise Rejected("muvi webhook signature does not match", provider=PROVIDER)


def build(ctx: AdapterContext) -> MuviAdapter:
    """The muvi adapter factory."""
    return MuviAdapter.from_context(ctx)
