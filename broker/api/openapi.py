"""`GET /openapi.json`: an OpenAPI 3.1 document built from the same pydantic models the handlers use."""

from __future__ import annotations

from functools import cache
from typing import Any

from aiohttp import web
from pydantic.json_schema import models_json_schema

from broker import __version__
from broker.api import batch_openapi, video_openapi
from broker.api.common import json_response
from broker.schema import Job, JobRequest
from policies.model import Policy

routes = web.RouteTableDef()
_REF = "#/components/schemas/{model}"


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model="Error")}}},
    }


def _job_body() -> dict[str, Any]:
    multipart = {
        "type": "object",
        "properties": {
            **{name: {"type": "string"} for name in JobRequest.model_fields if name != "image_upload"},
            "image": {"type": "string", "contentMediaType": "image/*", "description": "the still to animate"},
        },
    }
    return {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": _REF.format(model="JobRequest")}},
            "multipart/form-data": {"schema": multipart},
        },
    }


def _json(model: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model=model)}}},
    }


_COMMON_ERRORS = {"400": _error("invalid request"), "401": _error("missing or bad key")}
_JOB_ID = [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}]
_TEAM = [{"name": "team", "in": "path", "required": True, "schema": {"type": "string"}}]


def _policy_edit_schema() -> dict[str, Any]:
    """The policy's fields, plus the `version` read (an alternative to If-Match)."""
    schema = Policy.model_json_schema(ref_template=_REF)  # enums resolve to the shared components
    schema.pop("$defs", None)
    schema["properties"]["version"] = {"type": "integer", "minimum": 0, "description": "the version read"}
    return schema


def _policy_paths() -> dict[str, Any]:
    read_errors = {"403": _error("another team's policy"), "404": _error("no such team"), **_COMMON_ERRORS}
    if_match = {"name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"}}
    return {
        "/v1/policies": {
            "get": {
                "summary": "Every team's policy (admin) or the caller's own",
                "responses": {"200": {"description": "policies"}, **_COMMON_ERRORS},
            }
        },
        "/v1/policies/{team}": {
            "get": {
                "summary": "A team's policy, effective policy, version and budgets",
                "parameters": _TEAM,
                "responses": {"200": {"description": "the policy; ETag is its version"}, **read_errors},
            },
            "put": {
                "summary": "Replace a team's policy (admin key), as the next version",
                "parameters": [*_TEAM, if_match],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _policy_edit_schema()}},
                },
                "responses": {
                    "200": {"description": "the new version"},
                    "409": _error("the policy changed since the version read"),
                    **read_errors,
                },
            },
        },
        "/v1/policies/{team}/history": {
            "get": {
                "summary": "Every version of a team's policy: who changed what and when",
                "parameters": _TEAM,
                "responses": {"200": {"description": "versions, oldest first"}, **read_errors},
            }
        },
    }


