"""doitong's Runway image-to-video wrapper (`api.doitong.com`), from seed 004.

GraphQL, `POST /graphql` with `Authorization: Bearer <key>`; the operations are the constants below
(`GENERATE_MUTATION` is the seed's; `JOB_QUERY` and `CANCEL_MUTATION` are ours [none]). REST,
`X-API-Key: <key>`: `POST /v1/image_to_video` {service, prompt, imageUrl, duration, aspectRatio,
version, webhookUrl} -> `{"data": {"imagevideo": {...}}}`, and `GET /v1/image_to_video/{id}` [none].

A submit may carry `Idempotency-Key`: the same key with the same body returns the job it created
first, never a second one; the same key with another body is 409 IDEMPOTENCY_KEY_REUSED [none].
Errors are `{"errors": [{"message", "extensions": {"code", ...}}], "data": null}` with the HTTP
status: 400 BAD_USER_INPUT / GRAPHQL_VALIDATION_FAILED, 401 UNAUTHENTICATED, 402
INSUFFICIENT_CREDITS (with creditsRequired, creditsAvailable), 404 NOT_FOUND, 429 RATE_LIMITED,
500 INTERNAL_SERVER_ERROR. Every answer has X-RateLimit-Limit/-Remaining/-Reset.

Defined here [none]: job status is `processing` until `completed`, `failed` (with `error {code,
message}`) or `cancelled`; `creditCost` is 10 credits per second of video, 0 once failed or
cancelled (refunded); `cancelJob` cancels a processing job and is 400 NOT_CANCELLABLE otherwise.
Webhooks: `{id, status, url, service, createdAt, completedAt, metadata}`, signed as webhooks.py says.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import deque
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from adapters.emulators.app import base_app
from adapters.emulators.emulator import ProtocolError, ProviderEmulator, bearer_token, json_object
from adapters.emulators.faults import Endpoint
from adapters.emulators.media import Delivery, size_for_ratio
from adapters.emulators.tasks import EmulatedTask, Phase, iso
from adapters.emulators.webhooks import doitong_signature_headers, encode_body

GENERATE_MUTATION = (
    "mutation Generate($input: GenerateInput!) { generate(input: $input) "
    "{ id status type provider url metadata creditCost } }"
)
JOB_QUERY = "query Job($id: ID!) { job(id: $id) { id status url creditCost metadata } }"
CANCEL_MUTATION = "mutation CancelJob($id: ID!) { cancelJob(id: $id) { id status creditCost } }"

JOB_FIELDS = frozenset(
    {"id", "status", "type", "provider", "url", "metadata", "creditCost", "createdAt", "completedAt", "error"}
)
OPERATIONS = {"generate": Endpoint.SUBMIT, "job": Endpoint.STATUS, "cancelJob": Endpoint.CANCEL}
MUTATIONS = frozenset({"generate", "cancelJob"})
ROOT_FIELD = re.compile(r"(\w+)\s*\(([^)]*)\)\s*\{([^{}]*)\}")
CREDITS_PER_SECOND = 10
# doitong publishes no USD value of a credit. The emulator's own figure, for the sandbox's price: the
# rate of the Runway gen4_turbo it wraps (0.05 USD/s), so its 50 credits per 5 s clip cost 0.25 USD.
USD_PER_CREDIT = "0.005"
DURATIONS = frozenset({5, 10})
ASPECT_RATIOS = {"16:9": (16, 9), "9:16": (9, 16), "1:1": (1, 1)}
VERSIONS = frozenset({"gen-2", "gen-3", "gen-4"})
MOTION = frozenset({"low", "medium", "high"})
SERVICE = "runway-i2v"
STATUS_WORDS = {Phase.SUCCEEDED: "completed", Phase.FAILED: "failed", Phase.CANCELLED: "cancelled"}


class DoitongEmulator(ProviderEmulator):
    """doitong's state: idempotency keys, an optional credit balance, concurrency and request limits."""

    provider = "doitong"
    # 25 fps, muxed without faststart (the index at the end of the file).
    delivery = Delivery(fps=25, faststart=False)
    server_error_code = "INTERNAL_SERVER_ERROR"
    task_fail_code = "GENERATION_FAILED"

    def __init__(
        self,
        *,
        credits: int | None = None,
        max_concurrent: int | None = None,
        requests_per_minute: int | None = None,
        webhook_secret: str | None = "doitong-webhook-secret",
        **kwargs: Any,
    ) -> None:
        super().__init__(webhook_secret=webhook_secret, **kwargs)
        self.credits = credits
        self.max_concurrent = max_concurrent
        self.requests_per_minute = requests_per_minute
        self.idempotency: dict[tuple[str, str], tuple[str, str]] = {}  # (api key, key) -> (body hash, job)
        self._window: deque[float] = deque()

    def charged(self, task: EmulatedTask) -> int:
        """Credits the job costs in the end: refunded when it failed or was cancelled."""
        return 0 if self.phase(task) in (Phase.FAILED, Phase.CANCELLED) else task.cost

    def error_response(self, error: ProtocolError, headers: Mapping[str, str] | None = None) -> web.Response:
        item = {"message": error.message, "extensions": {"code": error.code, **error.extra}}
        return web.json_response({"errors": [item], "data": None}, status=error.status, headers=headers)

    def authenticate(self, request: web.Request) -> None:
        key = bearer_token(request) if request.path == "/graphql" else request.headers.get("X-API-Key")
        if key not in self.api_keys:
            raise ProtocolError(401, "UNAUTHENTICATED", "Missing or invalid API key")
        self._count_request()

    def _count_request(self) -> None:
        now = self.clock()
        while self._window and self._window[0] <= now - 60:
            self._window.popleft()
        if self.requests_per_minute is not None and len(self._window) >= self.requests_per_minute:
            retry = str(max(1, round(self._window[0] + 60 - now)))
            raise ProtocolError(429, "RATE_LIMITED", "Rate limit exceeded", headers={"Retry-After": retry})
        self._window.append(now)

    def extra_headers(self) -> dict[str, str]:
        limit = self.requests_per_minute or 60
        reset = (self._window[0] if self._window else self.clock()) + 60
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(0, limit - len(self._window))),
            "X-RateLimit-Reset": str(int(reset)),
        }

    async def endpoint_for(self, request: web.Request, named: Endpoint) -> Endpoint:
        if request.path != "/graphql":
            return named
        try:
            query = (await request.json()).get("query", "")
            match = ROOT_FIELD.search(query)
        except (ValueError, AttributeError):
            return named
        return OPERATIONS.get(match.group(1), named) if match else named

    def webhook_request(self, task: EmulatedTask) -> tuple[bytes, dict[str, str]] | None:
        job = job_json(self, task)
        body = {key: job[key] for key in ("id", "status", "url", "createdAt", "completedAt", "metadata")}
        raw = encode_body({**body, "service": SERVICE})
        secret = self.signing_secret(task)
        return raw, doitong_signature_headers(secret, raw) if secret else {}

    def admit(self, cost: int) -> None:
        """Refuse a submit over the concurrency limit or the credit balance."""
        if self.max_concurrent is not None and self.active_count() >= self.max_concurrent:
            raise ProtocolError(429, "CONCURRENT_LIMIT_EXCEEDED", "Too many concurrent jobs for your plan")
        if self.credits is not None:
            available = self.credits - sum(self.charged(t) for t in self.tasks.values())
            if available < cost:
                extra = {"creditsRequired": cost, "creditsAvailable": available}
                raise ProtocolError(
                    402, "INSUFFICIENT_CREDITS", "Insufficient credits for this operation", extra=extra
                )


