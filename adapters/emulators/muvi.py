"""muvi / PixelByte's job API (`api.muvi.video`), from its docs (seed 002 and providers.md).

    POST /v1/jobs/submit          {"model", "input": {prompt, image_url, aspect_ratio, duration: "5"},
                                   "webhookUrl"?} -> {jobId, status: "pending", estimatedCompletionTime,
                                   costMicroCents}
    GET  /v1/jobs/{jobId}         {jobId, status: pending|processing|completed|failed|cancelled,
                                   progress, output, outputs, error, createdAt, completedAt}
    POST /v1/jobs/{jobId}/cancel  pending jobs only -> {jobId, status: "cancelled", refundedMicroCents}

Auth is `Authorization: Bearer`. `duration` must be a string ("5" or "10"): a number is 400
INVALID_INPUT. Costs are muvi "micro-cents", which are micro-dollars: runway/gen-4 is 100,000 per
second, so 5 s = 500,000 = $0.50. Errors are `{success: false, error: {code, message, details},
requestId}` with INVALID_INPUT 400, INSUFFICIENT_BALANCE 402, MODEL_ACCESS_DENIED 403, JOB_NOT_FOUND
404, CONCURRENT_JOBS_EXCEEDED 429, INTERNAL_ERROR 500. Webhooks: `{jobId, status: completed|failed,
output | error, completedAt}`, signed as webhooks.py defines.

Defined here [none]: `progress` is a whole percentage 0..100; GET also carries `costMicroCents`, the
amount finally charged (0 once failed or cancelled: refunded); cancelling a job that is no longer
pending is 400 INVALID_INPUT; failed jobs use `error.code` GENERATION_FAILED unless a fault sets one;
a cancelled job sends no webhook; unknown model slugs are 400 INVALID_INPUT.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from adapters.emulators.app import base_app
from adapters.emulators.emulator import ProtocolError, ProviderEmulator, bearer_token, json_object
from adapters.emulators.media import Delivery, size_for_ratio
from adapters.emulators.tasks import EmulatedTask, Phase, iso, new_id
from adapters.emulators.webhooks import encode_body, muvi_signature_headers

MICRO_CENTS_PER_SECOND = {
    "runway/gen-4/image-to-video": 100_000,
    "runway/gen-4-turbo/image-to-video": 50_000,
}
DURATIONS = frozenset({"5", "10"})
ASPECT_RATIOS = {
    "16:9": (16, 9),
    "9:16": (9, 16),
    "1:1": (1, 1),
    "4:3": (4, 3),
    "3:4": (3, 4),
    "21:9": (21, 9),
}
STATUS_WORDS = {
    Phase.QUEUED: "pending",
    Phase.RUNNING: "processing",
    Phase.SUCCEEDED: "completed",
    Phase.FAILED: "failed",
    Phase.CANCELLED: "cancelled",
}


class MuviEmulator(ProviderEmulator):
    """muvi's state: an optional balance and concurrency cap, both in its own terms."""

    provider = "muvi"
    # Wan 2.1 renders at 16 fps.
    delivery = Delivery(fps=16)
    rate_limit_code = "CONCURRENT_JOBS_EXCEEDED"
    task_fail_code = "GENERATION_FAILED"

    def __init__(
        self,
        *,
        balance_micro_cents: int | None = None,
        max_concurrent: int | None = None,
        webhook_secret: str | None = "muvi-webhook-secret",
        **kwargs: Any,
    ) -> None:
        super().__init__(webhook_secret=webhook_secret, **kwargs)
        self.balance_micro_cents = balance_micro_cents
        self.max_concurrent = max_concurrent

    def charged(self, task: EmulatedTask) -> int:
        """What the job costs in the end: refunded when it failed or was cancelled."""
        return 0 if self.phase(task) in (Phase.FAILED, Phase.CANCELLED) else task.cost

    def admit(self, cost: int) -> None:
        """Refuse a submit over the concurrency cap or the balance."""
        if self.max_concurrent is not None and self.active_count() >= self.max_concurrent:
            raise ProtocolError(429, "CONCURRENT_JOBS_EXCEEDED", "Too many concurrent jobs")
        if self.balance_micro_cents is not None:
            spent = sum(self.charged(t) for t in self.tasks.values())
            if self.balance_micro_cents - spent < cost:
                raise ProtocolError(402, "INSUFFICIENT_BALANCE", "Insufficient balance for this job")

    def error_response(self, error: ProtocolError, headers: Mapping[str, str] | None = None) -> web.Response:
        body = {
            "success": False,
            "error": {"code": error.code, "message": error.message, "details": error.extra or None},
            "requestId": new_id(),
        }
        return web.json_response(body, status=error.status, headers=headers)

    def authenticate(self, request: web.Request) -> None:
        if bearer_token(request) not in self.api_keys:
            raise ProtocolError(401, "UNAUTHORIZED", "Invalid or missing API key")

    def webhook_request(self, task: EmulatedTask) -> tuple[bytes, dict[str, str]] | None:
        phase = self.phase(task)
        if phase == Phase.CANCELLED:
            return None
        body: dict[str, Any] = {"jobId": task.id, "status": STATUS_WORDS[phase]}
        if phase == Phase.SUCCEEDED:
            body["output"] = task.output_url
        else:
            body["error"] = {"code": task.fail_code, "message": task.fail_message}
        body["completedAt"] = iso(task.finished_at(self.clock()) or self.clock())
        raw = encode_body(body)
        secret = self.signing_secret(task)
        if secret is None:
            return raw, {}
        # Signed at real wall time, as a real sender would, whatever clock drives the renders.
        return raw, muvi_signature_headers(secret, raw, int(time.time()))


