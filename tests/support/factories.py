"""Builders for test data."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from broker.schema import Job, JobRequest, JobStatus
from broker.store import JobRecord

_counter = 0


def job_record(
    *,
    team: str = "growth",
    status: JobStatus = JobStatus.QUEUED,
    idempotency_key: str | None = None,
    created_at: datetime | None = None,
    **request: Any,
) -> JobRecord:
    """A queued job record with a unique, time-ordered id."""
    global _counter
    _counter += 1
    created = created_at or datetime(2026, 11, 21, tzinfo=UTC) + timedelta(seconds=_counter)
    body = JobRequest.model_validate({"prompt": "a slow zoom in", **request})
    job = Job(
        id=f"job_{int(created.timestamp() * 1000):012x}{_counter:08x}",
        team=team,
        status=status,
        request=body,
        created_at=created,
        updated_at=created,
    )
    digest = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    return JobRecord(job=job, request_hash=digest, idempotency_key=idempotency_key)
