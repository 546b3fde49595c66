"""doitong's Runway image-to-video wrapper (`api.doitong.com`), over its GraphQL endpoint (seed 004).

    POST /graphql  GENERATE   the seed's mutation; `Idempotency-Key: <attempt id>` on every submit
                   JOB        our status query (the seed has none) [none]
                   CANCEL     our cancel mutation [none]

`model` is doitong's service id (`runway-i2v`). Errors are `errors[].extensions.code` with the HTTP
status. doitong alone takes an idempotency key, so a submit whose answer was lost is repeated with
the same key, which returns the job the first one created rather than a second. Costs are
`creditCost` credits (0 once refunded); doitong's USD per credit is the operator's to set. Webhooks
carry `X-Doitong-Signature: sha256=<hex HMAC-SHA256 of the raw body>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.answers import SEED_STATES, cost_of, state_of, task_status, text
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
    AuthFailed,
    InsufficientFunds,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    Rejected,
    RequestInvalid,
    SubmissionUncertain,
)
from adapters.http import Reply, RetryPolicy
from adapters.http_adapter import SAFETY_PREFIX, SEED_CODES, ErrorCodes, HttpAdapter, signature_matches
from adapters.images import image_reference
from adapters.spec import ACTIVE, CancelTerms, ProviderSpec, Webhooks
from broker.schema import AspectRatio, Mode
from pricing.units import CostUnit

PROVIDER = "doitong"
IMAGE_ACCEPTANCE = ImageAcceptance(url=True)
# The submit is safe to repeat with its Idempotency-Key, so a lost answer is retried too.
SUBMIT_RETRY = RetryPolicy(
    attempts=4, max_elapsed_s=90.0, retry_on=(RateLimited, ProviderUnavailable, SubmissionUncertain)
)
# doitong publishes no output retention. A cancelled job is refunded (creditCost reads 0).
SPEC = ProviderSpec(
    name=PROVIDER,
    poll_schedule=PollSchedule(min_interval_s=3.0, max_interval_s=30.0),
    image_acceptance=IMAGE_ACCEPTANCE,
    billing_unit=CostUnit.CREDITS,
    submit_retry=SUBMIT_RETRY,
    idempotent_submit=True,
    webhooks=Webhooks.SIGNED,
    cancel=CancelTerms(stops=ACTIVE, refunds=ACTIVE),
)
SIGNATURE_HEADER = "X-Doitong-Signature"
DURATIONS = (5, 10)
ASPECT_RATIOS = (AspectRatio.WIDE, AspectRatio.TALL, AspectRatio.SQUARE)
VERSION = "gen-4"

GENERATE = (
    "mutation Generate($input: GenerateInput!) { generate(input: $input) "
    "{ id status type provider url metadata creditCost } }"
)
JOB = "query Job($id: ID!) { job(id: $id) { id status url creditCost metadata error } }"
CANCEL = "mutation CancelJob($id: ID!) { cancelJob(id: $id) { id status creditCost } }"

_STATES = SEED_STATES
# By `extensions.code` first (a 429 is always a rate limit), then by HTTP status.
CODES = ErrorCodes(
    by_code={
        "RATE_LIMITED": RateLimited,
        "CONCURRENT_LIMIT_EXCEEDED": RateLimited,
        "BAD_USER_INPUT": RequestInvalid,
        "GRAPHQL_VALIDATION_FAILED": RequestInvalid,
        "GRAPHQL_PARSE_FAILED": RequestInvalid,
        "IDEMPOTENCY_KEY_REUSED": Rejected,
        "UNAUTHENTICATED": AuthFailed,
        "FORBIDDEN": AuthFailed,
        "INSUFFICIENT_CREDITS": InsufficientFunds,
        "INTERNAL_SERVER_ERROR": ProviderUnavailable,
        **SEED_CODES,
    },
    prefixes=SAFETY_PREFIX,
)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def generate_input(task: RenderTask) -> dict[str, Any]:
    """The `GenerateInput` variables of a submit."""
    request = task.request
    if request.resolved_mode is not Mode.IMAGE_TO_VIDEO or task.image is None:
        raise Rejected("doitong animates an image; this job has none", provider=PROVIDER)
    if request.duration_s not in DURATIONS or request.aspect_ratio not in ASPECT_RATIOS:
        raise RequestInvalid("doitong renders 5 or 10 s at 16:9, 9:16 or 1:1 only", provider=PROVIDER)
    media: dict[str, Any] = {"imageUrl": image_reference(task.image, IMAGE_ACCEPTANCE, PROVIDER)}
    if request.prompt:
        media["prompt"] = request.prompt  # [none]: the seed's GraphQL example has no prompt field
    value: dict[str, Any] = {
        "type": "VIDEO",
        "provider": task.model,
        "input": media,
        "options": {
            "duration": request.duration_s,
            "aspectRatio": request.aspect_ratio.value,
            "version": VERSION,
            "motionIntensity": "medium",
        },
    }
    if task.webhook_url:
        value["webhookUrl"] = task.webhook_url
    return value


def parse_job(job: Mapping[str, Any]) -> TaskStatus:
    """A Job (GraphQL answer or webhook) as a unified status."""
    state = state_of(_STATES, job, PROVIDER, "job")
    error = None
    if state is TaskState.FAILED:
        failure = _object(job.get("error"))
        message = f"doitong job failed: {failure.get('message') or 'no message'}"
        error = CODES.error(PROVIDER, None, text(failure.get("code")), message)
    return task_status(
        state, output_url=job.get("url"), cost=cost_of(job.get("creditCost"), CostUnit.CREDITS), error=error
    )


class DoitongAdapter(HttpAdapter):
    """The doitong adapter: every call is one GraphQL operation POSTed to `/graphql`."""

    spec = SPEC
    provider = PROVIDER
    codes = CODES

    def error_fields(self, body: Mapping[str, Any]) -> tuple[str | None, str | None, Any]:
        errors = body.get("errors")
        first = _object(errors[0]) if isinstance(errors, list) and errors else {}
        extensions = _object(first.get("extensions"))
        # Credits required/available travel on to the caller; they are not secrets.
        details = {k: v for k, v in extensions.items() if k in ("creditsRequired", "creditsAvailable")}
        return text(extensions.get("code")), first.get("message") or None, details or None

    def _data(self, reply: Reply, field: str, *, submit: bool) -> dict[str, Any]:
        """`data.<field>` of a GraphQL answer; errors (in any answer) are raised in our hierarchy."""
        body = reply.json_object()
        if not reply.ok or (body is not None and body.get("errors")):
            raise self.reply_error(reply)
        data = body.get("data") if body is not None else None
        value = data.get(field) if isinstance(data, dict) else None
        if not isinstance(value, dict):
            error_class = SubmissionUncertain if submit else ProviderUnavailable
            raise error_class(
                f"doitong answered without data.{field}", provider=PROVIDER, status=reply.status
            )
        return value

    async def _operation(
        self,
        query: str,
        variables: dict[str, Any],
        field: str,
        *,
        submit: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        body = {"query": query, "variables": variables}
        reply = await self.request(
            "POST", f"{self._base}/graphql", submit=submit, json_body=body, headers=headers
        )
        return self._data(reply, field, submit=submit)

    async def submit(self, task: RenderTask) -> Submission:
        """Generate with the attempt id as Idempotency-Key: sent again, it finds the job it made."""
        variables = {"input": generate_input(task)}
        key = {"Idempotency-Key": task.attempt_id}
        job = await self._operation(GENERATE, variables, "generate", submit=True, headers=key)
        return Submission(
            handle=TaskHandle(provider_job_id=self.created_id(job, "id"), model=task.model),
            reported_cost=parse_job(job).reported_cost,
        )

    async def status(self, handle: TaskHandle) -> TaskStatus:
        """Read the job (free; safe to repeat)."""
        return parse_job(await self._operation(JOB, {"id": handle.provider_job_id}, "job"))

    async def cancel(self, handle: TaskHandle) -> bool:
        """Cancel a processing job; False when it already ended or is unknown."""
        try:
            await self._operation(CANCEL, {"id": handle.provider_job_id}, "cancelJob")
        except ProviderError as exc:
            if exc.provider_code in ("NOT_CANCELLABLE", "NOT_FOUND"):
                return False
            raise
        return True

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """Verify `X-Doitong-Signature` over the raw body, then parse the job it reports."""
        if not signature_matches(self.webhook_secret(), body, headers.get(SIGNATURE_HEADER, "")):
            raise Rejected("doitong webhook signature does not match", provider=PROVIDER)
        payload = self.webhook_json(body)
        job_id = self.webhook_task_id(payload, "id", _STATES)
        return WebhookEvent(provider_job_id=job_id, status=parse_job(payload))


def build(ctx: AdapterContext) -> DoitongAdapter:
    """The doitong adapter factory."""
    return DoitongAdapter.from_context(ctx)