def _paths() -> dict[str, Any]:
    submit_errors = {
        **_COMMON_ERRORS,
        "402": _error("over the team's budget"),
        "409": _error("Idempotency-Key reused with another body"),
        "413": _error("body or image too large"),
        "415": _error("unsupported content type"),
        "422": _error("no feasible route"),
    }
    idem = [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "maxLength": 255},
        }
    ]
    return {
        "/v1/jobs": {
            "post": {
                "summary": "Submit a job",
                "parameters": idem,
                "requestBody": _job_body(),
                "responses": {
                    "202": _json("Job", "accepted"),
                    "200": _json("Job", "replayed"),
                    **submit_errors,
                },
            },
            "get": {
                "summary": "List the team's jobs",
                "parameters": [
                    {"name": "status", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 200},
                    },
                    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {"200": {"description": "a page of jobs"}, **_COMMON_ERRORS},
            },
        },
        "/v1/jobs/{job_id}": {
            "get": {
                "summary": "Read a job",
                "parameters": _JOB_ID,
                "responses": {"200": _json("Job", "the job"), "404": _error("no such job"), **_COMMON_ERRORS},
            },
            "delete": {
                "summary": "Cancel a job",
                "parameters": _JOB_ID,
                "responses": {
                    "202": _json("Job", "cancelling"),
                    "404": _error("no such job"),
                    "409": _error("already ended"),
                    **_COMMON_ERRORS,
                },
            },
        },
        "/v1/jobs/{job_id}/output": {
            "get": {
                "summary": "Download the MP4",
                "parameters": _JOB_ID,
                "responses": {
                    "200": {"description": "the video", "content": {"video/mp4": {}}},
                    "302": {"description": "a presigned URL of the video (an S3 artifact store)"},
                    "404": _error("no such job, or its output was deleted"),
                    "409": _error("not finished"),
                },
            },
            "delete": {
                "summary": "Delete the video and poster (owner or admin); the job and its costs stay",
                "parameters": _JOB_ID,
                "responses": {
                    "204": {"description": "deleted (or already gone)"},
                    "404": _error("no such job"),
                    "409": _error("the job did not succeed"),
                    **_COMMON_ERRORS,
                },
            },
        },
        "/v1/jobs/{job_id}/poster": {
            "get": {
                "summary": "The first frame of the output, as a JPEG",
                "parameters": _JOB_ID,
                "responses": {
                    "200": {"description": "the poster", "content": {"image/jpeg": {}}},
                    "302": {"description": "a presigned URL of the poster (an S3 artifact store)"},
                    "404": _error("no such job, or no poster"),
                    "409": _error("not finished"),
                },
            }
        },
        "/v1/quotes": {
            "post": {
                "summary": "Quote a job without creating it",
                "requestBody": _job_body(),
                "responses": {
                    "200": {"description": "chosen route, feasible routes, rejections"},
                    **_COMMON_ERRORS,
                },
            }
        },
        "/v1/pricing": {
            "get": {
                "summary": "Every route's price, and the size limits of a job body and an uploaded image",
                "responses": {"200": {"description": "prices, and limits.max_image_bytes / max_body_bytes"}},
            }
        },
        **video_openapi.paths(),
        **batch_openapi.paths({**submit_errors, "404": _error("no such batch")}, idem),
        **_policy_paths(),
        **_report_paths(),
        **_dashboard_paths(),
        "/healthz": {
            "get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "alive"}}}
        },
        "/readyz": {
            "get": {
                "summary": "Readiness",
                "security": [],
                "responses": {"200": {"description": "ready"}, "503": _error("not ready")},
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1"}},
            }
        },
        "/v1/inputs/{job_id}": {
            "get": {
                "summary": "A running job's uploaded or data: image, for a provider that takes only URLs",
                "security": [],
                "parameters": [
                    {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "expires", "in": "query", "required": True, "schema": {"type": "integer"}},
                    {"name": "sig", "in": "query", "required": True, "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {"description": "the image", "content": {"image/*": {}}},
                    "403": _error("bad, missing or expired signature"),
                    "404": _error("the job has ended, has no such image, or the broker hosts no inputs"),
                },
            }
        },
        "/v1/callbacks/{provider}": {
            "post": {
                "summary": "A provider's webhook (signature-checked where the provider signs)",
                "security": [],
                "parameters": [
                    {"name": "provider", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "requestBody": {"required": True, "content": {"application/json": {}}},
                "responses": {
                    "200": {"description": "received"},
                    "404": _error("no such provider"),
                    "422": _error("bad signature or body"),
                },
            }
        },
    }


def _dashboard_paths() -> dict[str, Any]:
    page = {"200": {"description": "the page", "content": {"text/html": {}}}}
    return {
        "/v1/providers": {
            "get": {
                "summary": "Each provider's circuit, capacity in use, queue per team, latency and error rate",
                "responses": {"200": {"description": "providers"}, **_COMMON_ERRORS},
            }
        },
        "/dashboard": {
            "get": {"summary": "The cost and jobs page (asks for a key)", "security": [], "responses": page}
        },
        "/dashboard/static/{name}": {
            "get": {
                "summary": "The page's script and stylesheet",
                "security": [],
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": {"description": "the file"}, "404": _error("no such file")},
            }
        },
    }


def _report_paths() -> dict[str, Any]:
    def query(name: str, description: str, **schema: Any) -> dict[str, Any]:
        described = {"name": name, "in": "query", "description": description}
        return {**described, "schema": {"type": "string", **schema}}

    costs = {
        "description": "groups and totals",
        "content": {"application/json": {}, "text/csv": {}},
    }
    return {
        "/v1/reports/costs": {
            "get": {
                "summary": "Spend, estimates, unbilled amounts and savings per provider, team, model or day",
                "parameters": [
                    query("from", "first day or instant, ISO 8601 (default: start of the month)"),
                    query("to", "last day, inclusive, or instant, exclusive (default: now)"),
                    query("group_by", "comma-separated: provider, team, model, day (default: provider)"),
                    query("format", "json or csv", enum=["json", "csv"]),
                    query("team", "one team only (a team key sees only its own)"),
                ],
                "responses": {"200": costs, "403": _error("another team's report"), **_COMMON_ERRORS},
            }
        },
        "/v1/reports/reconciliation": {
            "get": {
                "summary": "Booked spend against the providers' own figures per provider and day, and "
                "every attempt where they differ or the provider never said",
                "parameters": [
                    query("from", "first day or instant, ISO 8601 (default: start of the month)"),
                    query("to", "last day, inclusive, or instant, exclusive (default: now)"),
                    query("team", "one team only (a team key sees only its own)"),
                ],
                "responses": {
                    "200": {
                        "description": "groups, totals, discrepancies",
                        "content": {"application/json": {}},
                    },
                    "403": _error("another team's report"),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "security": [],
                "responses": {
                    "200": {"description": "text exposition format", "content": {"text/plain": {}}}
                },
            }
        },
    }


@cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document."""
    _, schemas = models_json_schema(
        [(JobRequest, "validation"), (Job, "serialization"), (Policy, "validation")], ref_template=_REF
    )
    components = {**schemas.get("$defs", {}), **video_openapi.schemas(), **batch_openapi.schemas()}
    components["Error"] = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {}},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Video routing broker", "version": __version__},
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": _paths(),
    }


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return json_response(document())
