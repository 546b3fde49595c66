"""Reading a batch body, and what the batch endpoints answer: the batch with its counts, cost so far
and each item's job, and the manifest of its outputs (JSON or CSV)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Sequence
from typing import Any

from broker.api.intake import parse_job_request, parse_json
from broker.errors import InvalidRequest, PayloadTooLarge
from broker.schema import METADATA_MAX_BYTES, JobRequest, JobStatus, metadata_problem
from broker.store import JobRecord
from broker.store.batches import MAX_BATCH_ITEMS, BatchRecord
from pricing.money import Money

MISSING = "missing"  # an item whose job a crash kept from being created (a replay of the key creates it)


def item_error(index: int, exc: InvalidRequest) -> InvalidRequest:
    """An item's refusal as the batch's: each field named under `items[<index>]`."""
    problems = exc.details if isinstance(exc.details, list) else [{"field": "body", "message": exc.message}]
    named = [{**p, "field": f"items[{index}].{p.get('field', 'body')}", "index": index} for p in problems]
    summary = "; ".join(f"{p['field']}: {p['message']}" for p in named)
    return InvalidRequest(
        f"item {index} is invalid, so the whole batch was refused: {summary}", details=named
    )


def _metadata(data: dict[str, Any]) -> dict[str, Any] | None:
    metadata = data.get("metadata")
    if metadata is None:
        return None
    problem = None if isinstance(metadata, dict) else "must be a JSON object"
    if problem is None and isinstance(metadata, dict):
        problem = metadata_problem(metadata)
        if problem is None and len(json.dumps(metadata, separators=(",", ":"))) > METADATA_MAX_BYTES:
            problem = f"metadata is larger than {METADATA_MAX_BYTES} bytes of JSON"
    if problem is not None:
        raise InvalidRequest(f"metadata: {problem}", details=[{"field": "metadata", "message": problem}])
    return metadata if isinstance(metadata, dict) else None


def parse_batch(raw: bytes) -> tuple[list[JobRequest], dict[str, Any] | None, str]:
    """A batch body's items (validated, in order), its metadata, and the digest of both (for the
    Idempotency-Key); a 400 names the first bad item by index and field, a 413 the item limit."""
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise InvalidRequest('the body must be a JSON object: {"items": [job, ...], "metadata": {...}}')
    if unknown := sorted(set(data) - {"items", "metadata"}):
        message = "not a field of a batch (its fields: items, metadata)"
        raise InvalidRequest(
            f"{unknown[0]}: {message}", details=[{"field": name, "message": message} for name in unknown]
        )
    items = data.get("items")
    if not isinstance(items, list) or not items:
        message = f"must be a list of 1 to {MAX_BATCH_ITEMS} job bodies"
        raise InvalidRequest(f"items: {message}", details=[{"field": "items", "message": message}])
    if len(items) > MAX_BATCH_ITEMS:
        raise PayloadTooLarge(
            f"items: a batch holds at most {MAX_BATCH_ITEMS} items; this one has {len(items)}."
            " Split it into several batches",
            details={"field": "items", "limit": MAX_BATCH_ITEMS, "items": len(items)},
        )
    requests: list[JobRequest] = []
    for index, item in enumerate(items):
        try:
            requests.append(parse_job_request(item))
        except InvalidRequest as exc:
            raise item_error(index, exc) from None
    metadata = _metadata(data)
    canonical = {"items": [r.model_dump(mode="json") for r in requests], "metadata": metadata}
    digest = hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return requests, metadata, digest


def _item(index: int, job_id: str, record: JobRecord | None) -> dict[str, Any]:
    if record is None:
        return {"index": index, "job_id": job_id, "status": MISSING}
    job = record.job
    output = job.output.url if job.status is JobStatus.SUCCEEDED and job.output is not None else None
    return {
        "index": index,
        "job_id": job.id,
        "status": job.status.value,
        "route": f"{job.route.provider}/{job.route.model}" if job.route else None,
        **job.model_dump(mode="json", include={"estimated_cost_usd", "cost_usd"}),
        "output_url": output,
        "error": job.error.model_dump(mode="json") if job.error is not None else None,
    }


def batch_body(batch: BatchRecord, records: Sequence[JobRecord | None]) -> dict[str, Any]:
    """The batch: counts by status, estimate, cost so far, and each item's job in item order."""
    items = [_item(i, job_id, r) for i, (job_id, r) in enumerate(zip(batch.job_ids, records, strict=True))]
    counts = {status.value: 0 for status in JobStatus}
    for item in items:
        counts[item["status"]] = counts.get(item["status"], 0) + 1
    ended = sum(counts[s.value] for s in JobStatus if s.terminal)
    cost = sum((r.job.cost_usd for r in records if r is not None), Money.zero())
    return {
        "id": batch.id,
        "team": batch.team,
        "status": "ended" if ended == len(items) else "running",
        "created_at": batch.created_at.isoformat(),
        "total": len(items),
        "ended": ended,
        "counts": counts,
        "estimated_cost_usd": batch.estimated_cost_usd,
        "cost_usd": str(cost),
        "metadata": batch.metadata,
        "manifest_url": f"/v1/batches/{batch.id}/manifest",
        "items": items,
    }


def manifest_body(batch: BatchRecord, records: Sequence[JobRecord | None]) -> dict[str, Any]:
    """Each succeeded item's output (link, size, digest, cost), and the items without one."""
    outputs, without = [], []
    for index, (job_id, record) in enumerate(zip(batch.job_ids, records, strict=True)):
        output = record.job.output if record is not None else None
        if record is not None and record.status is JobStatus.SUCCEEDED and output is not None:
            outputs.append(
                {
                    "index": index,
                    "job_id": job_id,
                    "url": output.url,
                    "bytes": output.bytes,
                    "sha256": output.sha256,
                    "duration_s": output.duration_s,
                    "cost_usd": str(record.job.cost_usd),
                }
            )
        else:
            without.append(
                {"index": index, "job_id": job_id, "status": record.status.value if record else MISSING}
            )
    return {"batch_id": batch.id, "total": len(batch.job_ids), "outputs": outputs, "without_output": without}


def manifest_csv(manifest: dict[str, Any]) -> str:
    """The manifest's outputs as CSV, one row per succeeded item."""
    text = io.StringIO()
    columns = ["index", "job_id", "url", "bytes", "sha256", "duration_s", "cost_usd"]
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(manifest["outputs"])
    return text.getvalue()