def _invalid(field: str, message: str) -> ProtocolError:
    return ProtocolError(400, "INVALID_INPUT", message, extra={"field": field})


def validate(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Check a submit body; returns the model's micro-cents per second and the input."""
    rate = MICRO_CENTS_PER_SECOND.get(body.get("model", ""))
    if rate is None:
        raise _invalid("model", f"model must be one of {sorted(MICRO_CENTS_PER_SECOND)}")
    data = body.get("input")
    if not isinstance(data, dict):
        raise _invalid("input", "input must be an object")
    if not isinstance(data.get("prompt"), str) or not data["prompt"]:
        raise _invalid("input.prompt", "prompt is required")
    image = data.get("image_url")
    # The page documents `image_url` as a URL muvi fetches (no data URI), as the adapter declares.
    if not isinstance(image, str) or not image.startswith(("https://", "http://")):
        raise _invalid("input.image_url", "image_url must be an http(s) URL of the image")
    duration = data.get("duration", "5")
    if not isinstance(duration, str):
        raise _invalid("input.duration", 'duration must be a string such as "5"')
    if duration not in DURATIONS:
        raise _invalid("input.duration", f"duration must be one of {sorted(DURATIONS)}")
    if data.get("aspect_ratio", "16:9") not in ASPECT_RATIOS:
        raise _invalid("input.aspect_ratio", f"aspect_ratio must be one of {sorted(ASPECT_RATIOS)}")
    webhook = body.get("webhookUrl")
    if webhook is not None and not (isinstance(webhook, str) and webhook.startswith(("https://", "http://"))):
        raise _invalid("webhookUrl", "webhookUrl must be a URL")
    return rate, data


async def _submit(request: web.Request) -> web.Response:
    emulator = request.app[MUVI_KEY]
    body = await json_object(request, code="INVALID_INPUT")
    rate, data = validate(body)
    duration = int(data.get("duration", "5"))
    emulator.admit(rate * duration)
    width, height = size_for_ratio(*ASPECT_RATIOS[data.get("aspect_ratio", "16:9")])
    task = emulator.create_task(
        request,
        body["model"],
        duration_s=duration,
        width=width,
        height=height,
        cost=rate * duration,
        webhook_url=body.get("webhookUrl"),
    )
    answer = {
        "jobId": task.id,
        "status": "pending",
        "estimatedCompletionTime": iso(task.created_at + task.render_s),
        "costMicroCents": task.cost,
    }
    return web.json_response(answer)


def job_json(emulator: MuviEmulator, task: EmulatedTask) -> dict[str, Any]:
    """A job as `GET /v1/jobs/{jobId}` answers it."""
    now = emulator.clock()
    phase = task.phase(now)
    done = phase == Phase.SUCCEEDED
    finished = task.finished_at(now)
    return {
        "jobId": task.id,
        "status": STATUS_WORDS[phase],
        "progress": round(task.progress(now) * 100) if phase != Phase.QUEUED else 0,
        "output": task.output_url if done else None,
        "outputs": [{"url": task.output_url, "type": "video", "contentType": "video/mp4"}] if done else None,
        "error": {"code": task.fail_code, "message": task.fail_message} if phase == Phase.FAILED else None,
        "createdAt": iso(task.created_at),
        "completedAt": iso(finished) if finished is not None else None,
        "costMicroCents": emulator.charged(task),
    }


def _job(request: web.Request) -> EmulatedTask:
    task = request.app[MUVI_KEY].find_task(request.match_info["job_id"])
    if task is None:
        raise ProtocolError(404, "JOB_NOT_FOUND", "Job not found")
    return task


async def _get_job(request: web.Request) -> web.Response:
    return web.json_response(job_json(request.app[MUVI_KEY], _job(request)))


async def _cancel(request: web.Request) -> web.Response:
    emulator = request.app[MUVI_KEY]
    task = _job(request)
    now = emulator.clock()
    if task.phase(now) != Phase.QUEUED:
        raise ProtocolError(400, "INVALID_INPUT", "Only pending jobs can be cancelled")
    task.cancelled_at = now
    return web.json_response({"jobId": task.id, "status": "cancelled", "refundedMicroCents": task.cost})


MUVI_KEY = web.AppKey("muvi_emulator", MuviEmulator)


def create_app(emulator: MuviEmulator | None = None) -> web.Application:
    """The muvi emulator app."""
    emulator = emulator or MuviEmulator()
    app = base_app(emulator)
    app[MUVI_KEY] = emulator
    app.router.add_post("/v1/jobs/submit", _submit, name="submit")
    app.router.add_get("/v1/jobs/{job_id}", _get_job, name="status")
    app.router.add_post("/v1/jobs/{job_id}/cancel", _cancel, name="cancel")
    return app
