"""Replicate's predictions API, as the official `replicate` client (1.0.7) declares it.

    POST /v1/models/{owner}/{name}/predictions  an official model       -> 201 the prediction
    POST /v1/predictions  {"version", "input"}  a model by version      -> 201 the prediction
    GET  /v1/predictions/{id}                                           -> the prediction
    POST /v1/predictions/{id}/cancel                                    -> the prediction (canceled)

A prediction is `replicate.prediction.Prediction`'s fields: id, model, version, input, logs, output,
error, status (starting | processing | succeeded | failed | canceled), metrics {predict_time},
created_at, started_at, completed_at, urls {get, cancel, web}, data_removed. Errors are RFC 7807
problem details `{"title", "detail", "status"}` (`replicate.exceptions.ReplicateError`): 401 without
`Authorization: Bearer`, 404 for an unknown model, 422 for an unknown version or an invalid input.

`Prefer: wait=N` holds the create until the prediction ends or N s (1-60) pass; `Cancel-After: 90s`
(or `5m`, `1h30m`, bare seconds; at least 5 s) cancels it that long after its creation. Webhooks
(`webhook`, `webhook_events_filter`: only `completed` here) are signed in the Standard Webhooks form:
`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256(key, "id.ts.body")>`,
the key being the base64 after `whsec_` in the secret. Outputs live `data_retention_s` (an hour) after
the prediction ends, then `output` is null and `data_removed` true; each answer hands out a file URL
that lasts `output_url_ttl_s` (default the same hour; shorter models a signed-URL CDN): an expired
URL answers 403, a removed file 404.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from adapters.emulators.app import base_app
from adapters.emulators.emulator import ProtocolError, ProviderEmulator, bearer_token, json_object
from adapters.emulators.media import clip
from adapters.emulators.tasks import EmulatedTask, Phase, iso, new_id
from adapters.emulators.webhooks import encode_body

HOUR_S = 3600.0
WAIT_MAX_S = 60
CANCEL_AFTER_MIN_S = 5.0
DEFAULT_SECRET = "whsec_" + base64.b64encode(b"replicate-emulator-webhook-key").decode()
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")
_STATUS = {
    Phase.QUEUED: "starting",
    Phase.RUNNING: "processing",
    Phase.SUCCEEDED: "succeeded",
    Phase.FAILED: "failed",
    Phase.CANCELLED: "canceled",
}


@dataclass(frozen=True, slots=True)
class EmulatedModel:
    """One model's inputs and output, and what a prediction of it costs, in micro-USD."""

    durations: frozenset[int]  # `duration` values; a single one: the model fixes it
    default_duration: int
    aspect_ratios: frozenset[str] = frozenset()  # `aspect_ratio` values; empty: the field is refused
    image_field: str | None = None
    size: tuple[int, int] = (1280, 720)
    price_per_video: int = 0  # official models: per output (0: not published, the emulator books none)
    hardware_per_s: int = 0  # version models: micro-USD per second of predict time


OFFICIAL: dict[str, EmulatedModel] = {
    "minimax/video-01": EmulatedModel(
        frozenset({6}), 6, image_field="first_frame_image", price_per_video=500_000
    ),
    "kwaivgi/kling-v2.0": EmulatedModel(
        frozenset({5, 10}), 5, frozenset({"16:9", "9:16", "1:1"}), image_field="start_image"
    ),
}
# By version id; the emulator runs it on an A100 (80GB) at replicate.com/pricing's $0.0014/s.
VERSIONS: dict[str, tuple[str, EmulatedModel]] = {
    "beecf59c4aee8d81bf04f0381033dfa10dc16e845b4ae00d281e2fa377e48a9f": (
        "lucataco/animate-diff",
        EmulatedModel(frozenset({2}), 2, size=(512, 512), hardware_per_s=1_400),
    ),
}
_INPUT_FIELDS = frozenset(
    {
        "prompt",
        "duration",
        "aspect_ratio",
        "negative_prompt",
        "n_prompt",
        "seed",
        "prompt_optimizer",
        "cfg_scale",
        "subject_reference",
    }
)
_RATIO_SIZES = {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (720, 720)}


