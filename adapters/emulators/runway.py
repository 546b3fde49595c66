"""Runway's API (`api.dev.runwayml.com`), as the official `runwayml` SDK speaks it.

    POST   /v1/image_to_video, /v1/text_to_video   -> {"id"}
    GET    /v1/tasks/{id}                          -> PENDING | RUNNING | SUCCEEDED | FAILED | CANCELLED
    DELETE /v1/tasks/{id}                          -> 204; cancels an active task, deletes a finished one

Every request needs `Authorization: Bearer <key>` (401) and `X-Runway-Version: 2024-11-06` (400).
Over the account's concurrency (`max_concurrency`) a new task is accepted and waits THROTTLED.
Bodies are validated per model (ratios, durations, promptText, promptImage forms and the 5 MB data URI
limit) with 400 `{"error", "issues": [{"path", "message"}]}`. Active tasks carry
`estimatedCost.credits`; terminal ones `cost.credits`: the full price on success, 0 when failed (refunded).
A cancel follows the SDK's `DELETE /v1/tasks/{id}` note: a task cancelled while PENDING or THROTTLED is
refunded (0), one cancelled while RUNNING is not ("cancellation does not refund credits"): it keeps
its full price. Runway sends no webhooks.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from adapters.emulators.app import base_app
from adapters.emulators.emulator import ProtocolError, ProviderEmulator, bearer_token, json_object
from adapters.emulators.media import Delivery
from adapters.emulators.tasks import EmulatedTask, Phase, iso

API_VERSION = "2024-11-06"
DATA_URI_MAX_BYTES = 5 * 1024 * 1024
PROMPT_TEXT_MAX = 1000

GEN4_RATIOS = frozenset({"1280:720", "720:1280", "1104:832", "960:960", "832:1104", "1584:672"})
VEO_RATIOS = frozenset({"1280:720", "720:1280", "1080:1920", "1920:1080"})
LANDSCAPE_PORTRAIT = frozenset({"1280:720", "720:1280"})
GEN4_DURATIONS = frozenset(range(2, 11))
VEO_DURATIONS = frozenset({4, 6, 8})


@dataclass(frozen=True, slots=True)
class RunwayModel:
    """What one model accepts on one endpoint, and its price in credits per output second."""

    ratios: frozenset[str]
    durations: frozenset[int]
    default_duration: int | None  # None: `duration` is required
    prompt_text_required: bool
    credits_per_second: int
    credits_per_second_silent: int | None = None  # veo3.1*: cheaper with `audio: false`
    last_frame: bool = False  # accepts a promptImage with position "last"

    def credits(self, duration: int, audio: bool) -> int:
        """The credits a render of `duration` seconds costs."""
        rate = self.credits_per_second
        if not audio and self.credits_per_second_silent is not None:
            rate = self.credits_per_second_silent
        return rate * duration


# Per model and endpoint, as `runwayml` 5.24's request types declare them (`types/*_create_params.py`;
# tests/test_catalog_sdk.py holds these tables to the SDK). A model the SDK lacks (gen3a_turbo, veo3)
# is a 400 "Validation of body failed" on `model`, as the real API answers it.
IMAGE_TO_VIDEO: dict[str, RunwayModel] = {
    "gen4.5": RunwayModel(GEN4_RATIOS, GEN4_DURATIONS, None, True, 12),
    "gen4_turbo": RunwayModel(GEN4_RATIOS, GEN4_DURATIONS, 10, False, 5),
    "veo3.1": RunwayModel(VEO_RATIOS, VEO_DURATIONS, 8, False, 40, 20, last_frame=True),
    "veo3.1_fast": RunwayModel(VEO_RATIOS, VEO_DURATIONS, 8, False, 15, 10, last_frame=True),
}
TEXT_TO_VIDEO: dict[str, RunwayModel] = {
    "gen4.5": RunwayModel(LANDSCAPE_PORTRAIT, GEN4_DURATIONS, None, True, 12),
    "veo3.1": RunwayModel(VEO_RATIOS, VEO_DURATIONS, 8, True, 40, 20),
    "veo3.1_fast": RunwayModel(VEO_RATIOS, VEO_DURATIONS, 8, True, 15, 10),
}
MODELS_BY_ENDPOINT = {"image_to_video": IMAGE_TO_VIDEO, "text_to_video": TEXT_TO_VIDEO}


class RunwayEmulator(ProviderEmulator):
    """Runway's state: tasks in credits; over `max_concurrency` running tasks, new ones wait THROTTLED."""

    provider = "runway"
    # Runway renders 1280x720 at 24 fps, as asked: its clips are kept as delivered.
    delivery = Delivery()
    task_fail_code = "INTERNAL.BAD_OUTPUT.CODE01"

    def __init__(self, *, max_concurrency: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_concurrency = max_concurrency

    def charged(self, task: EmulatedTask) -> int:
        """Credits `task` costs: refunded when it failed or was cancelled before it ran."""
        phase = self.phase(task)
        if phase == Phase.FAILED:
            return 0
        if phase == Phase.CANCELLED:
            return task.cost if cancelled_running(task) else 0
        return task.cost

    def error_response(self, error: ProtocolError, headers: Mapping[str, str] | None = None) -> web.Response:
        body: dict[str, Any] = {"error": error.message, **error.extra}
        return web.json_response(body, status=error.status, headers=headers)

    def authenticate(self, request: web.Request) -> None:
        if bearer_token(request) not in self.api_keys:
            raise ProtocolError(401, "UNAUTHORIZED", "Unauthorized: invalid or missing API key")
        version = request.headers.get("X-Runway-Version")
        if version is None:
            raise ProtocolError(400, "VERSION", "The X-Runway-Version header is required")
        if version != API_VERSION:
            raise ProtocolError(400, "VERSION", f"Unsupported X-Runway-Version {version!r}")


class _Issues:
    """Validation issues gathered in one pass, answered together as Runway does."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, path: str, message: str) -> None:
        self.items.append({"path": [path], "message": message})

    def raise_if_any(self) -> None:
        if self.items:
            raise ProtocolError(400, "VALIDATION", "Validation of body failed", extra={"issues": self.items})


def _check_image_uri(uri: Any, issues: _Issues) -> None:
    if not isinstance(uri, str):
        issues.add("promptImage", "must be a string URI")
    elif uri.startswith("data:"):
        header, _, payload = uri.partition(",")
        if not header.startswith("data:image/") or not header.endswith(";base64"):
            issues.add("promptImage", "data URI must be data:image/<type>;base64,...")
            return
        try:
            size = len(base64.b64decode(payload, validate=True))
        except binascii.Error:
            issues.add("promptImage", "data URI is not valid base64")
            return
        if size > DATA_URI_MAX_BYTES:
            issues.add("promptImage", "data URI image is over 5MB")
    elif not uri.startswith(("https://", "runway://")):
        issues.add("promptImage", "must be an HTTPS URL, a runway:// URI or a data URI")


def _check_prompt_image(value: Any, model: RunwayModel, issues: _Issues) -> None:
    if isinstance(value, list):
        positions = ["first", "last"] if model.last_frame else ["first"]
        for item in value:
            if not isinstance(item, dict) or item.get("position") not in positions:
                issues.add("promptImage", f"each item needs uri and position in {positions}")
                continue
            _check_image_uri(item.get("uri"), issues)
        if not any(isinstance(i, dict) and i.get("position") == "first" for i in value):
            issues.add("promptImage", "a first frame is required")
    else:
        _check_image_uri(value, issues)


def _check_common(body: dict[str, Any], model: RunwayModel, issues: _Issues) -> int:
    """Check ratio, duration, promptText and seed; returns the duration to render."""
    if body.get("ratio") not in model.ratios:
        issues.add("ratio", f"must be one of {sorted(model.ratios)}")
    duration = body.get("duration", model.default_duration)
    if isinstance(duration, bool) or duration not in model.durations:
        issues.add("duration", f"must be one of {sorted(model.durations)}")
    text = body.get("promptText")
    if text is None and model.prompt_text_required:
        issues.add("promptText", "Required")
    elif text is not None and (not isinstance(text, str) or not 0 < len(text) <= PROMPT_TEXT_MAX):
        issues.add("promptText", f"must be a non-empty string of at most {PROMPT_TEXT_MAX} characters")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32):
        issues.add("seed", "must be an integer from 0 to 4294967295")
    if "audio" in body and (model.credits_per_second_silent is None or not isinstance(body["audio"], bool)):
        issues.add("audio", "not supported by this model, or not a boolean")
    return duration if isinstance(duration, int) else 0


def validate(endpoint: str, body: dict[str, Any]) -> tuple[RunwayModel, int]:
    """Check a create body against its model; returns the model and the duration to render."""
    models = MODELS_BY_ENDPOINT[endpoint]
    issues = _Issues()
    model = models.get(body.get("model", ""))
    if model is None:
        issue = {"path": ["model"], "message": f"must be one of {sorted(models)}"}
        raise ProtocolError(400, "VALIDATION", "Validation of body failed", extra={"issues": [issue]})
    if endpoint == "image_to_video":
        if "promptImage" not in body:
            issues.add("promptImage", "Required")
        else:
            _check_prompt_image(body["promptImage"], model, issues)
    duration = _check_common(body, model, issues)
    issues.raise_if_any()
    return model, duration


async def _create(request: web.Request, endpoint: str) -> web.Response:
    emulator = request.app[RUNWAY_KEY]
    body = await json_object(request, code="VALIDATION")
    model, duration = validate(endpoint, body)
    audio = body.get("audio", True) is True
    width, height = (int(side) for side in body["ratio"].split(":"))
    out_w, out_h = width, height  # Runway's ratio is the output's size in pixels ("1280:720")
    limit = emulator.max_concurrency
    task = emulator.create_task(
        request,
        body["model"],
        begins_at=emulator.next_free_slot(limit) if limit is not None else None,
        duration_s=duration,
        width=out_w,
        height=out_h,
        cost=model.credits(duration, audio),
        params={"endpoint": endpoint, "audio": audio},
    )
    return web.json_response({"id": task.id})


async def _image_to_video(request: web.Request) -> web.Response:
    return await _create(request, "image_to_video")


async def _text_to_video(request: web.Request) -> web.Response:
    return await _create(request, "text_to_video")


def cancelled_running(task: EmulatedTask) -> bool:
    """The task was cancelled after it started running (so, per the SDK, it is not refunded)."""
    return task.cancelled_at is not None and task.cancelled_at >= task.started_at


def task_json(task: EmulatedTask, now: float) -> dict[str, Any]:
    """A task as `GET /v1/tasks/{id}` answers it."""
    body: dict[str, Any] = {"id": task.id, "createdAt": iso(task.created_at)}
    phase = task.phase(now)
    if phase == Phase.QUEUED:
        status = "THROTTLED" if task.throttled(now) else "PENDING"
        body.update(status=status, estimatedCost={"credits": task.cost})
    elif phase == Phase.RUNNING:
        body.update(status="RUNNING", progress=task.progress(now), estimatedCost={"credits": task.cost})
    elif phase == Phase.SUCCEEDED:
        body.update(status="SUCCEEDED", output=[task.output_url], cost={"credits": task.cost})
    elif phase == Phase.FAILED:
        body.update(status="FAILED", failure=task.fail_message, failureCode=task.fail_code)
        body["cost"] = {"credits": 0}  # Runway refunds failed tasks
    else:  # cancelled: refunded only if it never ran
        body.update(status="CANCELLED", cost={"credits": task.cost if cancelled_running(task) else 0})
    return body


def _task_or_404(request: web.Request) -> EmulatedTask:
    task = request.app[RUNWAY_KEY].find_task(request.match_info["task_id"])
    if task is None:
        raise ProtocolError(404, "NOT_FOUND", "Task not found")
    return task


async def _retrieve(request: web.Request) -> web.Response:
    task = _task_or_404(request)
    return web.json_response(task_json(task, request.app[RUNWAY_KEY].clock()))


async def _delete(request: web.Request) -> web.Response:
    emulator = request.app[RUNWAY_KEY]
    task = _task_or_404(request)
    now = emulator.clock()
    if task.phase(now).terminal:
        task.deleted = True
    else:
        task.cancelled_at = now
    return web.Response(status=204)


RUNWAY_KEY = web.AppKey("runway_emulator", RunwayEmulator)


def create_app(emulator: RunwayEmulator | None = None) -> web.Application:
    """The Runway emulator app; pass an emulator to configure it and inspect it from tests."""
    emulator = emulator or RunwayEmulator()
    app = base_app(emulator)
    app[RUNWAY_KEY] = emulator
    app.router.add_post("/v1/image_to_video", _image_to_video, name="submit:image_to_video")
    app.router.add_post("/v1/text_to_video", _text_to_video, name="submit:text_to_video")
    app.router.add_get("/v1/tasks/{task_id}", _retrieve, name="status")
    app.router.add_delete("/v1/tasks/{task_id}", _delete, name="cancel")
    return app
