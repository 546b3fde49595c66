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
    ContentRejected,
    InsufficientFunds,
    ProviderUnavailable,
    RateLimited,
    Rejected,
    RequestInvalid,
    SubmissionUncertain,
)
from adapters.http import REQUEST_TIMEOUT_S, RetryPolicy
from adapters.http_adapter import ErrorCodes, HttpAdapter, signature_matches
from adapters.images import image_reference
from adapters.spec import DAY_S, CancelTerms, ProviderSpec, Webhooks
from broker.schema import Mode
from pricing.units import CostUnit, ReportedCost

PROVIDER = "muvi"
IMAGE_ACCEPTANCE = ImageAcceptance(url=True)
SUBMIT_RETRY = RetryPolicy(attempts=3, max_elapsed_s=60.0)
# muvi publishes no output retention: a day. It cancels (and refunds in full) pending jobs only.
SPEC = ProviderSpec(
    name=PROVIDER,
    output_retention_s=DAY_S,
    poll_schedule=PollSchedule(min_interval_s=5.0, max_interval_s=30.0, backoff=1.5, deadline_s=900.0),
    image_acceptance=IMAGE_ACCEPTANCE,
    submit_retry=SUBMIT_RETRY,
    billing_unit=CostUnit.MICRO_CENTS,
    webhooks=Webhooks.SIGNED,
    cancel=CancelTerms(stops=frozenset({TaskState.QUEUED}), refunds=frozenset({TaskState.QUEUED})),
)
TIMESTAMP_HEADER = "X-PixelByte-Timestamp"
SIGNATURE_HEADER = "X-PixelByte-Signature"
WEBHOOK_TOLERANCE_S = 300.0
_COST_KEY = "cost_micro_cents"

_STATES = {
    "pending": TaskState.QUEUED,
    "processing": TaskState.RUNNING,
    "completed": TaskState.SUCCEEDED,
    "failed": TaskState.FAILED,
    "cancelled": TaskState.CANCELLED,
}
# By `error.code` first (a 429 is always a rate limit), then by HTTP status.
CODES = ErrorCodes(
    by_code={
        "CONCURRENT_JOBS_EXCEEDED": RateLimited,
        "INVALID_INPUT": RequestInvalid,
        "INSUFFICIENT_BALANCE": InsufficientFunds,
        "MODEL_ACCESS_DENIED": AuthFailed,
        "UNAUTHORIZED": AuthFailed,
        "INTERNAL_ERROR": ProviderUnavailable,
        "GENERATION_FAILED": ProviderUnavailable,
        "CONTENT_POLICY_VIOLATION": ContentRejected,
        "CONTENT_MODERATED": ContentRejected,
    },
    prefixes=(("SAFETY", ContentRejected),),
)


def _error_fields(error: Any) -> tuple[str | None, str]:
    if not isinstance(error, dict):
        return None, "no message"
    code = error.get("code")
    return (code if isinstance(code, str) else None), str(error.get("message") or "no message")


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
    if isinstance(value, int | float) and not isinstance(value, bool):
        return ReportedCost(Decimal(str(value)), CostUnit.MICRO_CENTS)
    return None


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
    state = _STATES.get(str(payload.get("status")))
    if state is None:
        raise ProviderUnavailable(f"muvi job has unknown status {payload.get('status')!r}", provider=PROVIDER)
    charged = _micro_cents(payload.get("costMicroCents"))
    if charged is None and state is TaskState.SUCCEEDED:
        charged = quoted
    if state is TaskState.CANCELLED:  # only pending jobs cancel, and muvi refunds them in full
        charged = ReportedCost(Decimal(0), CostUnit.MICRO_CENTS)
    error = None
    if state is TaskState.FAILED:
        code, message = _error_fields(payload.get("error"))
        error = CODES.error(PROVIDER, None, code, f"muvi job failed: {message}")
    progress = payload.get("progress")
    return TaskStatus(
        state=state,
        progress=progress / 100 if isinstance(progress, int | float) else None,
        output_url=_output(payload) if state is TaskState.SUCCEEDED else None,
        reported_cost=charged,
        refunded=state in (TaskState.FAILED, TaskState.CANCELLED)
        and charged is not None
        and charged.amount == 0,
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
        job_id = answer.get("jobId")
        if not isinstance(job_id, str) or not job_id:
            raise SubmissionUncertain(
                "muvi accepted the submit but its answer has no jobId", provider=PROVIDER
            )
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
        job_id = payload.get("jobId")
        if not isinstance(job_id, str) or payload.get("status") not in _STATES:
            raise Rejected("muvi webhook lacks jobId or a known status", provider=PROVIDER)
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