def signing_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret (a secret in another form signs with its bytes)."""
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        return secret.encode()


def standard_webhook_headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of a Standard Webhooks delivery of `body`."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


def new_secret() -> str:
    """A fresh webhook signing secret in Replicate's `whsec_<base64>` form."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def parse_cancel_after(value: str) -> float:
    """`Cancel-After` as seconds: `90`, `90s`, `5m`, `1h30m`; 422 below 5 s or malformed."""
    match = _DURATION.match(value.strip())
    if not value.strip() or match is None:
        raise ProtocolError(422, "Invalid Cancel-After", f"cannot read Cancel-After {value!r}")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    total = hours * 3600.0 + minutes * 60.0 + seconds
    if total < CANCEL_AFTER_MIN_S:
        raise ProtocolError(422, "Invalid Cancel-After", "Cancel-After must be at least 5 seconds")
    return total


class ReplicateEmulator(ProviderEmulator):
    """Replicate's state: predictions billed per output (official models) or per predict second."""

    provider = "replicate"
    rate_limit_code = "Request was throttled."
    server_error_code = "Internal Server Error"
    task_fail_code = "prediction_failed"

    def __init__(
        self,
        *,
        data_retention_s: float = HOUR_S,
        output_url_ttl_s: float = HOUR_S,
        webhook_secret: str | None = DEFAULT_SECRET,
        **kwargs: Any,
    ) -> None:
        super().__init__(webhook_secret=webhook_secret, **kwargs)
        self.data_retention_s = data_retention_s
        self.output_url_ttl_s = output_url_ttl_s
        self._url_key = secrets.token_bytes(16)

    def error_response(self, error: ProtocolError, headers: Mapping[str, str] | None = None) -> web.Response:
        body = {"title": error.code, "detail": error.message, "status": error.status, **error.extra}
        return web.json_response(body, status=error.status, headers=headers)

    def authenticate(self, request: web.Request) -> None:
        if bearer_token(request) not in self.api_keys:
            raise ProtocolError(401, "Unauthenticated", "You did not pass a valid authentication token")

    def model_of(self, task: EmulatedTask) -> EmulatedModel:
        official = OFFICIAL.get(task.model)
        return official if official is not None else VERSIONS[task.params["version"]][1]

    def predict_time(self, task: EmulatedTask) -> float | None:
        """Seconds the prediction held its hardware, once it ended; None while it goes on."""
        now = self.clock()
        end = task.finished_at(now)
        return None if end is None else round(max(0.0, end - task.started_at), 3)

    def charged(self, task: EmulatedTask) -> int:
        """Micro-USD: the per-output price of a delivered video, or the seconds a version model ran."""
        model = self.model_of(task)
        if model.hardware_per_s:
            return round((self.predict_time(task) or 0.0) * model.hardware_per_s)
        return model.price_per_video if self.phase(task) == Phase.SUCCEEDED else 0

    # ---- outputs -------------------------------------------------------------------------------
    def removed(self, task: EmulatedTask) -> bool:
        end = task.finished_at(self.clock())
        return end is not None and self.clock() >= end + self.data_retention_s

    def _token(self, task_id: str, expires: int) -> str:
        return hmac.new(self._url_key, f"{task_id}.{expires}".encode(), hashlib.sha256).hexdigest()[:32]

    def file_url(self, task: EmulatedTask) -> str:
        """A URL for the output that lasts `output_url_ttl_s` from now."""
        expires = int(self.clock() + self.output_url_ttl_s)
        token = self._token(task.id, expires)
        return f"{task.base_url}/_emulator/delivery/{task.id}/{expires}/{token}/output.mp4"

    def url_valid(self, task_id: str, expires: int, token: str) -> bool:
        return hmac.compare_digest(token, self._token(task_id, expires)) and self.clock() < expires

    # ---- answers -------------------------------------------------------------------------------
    def prediction(self, task: EmulatedTask) -> dict[str, Any]:
        """The task as Replicate's Prediction object."""
        now = self.clock()
        phase = task.phase(now)
        removed = self.removed(task)
        body: dict[str, Any] = {
            "id": task.id,
            "model": task.model,
            "version": task.params.get("version", "hidden"),
            "input": None if removed else task.params["input"],
            "logs": "" if removed else f"{round(task.progress(now) * 100)}%",
            "output": None,
            "data_removed": removed,
            "error": task.fail_message if phase == Phase.FAILED else None,
            "status": _STATUS[phase],
            "created_at": iso(task.created_at),
            "urls": {
                "get": f"{task.base_url}/v1/predictions/{task.id}",
                "cancel": f"{task.base_url}/v1/predictions/{task.id}/cancel",
                "web": f"https://replicate.com/p/{task.id}",
            },
        }
        if phase != Phase.QUEUED:
            body["started_at"] = iso(task.started_at)
        if phase.terminal:
            end = task.finished_at(now)
            body["completed_at"] = iso(end if end is not None else now)
            body["metrics"] = {
                "predict_time": self.predict_time(task),
                "total_time": round(now - task.created_at, 3),
            }
        if phase == Phase.SUCCEEDED and not removed:
            body["output"] = self.file_url(task)
        return body

    def webhook_request(self, task: EmulatedTask) -> tuple[bytes, dict[str, str]] | None:
        secret = self.signing_secret(task)
        if secret is None:
            return None
        body = encode_body(self.prediction(task))
        return body, standard_webhook_headers(
            secret, "msg_" + new_id().replace("-", ""), int(self.clock()), body
        )


