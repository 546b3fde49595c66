"""The OpenAPI description of `/v1/videos` (merged into `/openapi.json` by `broker.api.openapi`): OpenAI's
video shapes, with the broker's extra fields named."""

from __future__ import annotations

from typing import Any

from broker.api.video_intake import BROKER_FIELDS, OPENAI_FIELDS
from broker.api.videos import LIMIT_MAX
from broker.schema import PROMPT_MAX_CHARS

_REF = "#/components/schemas/{model}"
_STRING = {"type": "string"}
_NULLABLE_INT = {"type": ["integer", "null"]}


def _ref(model: str) -> dict[str, Any]:
    return {"$ref": _REF.format(model=model)}


def _json(model: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _error(description: str) -> dict[str, Any]:
    return _json("OpenAIError", description)


_VIDEO_FIELDS: dict[str, Any] = {
    "id": {**_STRING, "description": "the job's id: the same job is /v1/jobs/{id}"},
    "object": {"const": "video"},
    "created_at": {"type": "integer"},
    "completed_at": _NULLABLE_INT,
    "expires_at": _NULLABLE_INT,
    "model": {**_STRING, "description": "the route, provider/model"},
    "progress": {"type": "integer", "minimum": 0, "maximum": 100},
    "prompt": {"type": ["string", "null"]},
    "remixed_from_video_id": {"type": ["string", "null"]},
    "seconds": _STRING,
    "size": {**_STRING, "examples": ["1280x720"]},
    "status": {"enum": ["queued", "in_progress", "completed", "failed"]},
    "error": {
        "type": ["object", "null"],
        "properties": {"code": _STRING, "message": _STRING},
        "description": "why it failed; code `cancelled` for a cancelled video",
    },
}
_BROKER_VIDEO_FIELDS: dict[str, Any] = {
    "broker_status": _ref("JobStatus"),
    "mode": _ref("Mode"),
    "route": {"anyOf": [_ref("RouteRef"), {"type": "null"}]},
    "attempts": {"type": "array", "items": _ref("Attempt")},
    "estimated_cost_usd": {"type": ["string", "null"]},
    "cost_usd": _STRING,
    "constraints": _ref("Constraints"),
    "metadata": {"type": "object"},
}


def schemas() -> dict[str, Any]:
    """The components `/v1/videos` refers to."""
    create = {
        "prompt": {"type": "string", "maxLength": PROMPT_MAX_CHARS},
        "model": {
            **_STRING,
            "description": "auto (the cheapest feasible route, the default) or provider/model",
        },
        "seconds": {**_STRING, "examples": ["5"]},
        "size": {**_STRING, "examples": ["1280x720", "720x1280", "1920x1080"]},
        "input_reference": {
            "type": "object",
            "properties": {"image_url": {**_STRING, "description": "https URL or data:image/...;base64 URI"}},
            "additionalProperties": False,
        },
        "constraints": _ref("Constraints"),
        "metadata": {"type": "object"},
        "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": 2**32 - 1},
        "audio": {"type": "boolean"},
        "camera_fixed": {"type": "boolean"},
        "webhook_url": _STRING,
        "mode": _ref("Mode"),
    }
    assert set(create) == {*OPENAI_FIELDS, *BROKER_FIELDS}
    error_fields = {
        "message": _STRING,
        "type": _STRING,
        "param": {"type": ["string", "null"]},
        "code": _STRING,
    }
    return {
        "VideoCreateRequest": {"type": "object", "properties": create, "additionalProperties": False},
        "Video": {
            "type": "object",
            "required": ["id", "object", "created_at", "model", "progress", "seconds", "size", "status"],
            "properties": {**_VIDEO_FIELDS, **_BROKER_VIDEO_FIELDS},
        },
        "VideoDeleteResponse": {
            "type": "object",
            "required": ["id", "object", "deleted"],
            "properties": {
                "id": _STRING,
                "object": {"const": "video.deleted"},
                "deleted": {"type": "boolean", "description": "true: cancelled; false: it had already ended"},
                "broker_status": _ref("JobStatus"),
                "message": _STRING,
            },
        },
        "VideoList": {
            "type": "object",
            "required": ["object", "data", "has_more"],
            "properties": {
                "object": {"const": "list"},
                "data": {"type": "array", "items": _ref("Video")},
                "first_id": {"type": ["string", "null"]},
                "last_id": {"type": ["string", "null"]},
                "has_more": {"type": "boolean"},
            },
        },
        "OpenAIError": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type", "code"],
                    "properties": error_fields,
                }
            },
        },
    }


def paths() -> dict[str, Any]:
    """The `/v1/videos` operations."""
    video_id = [{"name": "job_id", "in": "path", "required": True, "schema": _STRING}]
    common = {"400": _error("invalid request"), "401": _error("missing or bad key")}
    multipart = {
        "type": "object",
        "properties": {
            **{name: _STRING for name in (*OPENAI_FIELDS, *BROKER_FIELDS) if name != "input_reference"},
            "input_reference": {
                **_STRING,
                "contentMediaType": "image/*",
                "description": "the still to animate",
            },
        },
    }
    form = {"type": "object", "properties": {name: _STRING for name in (*OPENAI_FIELDS, *BROKER_FIELDS)}}
    idempotency = {"name": "Idempotency-Key", "in": "header", "schema": {**_STRING, "maxLength": 255}}
    query = [
        {
            "name": "after",
            "in": "query",
            "schema": _STRING,
            "description": "the last id of the previous page",
        },
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": LIMIT_MAX}},
        {"name": "order", "in": "query", "schema": {"enum": ["asc", "desc"]}},
    ]
    variant = {"name": "variant", "in": "query", "schema": {"enum": ["video", "thumbnail", "spritesheet"]}}
    return {
        "/v1/videos": {
            "post": {
                "summary": "Create a video (OpenAI's videos.create): the same job as POST /v1/jobs",
                "parameters": [idempotency],
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {"schema": multipart},
                        "application/x-www-form-urlencoded": {"schema": form},
                        "application/json": {"schema": _ref("VideoCreateRequest")},
                    },
                },
                "responses": {
                    "200": _json("Video", "accepted"),
                    **common,
                    "403": _error("the admin key submits nothing"),
                    "409": _error("Idempotency-Key reused with another body"),
                    "413": _error("body or image too large"),
                    "415": _error("unsupported content type"),
                    "422": _error("the image is not one"),
                    "429": _error("over the team's budget (insufficient_quota)"),
                },
            },
            "get": {
                "summary": "List videos, newest first (or oldest with order=asc)",
                "parameters": query,
                "responses": {"200": _json("VideoList", "a page"), **common},
            },
        },
        "/v1/videos/{job_id}": {
            "get": {
                "summary": "Read a video",
                "parameters": video_id,
                "responses": {"200": _json("Video", "the video"), "404": _error("no such video"), **common},
            },
            "delete": {
                "summary": "Cancel a video's job, also at its provider",
                "parameters": video_id,
                "responses": {
                    "200": _json("VideoDeleteResponse", "cancelled, or already ended (deleted: false)"),
                    "404": _error("no such video"),
                    **common,
                },
            },
        },
        "/v1/videos/{job_id}/content": {
            "get": {
                "summary": "Download the MP4, or its first frame (variant=thumbnail)",
                "parameters": [*video_id, variant],
                "responses": {
                    "200": {"description": "the file", "content": {"video/mp4": {}, "image/jpeg": {}}},
                    "404": _error("no such video, or no such variant"),
                    "409": _error("not completed"),
                    **common,
                },
            }
        },
    }