def job_json(emulator: DoitongEmulator, task: EmulatedTask) -> dict[str, Any]:
    """Every Job field; GraphQL answers pick the selected ones."""
    now = emulator.clock()
    phase = task.phase(now)
    finished = task.finished_at(now)
    return {
        "id": task.id,
        "status": STATUS_WORDS.get(phase, "processing"),
        "type": "VIDEO",
        "provider": SERVICE,
        "url": task.output_url if phase == Phase.SUCCEEDED else None,
        "metadata": {"duration": task.duration_s, "width": task.width, "height": task.height, **task.params},
        "creditCost": emulator.charged(task),
        "createdAt": iso(task.created_at),
        "completedAt": iso(finished) if finished is not None else None,
        "error": {"code": task.fail_code, "message": task.fail_message} if phase == Phase.FAILED else None,
    }


def _bad_input(message: str, field: str) -> ProtocolError:
    return ProtocolError(400, "BAD_USER_INPUT", message, extra={"field": field})


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Validate generation options; returns them with defaults filled in."""
    duration = options.get("duration", 5)
    if isinstance(duration, bool) or duration not in DURATIONS:
        raise _bad_input("duration must be the integer 5 or 10", "options.duration")
    ratio = options.get("aspectRatio", "16:9")
    if ratio not in ASPECT_RATIOS:
        raise _bad_input(f"aspectRatio must be one of {sorted(ASPECT_RATIOS)}", "options.aspectRatio")
    version = options.get("version", "gen-4")
    if version not in VERSIONS:
        raise _bad_input(f"version must be one of {sorted(VERSIONS)}", "options.version")
    motion = options.get("motionIntensity", "medium")
    if motion not in MOTION:
        raise _bad_input(f"motionIntensity must be one of {sorted(MOTION)}", "options.motionIntensity")
    return {"duration": duration, "aspectRatio": ratio, "version": version, "motionIntensity": motion}


def check_image(image: Any, field: str) -> None:
    """Refuse anything but the image URL doitong's page documents (`imageUrl`: an http(s) URL it
    fetches); it documents no data URI, so none is taken, as the adapter declares (URL only)."""
    if not isinstance(image, str) or not image.startswith(("https://", "http://")):
        raise _bad_input("imageUrl must be an http(s) URL of the image", field)


def _fingerprint(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _replay(emulator: DoitongEmulator, request: web.Request, body: Any) -> EmulatedTask | None:
    """The job an earlier submit with this Idempotency-Key created, if any."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    scoped = (request.headers.get("Authorization") or request.headers.get("X-API-Key") or "", key)
    seen = emulator.idempotency.get(scoped)
    if seen is None:
        return None
    fingerprint, job_id = seen
    if fingerprint != _fingerprint(body):
        raise ProtocolError(
            409, "IDEMPOTENCY_KEY_REUSED", "Idempotency-Key was used with a different request"
        )
    return emulator.tasks[job_id]