def _check_input(model: EmulatedModel, data: Any) -> tuple[dict[str, Any], int, tuple[int, int]]:
    """Validate an `input` object; the input, the clip's duration and size. 422 as Replicate lists it."""
    if not isinstance(data, dict):
        raise ProtocolError(422, "Input validation failed", "- input: Invalid type. Expected: object")
    problems: list[str] = []
    allowed = _INPUT_FIELDS | ({model.image_field} if model.image_field else set())
    problems += [
        f"- input: Additional property {name} is not allowed" for name in data if name not in allowed
    ]
    if not isinstance(data.get("prompt"), str) or not data["prompt"]:
        problems.append("- input: prompt is required")
    duration = data.get("duration", model.default_duration)
    if duration not in model.durations or isinstance(duration, bool):
        problems.append(f"- input.duration: must be one of {sorted(model.durations)}")
    ratio = data.get("aspect_ratio")
    if ratio is not None and ratio not in model.aspect_ratios:
        problems.append(f"- input.aspect_ratio: must be one of {sorted(model.aspect_ratios)}")
    image = data.get(model.image_field) if model.image_field else None
    if image is not None and not (
        isinstance(image, str) and image.startswith(("https://", "http://", "data:"))
    ):
        problems.append(f"- input.{model.image_field}: must be an HTTP URL or a data URL")
    if problems:
        raise ProtocolError(422, "Input validation failed", "\n".join(problems))
    size = _RATIO_SIZES.get(str(ratio), model.size) if image is None else model.size
    return data, int(duration), size


async def _create(request: web.Request, name: str, model: EmulatedModel, version: str | None) -> web.Response:
    emulator = request.app[REPLICATE_KEY]
    body = await json_object(request, code="Invalid request body")
    data, duration, (width, height) = _check_input(model, body.get("input"))
    cancel_after = request.headers.get("Cancel-After")
    deadline = parse_cancel_after(cancel_after) if cancel_after is not None else None
    webhook = body.get("webhook")
    params: dict[str, Any] = {"input": data, "events": body.get("webhook_events_filter")}
    if version is not None:
        params["version"] = version
    task = emulator.create_task(
        request,
        name,
        duration_s=duration,
        width=width,
        height=height,
        webhook_url=webhook if isinstance(webhook, str) else None,
        params=params,
    )
    if deadline is not None:
        cancel_at = task.created_at + deadline
        if task.ends_at is None or task.ends_at > cancel_at:
            task.cancelled_at = cancel_at
    await _wait(request, emulator, task)
    return web.json_response(emulator.prediction(task), status=201)


