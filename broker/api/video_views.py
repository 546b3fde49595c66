"""The OpenAI view of a job: what `/v1/videos` says about the jobs `/v1/jobs` runs (one job, two views).

The wire shapes are those of the official `openai` package (`openai.types.Video`, `VideoDeleteResponse`,
the `ConversationCursorPage` list and the `{"error": {"message", "type", "param", "code"}}` body).
The broker's own facts (route, attempts, costs, constraints, its own status word) ride along as extra
fields, which OpenAI clients keep but do not need.

Status words: queued → `queued`, running → `in_progress`, succeeded → `completed`, failed → `failed`,
and cancelled → `failed` with `error.code` "cancelled". The SDK's `Video.status` has only those four
words and its `poll()` stops on `completed` or `failed` only, so a fifth word would leave typed clients
with a value they cannot name; `broker_status` says "cancelled" for those who look.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from broker.schema import AspectRatio, JobStatus, Resolution
from broker.store import JobRecord
from local_backend.formats import frame_size
from pricing.catalog import RouteSpec

AUTO = "auto"
_STATUS = {
    JobStatus.QUEUED: "queued",
    JobStatus.RUNNING: "in_progress",
    JobStatus.SUCCEEDED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "failed",
}
_CANCELLED = {
    "code": "cancelled",
    "message": "the video was cancelled (DELETE /v1/videos/{id}) before it finished",
}


def size_of(aspect_ratio: AspectRatio, resolution: Resolution) -> str:
    """The `WIDTHxHEIGHT` the broker delivers for an aspect ratio and resolution (e.g. `1280x720`)."""
    width, height = frame_size(aspect_ratio.value, resolution.value)
    return f"{width}x{height}"


SIZES: dict[str, tuple[AspectRatio, Resolution]] = {
    size_of(aspect, resolution): (aspect, resolution) for resolution in Resolution for aspect in AspectRatio
}


@dataclass(frozen=True, slots=True)
class Catalog:
    """What the deployment's routes can make, in the OpenAI request's terms."""

    routes: dict[str, RouteSpec]  # by `provider/model`
    seconds: tuple[int, ...]  # every duration some route makes, ascending
    sizes: tuple[str, ...]  # every size some route makes

    @classmethod
    def of(cls, routes: Iterable[RouteSpec]) -> Catalog:
        specs = {route.key: route for route in routes}
        seconds = sorted({s for route in specs.values() for s in route.durations.all()})
        sizes = [
            size
            for size, (aspect, resolution) in SIZES.items()
            if any(aspect in r.aspect_ratios and resolution in r.resolutions for r in specs.values())
        ]
        return cls(specs, tuple(seconds), tuple(sizes))


def _unix(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def _progress(record: JobRecord, status: str) -> int:
    """Percent done: 100 once completed, else the provider's last report (0 where it reports none)."""
    if status == "completed":
        return 100
    reported = record.poll.progress if record.poll is not None else None
    if reported is None or record.status is not JobStatus.RUNNING:
        return 0
    return max(0, min(99, int(reported * 100)))


def _model(record: JobRecord) -> str:
    """The route doing (or that did) the work, as `provider/model`."""
    job = record.job
    if job.attempts:
        return f"{job.attempts[-1].provider}/{job.attempts[-1].model}"
    return f"{job.route.provider}/{job.route.model}" if job.route is not None else AUTO


def _size(record: JobRecord) -> str:
    """The size asked for (the output's own dimensions are the job's `output.width` and `height`)."""
    return size_of(record.job.request.aspect_ratio, record.job.request.resolution)


def video_body(record: JobRecord) -> dict[str, Any]:
    """The job as an OpenAI `Video`, with the broker's fields beside it."""
    job = record.job
    status = _STATUS[job.status]
    error: dict[str, Any] | None = None
    if job.status is JobStatus.CANCELLED:
        error = dict(_CANCELLED)
    elif job.status is JobStatus.FAILED:
        error = (
            job.error.model_dump(mode="json") if job.error is not None else {"code": "failed", "message": ""}
        )
    return {
        "id": job.id,
        "object": "video",
        "created_at": _unix(job.created_at),
        "completed_at": _unix(job.completed_at) if status == "completed" else None,
        "expires_at": None,
        "model": _model(record),
        "progress": _progress(record, status),
        "prompt": job.request.prompt or None,
        "remixed_from_video_id": None,
        "seconds": str(job.request.duration_s),
        "size": _size(record),
        "status": status,
        "error": error,
        # The broker's own fields.
        "broker_status": job.status.value,
        "mode": job.request.resolved_mode.value,
        "route": job.route.model_dump(mode="json") if job.route is not None else None,
        "attempts": [attempt.model_dump(mode="json") for attempt in job.attempts],
        **job.model_dump(mode="json", include={"estimated_cost_usd", "cost_usd"}),
        "constraints": job.request.constraints.model_dump(mode="json", exclude_none=True),
        "metadata": job.request.metadata,
    }


def deleted_body(record: JobRecord, deleted: bool, message: str) -> dict[str, Any]:
    """`VideoDeleteResponse`: `deleted` says whether the video is gone for good (cancelled)."""
    return {
        "id": record.id,
        "object": "video.deleted",
        "deleted": deleted,
        "broker_status": record.status.value,
        "message": message,
    }


def page_body(records: list[JobRecord], has_more: bool) -> dict[str, Any]:
    """A `ConversationCursorPage` of videos: the SDK asks for the next page `after` `last_id`."""
    data = [video_body(record) for record in records]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def error_type(status: int) -> str:
    """OpenAI's `error.type` for a status."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "insufficient_quota"
    return "server_error" if status >= 500 else "invalid_request_error"
