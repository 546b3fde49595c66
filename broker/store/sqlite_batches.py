"""The SQLite store's batches: a batch and all its jobs are one transaction, and so is the reservation
of every item's estimate (see `batches.py` for the order of writes).

    batches.created_at   unix s, the retention index (`batches_created`); NULL for a batch stored
                         before it, which is therefore never expired
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from datetime import datetime

from broker.store.base import (
    BudgetWindow,
    JobRecord,
    Reservation,
    readable,
)
from broker.store.batches import BatchExpiry, BatchRecord, check_same_body, readable_batches
from broker.store.sqlite_db import SQLiteDatabase, insert_job_row
from broker.store.sqlite_ledger import reserve_in

_IN_CHUNK = 500  # ids per `IN (...)` (SQLite's variable limit is far above; this keeps statements small)


def _expire_batch(db: sqlite3.Connection, batch: BatchRecord) -> BatchExpiry:
    if db.execute("SELECT 1 FROM batches WHERE id = ?", (batch.id,)).fetchone() is None:
        return BatchExpiry.GONE
    for start in range(0, len(batch.job_ids), _IN_CHUNK):
        chunk = batch.job_ids[start : start + _IN_CHUNK]
        marks = ",".join("?" * len(chunk))
        if db.execute(f"SELECT 1 FROM jobs WHERE id IN ({marks}) LIMIT 1", chunk).fetchone():
            return BatchExpiry.JOBS_LEFT
    # The Idempotency-Key is a column of the row: it goes with it.
    db.execute("DELETE FROM batches WHERE id = ?", (batch.id,))
    return BatchExpiry.EXPIRED


class SQLiteBatches(SQLiteDatabase):
    """Batches and the batch-wide reservation on the SQLite file."""

    async def reserve_budgets(self, amounts: Mapping[str, int], windows: list[BudgetWindow]) -> Reservation:
        if any(amount < 0 for amount in amounts.values()):
            raise ValueError("a reservation cannot be negative")
        now = time.time()
        return await self._transaction(lambda db: reserve_in(db, amounts, windows, now))

    async def create_batch(self, batch: BatchRecord, jobs: Sequence[JobRecord]) -> tuple[BatchRecord, bool]:
        def create(db: sqlite3.Connection) -> tuple[BatchRecord, bool]:
            if batch.idempotency_key is not None:
                row = db.execute(
                    "SELECT record FROM batches WHERE team = ? AND idempotency_key = ?",
                    (batch.team, batch.idempotency_key),
                ).fetchone()
                if row is not None:
                    existing = BatchRecord.model_validate_json(row[0])
                    check_same_body(existing, batch)
                    return existing, False
            db.execute(
                "INSERT INTO batches (id, team, idempotency_key, record, created_at) VALUES (?, ?, ?, ?, ?)",
                (
                    batch.id,
                    batch.team,
                    batch.idempotency_key,
                    batch.model_dump_json(),
                    batch.created_at.timestamp(),
                ),
            )
            for job in jobs:
                insert_job_row(db, job)
            return batch, True

        return await self._transaction(create)

    async def get_batch(self, batch_id: str) -> BatchRecord | None:
        row = await self._run(
            lambda db: db.execute("SELECT record FROM batches WHERE id = ?", (batch_id,)).fetchone()
        )
        return None if row is None else BatchRecord.model_validate_json(row[0])

    async def find_idempotent_batch(self, team: str, key: str) -> BatchRecord | None:
        row = await self._run(
            lambda db: db.execute(
                "SELECT record FROM batches WHERE team = ? AND idempotency_key = ?", (team, key)
            ).fetchone()
        )
        return None if row is None else BatchRecord.model_validate_json(row[0])

    async def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        def read(db: sqlite3.Connection) -> list[str]:
            raws: list[str] = []
            for start in range(0, len(job_ids), _IN_CHUNK):
                chunk = list(job_ids[start : start + _IN_CHUNK])
                marks = ",".join("?" * len(chunk))
                rows = db.execute(f"SELECT record FROM jobs WHERE id IN ({marks})", chunk)
                raws += [row[0] for row in rows]
            return raws

        found = {record.id: record for record in readable(await self._run(read))}
        return [found.get(job_id) for job_id in job_ids]

    # Retention ----------------------------------------------------------------------------------
    async def batch_teams(self) -> list[str]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT DISTINCT team FROM batches WHERE created_at IS NOT NULL ORDER BY team"
            ).fetchall()
        )
        return [str(team) for (team,) in rows]

    async def old_batches(
        self, team: str, created_before: datetime, *, limit: int, skip: int = 0
    ) -> list[BatchRecord]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT record FROM batches WHERE team = ? AND created_at < ?"
                " ORDER BY created_at, id LIMIT ? OFFSET ?",
                (team, created_before.timestamp(), limit, skip),
            ).fetchall()
        )
        return readable_batches(raw for (raw,) in rows)

    async def expire_batch(self, batch: BatchRecord) -> BatchExpiry:
        def expire(db: sqlite3.Connection) -> BatchExpiry:
            outcome = _expire_batch(db, batch)
            return outcome

        return await self._transaction(expire)