def _remember(emulator: DoitongEmulator, request: web.Request, body: Any, task: EmulatedTask) -> None:
    key = request.headers.get("Idempotency-Key")
    if key is not None:
        scoped = (request.headers.get("Authorization") or request.headers.get("X-API-Key") or "", key)
        emulator.idempotency[scoped] = (_fingerprint(body), task.id)


def start_job(
    emulator: DoitongEmulator, request: web.Request, body: Any, options: dict[str, Any], webhook: Any
) -> EmulatedTask:
    """Create the job a submit asks for, or return the one its Idempotency-Key already made."""
    replayed = _replay(emulator, request, body)
    if replayed is not None:
        return replayed
    cost = CREDITS_PER_SECOND * options["duration"]
    emulator.admit(cost)
    width, height = size_for_ratio(*ASPECT_RATIOS[options["aspectRatio"]])
    task = emulator.create_task(
        request,
        f"{SERVICE}/{options['version']}",
        duration_s=options["duration"],
        width=width,
        height=height,
        cost=cost,
        webhook_url=webhook if isinstance(webhook, str) else None,
        params={"aspectRatio": options["aspectRatio"], "version": options["version"]},
    )
    _remember(emulator, request, body, task)
    return task


def parse_operation(body: dict[str, Any]) -> tuple[str, dict[str, Any], list[str]]:
    """The root field, its arguments (resolved from variables) and the selected Job fields."""
    query = body.get("query")
    if not isinstance(query, str):
        raise ProtocolError(400, "GRAPHQL_PARSE_FAILED", "A query string is required")
    match = ROOT_FIELD.search(query)
    if match is None or match.group(1) not in OPERATIONS:
        raise ProtocolError(
            400, "GRAPHQL_VALIDATION_FAILED", "Unknown operation; see generate, job, cancelJob"
        )
    field = match.group(1)
    if query.lstrip().startswith("mutation") != (field in MUTATIONS):
        raise ProtocolError(400, "GRAPHQL_VALIDATION_FAILED", f"{field} is in the wrong operation type")
    variables = body.get("variables") or {}
    args: dict[str, Any] = {}
    for argument in match.group(2).split(","):
        name, _, value = (part.strip() for part in argument.partition(":"))
        if not value.startswith("$"):
            raise ProtocolError(400, "GRAPHQL_VALIDATION_FAILED", "Pass arguments as variables")
        args[name] = variables.get(value[1:])
    if set(args) != ({"input"} if field == "generate" else {"id"}):
        raise ProtocolError(400, "GRAPHQL_VALIDATION_FAILED", f"Wrong arguments for {field}")
    selection = re.findall(r"\w+", match.group(3))
    unknown = sorted(set(selection) - JOB_FIELDS)
    if unknown:
        raise ProtocolError(
            400, "GRAPHQL_VALIDATION_FAILED", f'Cannot query field "{unknown[0]}" on type "Job"'
        )
    if not selection:
        raise ProtocolError(400, "GRAPHQL_VALIDATION_FAILED", "Select at least one Job field")
    return field, args, selection


