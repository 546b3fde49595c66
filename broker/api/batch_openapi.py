"""The OpenAPI description of `/v1/batches` (merged into `/openapi.json` by `broker.api.openapi`)."""

from __future__ import annotations

from typing import Any

from broker.schema import JobStatus
from broker.store.batches import MAX_BATCH_ITEMS

_REF = "#/components/schemas/{model}"
_USD = {"type": "string", "pattern": r"^\d+\.\d{6}$"}
_NULLABLE = {"type": ["string", "null"]}


def _ref(model: str) -> dict[str, Any]:
    return {"$ref": _REF.format(model=model)}


def _json(model: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def schemas() -> dict[str, Any]:
    """The batch components: the request, the batch, its items, the manifest."""
    item = {
        "type": "object",
        "properties": {
            "index": {"type": "integer"},
            "job_id": {"type": "string"},
            "status": {"type": "string", "enum": [*(s.value for s in JobStatus), "missing"]},
            "route": _NULLABLE,
            "estimated_cost_usd": _USD,
            "cost_usd": _USD,
            "output_url": {**_NULLABLE, "description": "the MP4, once the job succeeded"},
            "error": {"type": ["object", "null"]},
        },
    }
    batch = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "team": {"type": "string"},
            "status": {"type": "string", "enum": ["running", "ended"]},
            "created_at": {"type": "string", "format": "date-time"},
            "total": {"type": "integer"},
            "ended": {"type": "integer"},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "estimated_cost_usd": _USD,
            "cost_usd": {**_USD, "description": "what the batch's jobs have cost so far"},
            "metadata": {"type": ["object", "null"]},
            "manifest_url": {"type": "string"},
            "cancel_requested": {"type": "integer", "description": "DELETE only: jobs it asked to cancel"},
            "items": {"type": "array", "items": _ref("BatchItem")},
        },
    }
    output = {
        "type": "object",
        "properties": {
            "index": {"type": "integer"},
            "job_id": {"type": "string"},
            "url": {"type": "string"},
            "bytes": {"type": "integer"},
            "sha256": {"type": "string"},
            "duration_s": {"type": ["number", "null"]},
            "cost_usd": _USD,
        },
    }
    return {
        "BatchRequest": {
            "type": "object",
            "required": ["items"],
            "additionalProperties": False,
            "properties": {
                "items": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_BATCH_ITEMS,
                    "items": _ref("JobRequest"),
                    "description": "job bodies; each defaults to priority batch",
                },
                "metadata": {"type": "object"},
            },
        },
        "BatchItem": item,
        "Batch": batch,
        "BatchManifest": {
            "type": "object",
            "properties": {
                "batch_id": {"type": "string"},
                "total": {"type": "integer"},
                "outputs": {"type": "array", "items": output},
                "without_output": {"type": "array", "items": {"type": "object"}},
            },
        },
    }


def paths(errors: dict[str, Any], idempotency: list[dict[str, Any]]) -> dict[str, Any]:
    """The batch routes, with the error answers and Idempotency-Key parameter the jobs' routes use."""
    batch_id = [{"name": "batch_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    common = {key: errors[key] for key in ("400", "401")}
    return {
        "/v1/batches": {
            "post": {
                "summary": f"Submit up to {MAX_BATCH_ITEMS} jobs at once, all or none",
                "description": "An invalid or unroutable item refuses the whole batch, naming its index;"
                " the sum of the estimates must fit every budget window (402 with the figures, nothing"
                " created or reserved).",
                "parameters": idempotency,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("BatchRequest")}},
                },
                "responses": {"202": _json("Batch", "accepted"), "200": _json("Batch", "replayed"), **errors},
            }
        },
        "/v1/batches/{batch_id}": {
            "get": {
                "summary": "A batch: counts by status, cost so far, each item's job",
                "parameters": batch_id,
                "responses": {"200": _json("Batch", "the batch"), "404": errors["404"], **common},
            },
            "delete": {
                "summary": "Cancel the batch's jobs that have not ended",
                "parameters": batch_id,
                "responses": {"202": _json("Batch", "cancel requested"), "404": errors["404"], **common},
            },
        },
        "/v1/batches/{batch_id}/manifest": {
            "get": {
                "summary": "Each succeeded item's output link (JSON, or CSV with format=csv)",
                "parameters": [
                    *batch_id,
                    {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["json", "csv"]}},
                ],
                "responses": {
                    "200": {
                        "description": "the manifest",
                        "content": {
                            "application/json": {"schema": _ref("BatchManifest")},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    "404": errors["404"],
                    **common,
                },
            }
        },
    }