async def _wait(request: web.Request, emulator: ReplicateEmulator, task: EmulatedTask) -> None:
    """Honour `Prefer: wait[=N]`: hold the answer until the prediction ends or N seconds pass."""
    prefer = request.headers.get("Prefer", "").strip()
    if not prefer.startswith("wait"):
        return
    _, _, value = prefer.partition("=")
    seconds = min(int(value), WAIT_MAX_S) if value.isdigit() else WAIT_MAX_S
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    while not emulator.phase(task).terminal and loop.time() < until:
        await asyncio.sleep(0.01)


async def _create_official(request: web.Request) -> web.Response:
    name = f"{request.match_info['owner']}/{request.match_info['name']}"
    model = OFFICIAL.get(name)
    if model is None:
        raise ProtocolError(404, "Not found", "The requested resource could not be found.")
    return await _create(request, name, model, None)


async def _create_by_version(request: web.Request) -> web.Response:
    body = await json_object(request, code="Invalid request body")
    version = str(body.get("version", "")).rpartition(":")[2]  # "owner/name:id" or the bare id
    if version not in VERSIONS:
        raise ProtocolError(
            422,
            "Invalid version or not permitted",
            "The specified version does not exist (or you may not use it)",
        )
    name, model = VERSIONS[version]
    return await _create(request, name, model, version)


def _task_or_404(request: web.Request) -> EmulatedTask:
    task = request.app[REPLICATE_KEY].find_task(request.match_info["prediction_id"])
    if task is None:
        raise ProtocolError(404, "Not found", "The requested resource could not be found.")
    return task


async def _get(request: web.Request) -> web.Response:
    return web.json_response(request.app[REPLICATE_KEY].prediction(_task_or_404(request)))


async def _cancel(request: web.Request) -> web.Response:
    emulator = request.app[REPLICATE_KEY]
    task = _task_or_404(request)
    if not emulator.phase(task).terminal:
        task.cancelled_at = emulator.clock()
    return web.json_response(emulator.prediction(task))


async def _delivery(request: web.Request) -> web.Response:
    emulator = request.app[REPLICATE_KEY]
    task = emulator.find_task(request.match_info["prediction_id"])
    if task is None or emulator.phase(task) != Phase.SUCCEEDED or emulator.removed(task):
        return web.Response(status=404, text="Not Found")
    expires = request.match_info["expires"]
    if not expires.isdigit() or not emulator.url_valid(task.id, int(expires), request.match_info["token"]):
        return web.Response(status=403, text="Request has expired")
    body = clip(task.width, task.height, task.duration_s, emulator.delivery)
    return web.Response(body=body, content_type="video/mp4")


REPLICATE_KEY = web.AppKey("replicate_emulator", ReplicateEmulator)


def create_app(emulator: ReplicateEmulator | None = None) -> web.Application:
    """The Replicate emulator app; pass an emulator to configure it and inspect it from tests."""
    emulator = emulator or ReplicateEmulator()
    app = base_app(emulator)
    app[REPLICATE_KEY] = emulator
    app.router.add_post("/v1/models/{owner}/{name}/predictions", _create_official, name="submit:model")
    app.router.add_post("/v1/predictions", _create_by_version, name="submit:version")
    app.router.add_get("/v1/predictions/{prediction_id}", _get, name="status")
    app.router.add_post("/v1/predictions/{prediction_id}/cancel", _cancel, name="cancel")
    app.router.add_get(
        "/_emulator/delivery/{prediction_id}/{expires}/{token}/output.mp4",
        _delivery,
        name="download:delivery",
    )
    return app
