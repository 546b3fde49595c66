"""Batches in the store: one record per `POST /v1/batches`, naming its jobs in item order, and the
store operations a batch needs beyond the jobs' own (the `Store` interface inherits them).

A batch is accepted in three writes, each one safe to crash after: every item's estimate is reserved
under its job's id in one all-or-none step (`reserve_budgets`); the batch record and its jobs are
created (`create_batch`: one transaction in SQLite; in Redis the record first, then each job, so a
crash leaves a record whose missing jobs a replay of the same Idempotency-Key creates); reservations
whose job never came are released by the budget sweeper, as a single job's are.

Retention: a batch is deleted once it is older than its team's retention *and* none of its jobs is
left in the store (they all expired, so it has nothing left to show), with its Idempotency-Key, so the
key then makes a new batch, as an expired job's key does. Each store keeps a per-team index of batches
by creation time for the sweep (`old_batches`, oldest first, a page at a time), written with the
record; batches stored before that index existed have no entry in it and are never deleted.
`expire_batch` checks the jobs and deletes in one atomic write, so two replicas sweeping one batch
are harmless: one deletes it, the other finds it gone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from broker.store.base import BudgetWindow, JobRecord, Reservation

log = structlog.get_logger("broker.store")
MAX_BATCH_ITEMS = 1000


class BatchRecord(BaseModel):
    """A batch as stored: who made it, with which key and body, and its jobs in item order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    team: str
    created_at: datetime
    job_ids: list[str] = Field(max_length=MAX_BATCH_ITEMS)
    estimated_cost_usd: str  # the sum of the items' estimates when accepted, six decimals
    request_hash: str = ""
    idempotency_key: str | None = None
    metadata: dict[str, Any] | None = None


class BatchExpiry(StrEnum):
    """What `expire_batch` did."""

    EXPIRED = "expired"  # deleted, with its Idempotency-Key and its index entry
    GONE = "gone"  # no such batch (another replica expired it first)
    JOBS_LEFT = "jobs_left"  # a job of the batch is still in the store: kept


class BatchStore(ABC):
    """What a store keeps for batches (SQLite: `sqlite_batches.py`, Redis: `redis_batches.py`)."""

    @abstractmethod
    async def reserve_budgets(self, amounts: Mapping[str, int], windows: list[BudgetWindow]) -> Reservation:
        """Reserve each job's amount under its own id in every window, all or none: the sum must fit
        each window. `remaining_micros` is per window, after the call."""

    @abstractmethod
    async def create_batch(self, batch: BatchRecord, jobs: Sequence[JobRecord]) -> tuple[BatchRecord, bool]:
        """Store the batch and its jobs; with `batch.idempotency_key` set, a second create with the
        same team and key returns the first batch and False (creating nothing), or raises
        `IdempotencyConflict` if the bodies differ."""

    @abstractmethod
    async def get_batch(self, batch_id: str) -> BatchRecord | None: ...

    @abstractmethod
    async def find_idempotent_batch(self, team: str, key: str) -> BatchRecord | None:
        """The team's batch created with this Idempotency-Key, if any."""

    @abstractmethod
    async def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        """The jobs of these ids in one read, in order (None for an id with no readable job)."""

    @abstractmethod
    async def batch_teams(self) -> list[str]:
        """Every team with a batch in the retention index."""

    @abstractmethod
    async def old_batches(
        self, team: str, created_before: datetime, *, limit: int, skip: int = 0
    ) -> list[BatchRecord]:
        """The team's indexed batches created before `created_before`, oldest first, past the first
        `skip` (the candidates of an expiry sweep)."""

    @abstractmethod
    async def expire_batch(self, batch: BatchRecord) -> BatchExpiry:
        """Atomically, if none of the batch's jobs is in the store: delete the batch, its
        Idempotency-Key (while it still names this batch) and its index entry."""


def check_same_body(existing: BatchRecord, batch: BatchRecord) -> None:
    """Raise `IdempotencyConflict` unless `batch` repeats the body `existing` was created with."""
    from broker.store.base import IdempotencyConflict  # here: `base` imports this module

    if existing.request_hash != batch.request_hash:
        raise IdempotencyConflict(
            "this Idempotency-Key was used with a different batch body", details={"batch_id": existing.id}
        )


def readable_batches(raws: Iterable[str]) -> list[BatchRecord]:
    """The batch records that decode; one that does not is logged and left out (it stays stored), so a
    sweep never fails for one bad record."""
    records: list[BatchRecord] = []
    for raw in raws:
        try:
            records.append(BatchRecord.model_validate_json(raw))
        except ValueError as exc:
            log.error("batch_record_unreadable", error=str(exc)[:200])
    return records
