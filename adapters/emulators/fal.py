"""fal.ai's queue API (`queue.fal.run`), as `fal_client` speaks it.

    POST /{owner}/{alias}[/{subpath}][?fal_webhook=<url>]   the model's input as the bare JSON body
         -> {request_id, status_url, response_url, cancel_url, queue_position}
    GET  /{owner}/{alias}/requests/{id}/status[?logs=1]     IN_QUEUE | IN_PROGRESS | COMPLETED
    GET  /{owner}/{alias}/requests/{id}                     the result: {"video": {"url", ...}}
    PUT  /{owner}/{alias}/requests/{id}/cancel              200 OK (removed from the queue) |
                                                            202 CANCELLATION_REQUESTED (in progress) |
                                                            400 ALREADY_COMPLETED

Status, result and cancel URLs never carry the submit's subpath; the returned URLs are built from the
emulator's own origin, so a client that follows them stays on the emulator. Auth is
`Authorization: Key <key>`. Validation errors are 422 `{"detail": [{loc, msg, type}]}`; others
`{"detail": "...", "error_type": "..."}`. A failed request is COMPLETED with `error` and
`error_type`, and its result URL answers the error (422 for `content_policy_violation`, else 500).
A cancelled request is COMPLETED with error_type `request_cancelled` [none: our definition]. fal
reports no cost. Webhooks: `{request_id, gateway_request_id, status: OK|ERROR, payload, error}`,
unsigned here (see webhooks.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from adapters.emulators.app import base_app
from adapters.emulators.emulator import ProtocolError, ProviderEmulator, bearer_token, json_object
from adapters.emulators.media import Delivery, clip, size_for_ratio
from adapters.emulators.tasks import EmulatedTask, Phase, iso
from adapters.emulators.webhooks import encode_body

CONTENT_POLICY = "content_policy_violation"
CANCELLED = "request_cancelled"
RATIOS = {"16:9": (16, 9), "9:16": (9, 16), "1:1": (1, 1), "4:3": (4, 3), "3:4": (3, 4), "21:9": (21, 9)}


@dataclass(frozen=True, slots=True)
class FalModel:
    """One endpoint's input rules. Empty sets mean the field is free-form (an endpoint we don't model)."""

    image_required: bool = False
    durations: frozenset[str] = frozenset()
    default_duration: str = "5"
    aspect_ratios: frozenset[str] = frozenset()
    resolutions: frozenset[str] = frozenset()
    video_as_string: bool = False  # some endpoints answer {"video": "<url>"}


FIVE_TEN = frozenset({"5", "10"})
KNOWN_MODELS: dict[str, FalModel] = {
    "fal-ai/wan-25-preview/image-to-video": FalModel(
        True, FIVE_TEN, resolutions=frozenset({"480p", "720p", "1080p"})
    ),
    "fal-ai/kling-video/v2.5-turbo/pro/image-to-video": FalModel(True, FIVE_TEN),
    "fal-ai/pixverse/v5.5/image-to-video": FalModel(
        True, frozenset({"5", "8"}), resolutions=frozenset({"360p", "540p", "720p", "1080p"})
    ),
    "fal-ai/veo3": FalModel(
        False, frozenset({"8s"}), "8s", frozenset({"16:9", "9:16"}), frozenset({"720p", "1080p"})
    ),
    "fal-ai/veo3/fast": FalModel(
        False, frozenset({"8s"}), "8s", frozenset({"16:9", "9:16"}), frozenset({"720p", "1080p"})
    ),
    "fal-ai/minimax/video-01/image-to-video": FalModel(True, video_as_string=True),
}


class FalEmulator(ProviderEmulator):
    """fal's queue state. `models=None` takes any endpoint id with free-form fields."""

    provider = "fal"
    # Wan/LTX-style models: the height on the 32-pixel latent grid (704 for 720) and 4k+1 frames.
    delivery = Delivery(row_multiple=32, extra_frames=1)
    rate_limit_code = "rate_limited"
    server_error_code = "internal_server_error"
    task_fail_code = "internal_server_error"

    def __init__(self, *, models: Mapping[str, FalModel] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.models = dict(KNOWN_MODELS if models is None else models)
        self.strict_models = models is not None

    def model(self, endpoint_id: str) -> FalModel:
        """The input rules of an endpoint id; 404 for an unknown one when the model list is strict."""
        if endpoint_id in self.models:
            return self.models[endpoint_id]
        if self.strict_models:
            raise ProtocolError(404, "not_found", f"Application {endpoint_id!r} not found")
        return FalModel(image_required="image-to-video" in endpoint_id)

    def error_response(self, error: ProtocolError, headers: Mapping[str, str] | None = None) -> web.Response:
        body: dict[str, Any] = {"detail": error.message, "error_type": error.code, **error.extra}
        return web.json_response(body, status=error.status, headers=headers)

    def authenticate(self, request: web.Request) -> None:
        if bearer_token(request, scheme="Key") not in self.api_keys:
            raise ProtocolError(401, "unauthorized", "Missing or invalid 'Authorization: Key ...' header")

    def webhook_request(self, task: EmulatedTask) -> tuple[bytes, dict[str, str]] | None:
        ok = self.phase(task) == Phase.SUCCEEDED
        payload = (
            result_json(task, self.delivery) if ok else {"detail": task.fail_message or "Request cancelled"}
        )
        body = {
            "request_id": task.id,
            "gateway_request_id": task.id,
            "status": "OK" if ok else "ERROR",
            "payload": payload,
            "error": None if ok else payload["detail"],
        }
        return encode_body(body), {}


class _Detail:
    """FastAPI-style 422 detail items, answered together."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, field: str, msg: str, kind: str = "value_error") -> None:
        self.items.append({"loc": ["body", field], "msg": msg, "type": kind})

    def raise_if_any(self) -> None:
        if self.items:
            raise ProtocolError(422, "validation_error", "Validation failed", extra={"detail": self.items})


def _check_choice(body: dict[str, Any], field: str, allowed: frozenset[str], detail: _Detail) -> None:
    if field in body and allowed and body[field] not in allowed:
        detail.add(field, f"unexpected value; permitted: {sorted(allowed)}", "literal_error")


def validate(model: FalModel, body: dict[str, Any]) -> None:
    """Check a bare input body; the seed's `{"input": {...}}` wrapper fails here for lack of a prompt."""
    detail = _Detail()
    if not isinstance(body.get("prompt"), str) or not body["prompt"]:
        detail.add("prompt", "field required", "missing")
    image = body.get("image_url")
    if model.image_required and image is None:
        detail.add("image_url", "field required", "missing")
    elif image is not None and not (isinstance(image, str) and image.startswith(("https://", "data:image/"))):
        detail.add("image_url", "must be an https URL or a data URI")
    if model.durations:
        _check_choice(body, "duration", model.durations, detail)
    elif "duration" in body and not re.fullmatch(r"\d+s?", str(body["duration"])):
        detail.add("duration", "must be a number of seconds")
    _check_choice(body, "aspect_ratio", model.aspect_ratios or frozenset(RATIOS), detail)
    _check_choice(body, "resolution", model.resolutions, detail)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        detail.add("seed", "must be an integer")
    detail.raise_if_any()


def urls(task: EmulatedTask) -> dict[str, str]:
    """The request's result, status and cancel URLs: on the emulator's origin, without the subpath."""
    base = f"{task.base_url}/{task.params['app']}/requests/{task.id}"
    return {"response_url": base, "status_url": base + "/status", "cancel_url": base + "/cancel"}


def result_json(task: EmulatedTask, delivery: Delivery) -> dict[str, Any]:
    """A finished request's result, as its response URL answers it."""
    url = task.output_url
    if task.params.get("video_as_string"):
        return {"video": url, "seed": task.params["seed"]}
    size = len(clip(task.width, task.height, task.duration_s, delivery))
    video = {"url": url, "content_type": "video/mp4", "file_name": "output.mp4", "file_size": size}
    return {"video": video, "seed": task.params["seed"]}


async def _submit(request: web.Request) -> web.Response:
    emulator = request.app[FAL_KEY]
    app_id = f"{request.match_info['owner']}/{request.match_info['alias']}"
    subpath = request.match_info.get("subpath")
    endpoint_id = f"{app_id}/{subpath}" if subpath else app_id
    model = emulator.model(endpoint_id)
    body = await json_object(request, code="validation_error")
    validate(model, body)
    duration = int(str(body.get("duration", model.default_duration)).rstrip("s") or 5)
    width, height = size_for_ratio(*RATIOS.get(str(body.get("aspect_ratio", "16:9")), (16, 9)))
    seed = body.get("seed", 1234)
    params = {"app": app_id, "seed": seed, "video_as_string": model.video_as_string}
    task = emulator.create_task(
        request,
        endpoint_id,
        duration_s=duration,
        width=width,
        height=height,
        webhook_url=request.query.get("fal_webhook"),
        params=params,
    )
    answer = {
        "status": "IN_QUEUE",
        "request_id": task.id,
        **urls(task),
        "queue_position": _queue_position(emulator, task),
    }
    return web.json_response(answer, headers={"x-fal-request-id": task.id})


def _queue_position(emulator: FalEmulator, task: EmulatedTask) -> int:
    """How many queued requests were submitted before this one (tasks keep submission order)."""
    now = emulator.clock()
    ahead = 0
    for other in emulator.tasks.values():
        if other is task:
            break
        ahead += other.phase(now) == Phase.QUEUED
    return ahead


def _request_task(request: web.Request) -> EmulatedTask:
    emulator = request.app[FAL_KEY]
    task = emulator.find_task(request.match_info["request_id"])
    app_id = f"{request.match_info['owner']}/{request.match_info['alias']}"
    if task is None or task.params["app"] != app_id:
        raise ProtocolError(404, "not_found", "Request not found")
    return task


def status_json(emulator: FalEmulator, task: EmulatedTask, with_logs: bool) -> dict[str, Any]:
    """A request's status, as its status URL answers it."""
    now = emulator.clock()
    phase = task.phase(now)
    body: dict[str, Any] = {"request_id": task.id, **urls(task)}
    logs = [{"message": "emulated render", "level": "INFO", "source": "user", "timestamp": iso(now)}]
    if phase == Phase.QUEUED:
        body.update(status="IN_QUEUE", queue_position=_queue_position(emulator, task))
    elif phase == Phase.RUNNING:
        body.update(status="IN_PROGRESS", logs=logs if with_logs else None)
    else:
        body.update(status="COMPLETED", logs=logs if with_logs else None)
        body["metrics"] = {"inference_time": task.render_s * (1 - task.queue_fraction)}
        if phase == Phase.FAILED:
            body.update(error=task.fail_message, error_type=task.fail_code)
        elif phase == Phase.CANCELLED:
            body.update(error="Request cancelled", error_type=CANCELLED)
    return body


async def _status(request: web.Request) -> web.Response:
    task = _request_task(request)
    with_logs = request.query.get("logs", "0").lower() in ("1", "true")
    return web.json_response(status_json(request.app[FAL_KEY], task, with_logs))


async def _result(request: web.Request) -> web.Response:
    emulator = request.app[FAL_KEY]
    task = _request_task(request)
    phase = emulator.phase(task)
    if not phase.terminal:
        raise ProtocolError(400, "request_in_progress", "Request is still in progress")
    if phase == Phase.SUCCEEDED:
        return web.json_response(result_json(task, emulator.delivery), headers={"x-fal-request-id": task.id})
    if phase == Phase.CANCELLED:
        raise ProtocolError(400, CANCELLED, "Request cancelled")
    if task.fail_code == CONTENT_POLICY:
        item = {"loc": ["body", "prompt"], "msg": task.fail_message, "type": CONTENT_POLICY}
        raise ProtocolError(422, CONTENT_POLICY, "content policy", extra={"detail": [item]})
    raise ProtocolError(500, task.fail_code or "internal_server_error", task.fail_message or "failed")


async def _cancel(request: web.Request) -> web.Response:
    emulator = request.app[FAL_KEY]
    task = _request_task(request)
    now = emulator.clock()
    phase = task.phase(now)
    if phase.terminal:
        return web.json_response({"status": "ALREADY_COMPLETED"}, status=400)
    task.cancelled_at = now  # a running app stops at once here; real ones take a moment
    if phase == Phase.QUEUED:
        return web.json_response({"status": "OK"})
    return web.json_response({"status": "CANCELLATION_REQUESTED"}, status=202)


FAL_KEY = web.AppKey("fal_emulator", FalEmulator)


def create_app(emulator: FalEmulator | None = None) -> web.Application:
    """The fal queue emulator app."""
    emulator = emulator or FalEmulator()
    app = base_app(emulator)
    app[FAL_KEY] = emulator
    requests = "/{owner}/{alias}/requests/{request_id}"
    app.router.add_get(requests + "/status", _status, name="status")
    app.router.add_put(requests + "/cancel", _cancel, name="cancel")
    app.router.add_get(requests, _result, name="result")
    app.router.add_post("/{owner}/{alias}", _submit, name="submit:app")
    app.router.add_post("/{owner}/{alias}/{subpath:.+}", _submit, name="submit:subpath")
    return app