def _generate(emulator: DoitongEmulator, request: web.Request, data: Any) -> EmulatedTask:
    if not isinstance(data, dict):
        raise _bad_input("input is required", "input")
    if data.get("type") != "VIDEO":
        raise _bad_input('type must be "VIDEO"', "input.type")
    if data.get("provider") != SERVICE:
        raise _bad_input(f'provider must be "{SERVICE}"', "input.provider")
    media = data.get("input")
    if not isinstance(media, dict):
        media = {}
    check_image(media.get("imageUrl", media.get("image")), "input.input.imageUrl")
    options = check_options(data.get("options") or {})
    return start_job(emulator, request, data, options, data.get("webhookUrl"))


def _find(emulator: DoitongEmulator, job_id: Any) -> EmulatedTask:
    task = emulator.find_task(job_id) if isinstance(job_id, str) else None
    if task is None:
        raise ProtocolError(404, "NOT_FOUND", "Job not found")
    return task


def _cancel(emulator: DoitongEmulator, job_id: Any) -> EmulatedTask:
    task = _find(emulator, job_id)
    now = emulator.clock()
    if task.phase(now).terminal:
        raise ProtocolError(400, "NOT_CANCELLABLE", "Only processing jobs can be cancelled")
    task.cancelled_at = now
    return task


async def _graphql(request: web.Request) -> web.Response:
    emulator = request.app[DOITONG_KEY]
    body = await json_object(request, code="GRAPHQL_PARSE_FAILED")
    field, args, selection = parse_operation(body)
    if field == "generate":
        task = _generate(emulator, request, args["input"])
    elif field == "job":
        task = _find(emulator, args["id"])
    else:
        task = _cancel(emulator, args["id"])
    job = job_json(emulator, task)
    return web.json_response({"data": {field: {name: job[name] for name in selection}}})


def rest_view(emulator: DoitongEmulator, task: EmulatedTask) -> dict[str, Any]:
    """A job as the REST endpoints show it."""
    job = job_json(emulator, task)
    view = {
        key: job[key] for key in ("id", "status", "url", "createdAt", "completedAt", "creditCost", "error")
    }
    return {**view, "webhookUrl": task.webhook_url, "duration": task.duration_s}


async def _rest_submit(request: web.Request) -> web.Response:
    emulator = request.app[DOITONG_KEY]
    body = await json_object(request, code="BAD_USER_INPUT")
    if body.get("service") != SERVICE:
        raise _bad_input(f'service must be "{SERVICE}"', "service")
    if not isinstance(body.get("prompt"), str) or not body["prompt"]:
        raise _bad_input("prompt is required", "prompt")
    check_image(body.get("imageUrl"), "imageUrl")
    options = check_options(
        {k: body[k] for k in ("duration", "aspectRatio", "version", "motionIntensity") if k in body}
    )
    task = start_job(emulator, request, body, options, body.get("webhookUrl"))
    return web.json_response({"data": {"imagevideo": rest_view(emulator, task)}})


async def _rest_status(request: web.Request) -> web.Response:
    emulator = request.app[DOITONG_KEY]
    task = _find(emulator, request.match_info["job_id"])
    return web.json_response({"data": {"imagevideo": rest_view(emulator, task)}})


DOITONG_KEY = web.AppKey("doitong_emulator", DoitongEmulator)


def create_app(emulator: DoitongEmulator | None = None) -> web.Application:
    """The doitong emulator app."""
    emulator = emulator or DoitongEmulator()
    app = base_app(emulator)
    app[DOITONG_KEY] = emulator
    app.router.add_post("/graphql", _graphql, name="submit:graphql")  # refined per operation
    app.router.add_post("/v1/image_to_video", _rest_submit, name="submit:rest")
    app.router.add_get("/v1/image_to_video/{job_id}", _rest_status, name="status:rest")
    return app
