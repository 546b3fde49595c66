"""The embedded store: one SQLite file in WAL mode, written from one thread.

Every call runs on a single-thread executor, so statements never interleave; multi-statement changes
run in `BEGIN IMMEDIATE` transactions, and `synchronous=FULL` makes a committed write survive a crash.
Split by concern: `sqlite_db.py` is the file, its schema and the executor; `sqlite_ledger.py` the
budgets, reconciliation index and policy versions; `sqlite_retention.py` the expiry of ended
jobs and the daily ledger; this module the jobs.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

from broker.schema import JobStatus
from broker.store.base import (
    IdempotencyConflict,
    JobRecord,
    RecordUnreadable,
    Store,
    readable,
    unreadable,
)
from broker.store.sqlite_batches import SQLiteBatches
from broker.store.sqlite_db import insert_job_row, write_each
from broker.store.sqlite_ledger import SQLiteLedger
from broker.store.sqlite_retention import SQLiteRetention

_Write = tuple[JobRecord, JobRecord, "asyncio.Future[bool]"]
_UNREADABLE = "unreadable"  # the status column of a quarantined record


def _dump(record: JobRecord) -> str:
    return record.model_dump_json()


def _load(raw: str, job_id: str | None = None) -> JobRecord:
    try:
        return JobRecord.model_validate_json(raw)
    except ValueError as exc:
        raise unreadable(job_id) from exc


def _replace_row(db: sqlite3.Connection, record: JobRecord, stored: JobRecord) -> bool:
    """Write `stored` over `record` if its version is still the stored one; index its provider tasks."""
    cursor = db.execute(
        "UPDATE jobs SET status = ?, lease_until = ?, version = ?, record = ?, ready_at = ?"
        " WHERE id = ? AND version = ?",
        (
            stored.status.value,
            stored.lease_until,
            stored.version,
            _dump(stored),
            stored.ready_at,
            record.id,
            record.version,
        ),
    )
    if cursor.rowcount != 1:
        return False
    attempts = {attempt.id: attempt.provider for attempt in stored.job.attempts}
    for attempt_id, handle in stored.handles.items():
        if attempt_id in attempts and attempt_id not in record.handles:
            db.execute(
                "INSERT OR REPLACE INTO tasks (provider, provider_job_id, job_id) VALUES (?, ?, ?)",
                (attempts[attempt_id], handle.provider_job_id, stored.id),
            )
    return True


class SQLiteStore(SQLiteRetention, SQLiteLedger, SQLiteBatches, Store):
    """`sqlite:///path/to/broker.db` (relative) or `sqlite:////abs/path.db`."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._writes: list[_Write] = []
        self._unreadable: set[str] = set()
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        return cls(Path(url.removeprefix("sqlite:///")))

    # Jobs ---------------------------------------------------------------------------------------
    async def create_job(self, record: JobRecord) -> tuple[JobRecord, bool]:
        def create(db: sqlite3.Connection) -> tuple[JobRecord, bool]:
            if record.idempotency_key is not None:
                row = db.execute(
                    "SELECT record FROM jobs WHERE team = ? AND idempotency_key = ?",
                    (record.job.team, record.idempotency_key),
                ).fetchone()
                if row is not None:
                    existing = _load(row[0])
                    if existing.request_hash != record.request_hash:
                        raise IdempotencyConflict(
                            "this Idempotency-Key was used with a different request body",
                            details={"job_id": existing.id},
                        )
                    return existing, False
            insert_job_row(db, record)
            return record, True

        return await self._transaction(create)

    async def get_job(self, job_id: str) -> JobRecord | None:
        row = await self._run(
            lambda db: db.execute("SELECT record FROM jobs WHERE id = ?", (job_id,)).fetchone()
        )
        return None if row is None else _load(row[0], job_id)

    async def find_idempotent_job(self, team: str, key: str) -> JobRecord | None:
        row = await self._run(
            lambda db: db.execute(
                "SELECT record FROM jobs WHERE team = ? AND idempotency_key = ?", (team, key)
            ).fetchone()
        )
        return None if row is None else _load(row[0])

    async def list_jobs(
        self,
        *,
        team: str | None = None,
        status: JobStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[JobRecord], str | None]:
        clauses, params = [], []
        if team is not None:
            clauses.append("team = ?")
            params.append(team)
        if status is not None:
            clauses.append("status = ?")
            params.append(status.value)
        if cursor is not None:
            clauses.append("id < ?")
            params.append(cursor)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT record, id FROM jobs {where} ORDER BY id DESC LIMIT ?"
        rows = await self._run(lambda db: db.execute(sql, (*params, limit + 1)).fetchall())
        records = readable(row[0] for row in rows[:limit])
        next_cursor = rows[limit - 1][1] if len(rows) > limit else None
        return records, next_cursor

    async def jobs_created_between(
        self, start: datetime, end: datetime, *, team: str | None = None
    ) -> list[JobRecord]:
        sql = "SELECT record FROM jobs WHERE created_at >= ? AND created_at < ?"
        params: list[Any] = [start.isoformat(), end.isoformat()]
        if team is not None:
            sql += " AND team = ?"
            params.append(team)
        rows = await self._run(lambda db: db.execute(sql + " ORDER BY id", params).fetchall())
        return readable(row[0] for row in rows)

    async def replace_job(self, record: JobRecord) -> JobRecord | None:
        stored = record.model_copy(update={"version": record.version + 1})
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._writes.append((record, stored, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_writes())
        return stored if await done else None

    async def _flush_writes(self) -> None:
        """Group commit: every replace queued meanwhile goes into one transaction (one fsync), each
        still compare-and-set on its own version. Concurrent steps so share the disk's sync cost."""
        while self._writes:
            batch, self._writes = self._writes, []

            def write(db: sqlite3.Connection, batch: list[_Write] = batch) -> list[bool | Exception]:
                # One failing write fails alone (its own savepoint), not the whole batch.
                return write_each(
                    db, [functools.partial(_replace_row, record=o, stored=n) for o, n, _ in batch]
                )

            try:
                results = await self._run(write)
            except BaseException as exc:
                for _, _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, _, done), result in zip(batch, results, strict=True):
                if not done.done():
                    if isinstance(result, Exception):
                        done.set_exception(result)
                    else:
                        done.set_result(result)

    async def claim_due(self, owner: str, now: float, lease_s: float, *, limit: int) -> list[JobRecord]:
        def claim(db: sqlite3.Connection) -> list[JobRecord]:
            rows = db.execute(
                "SELECT id, record FROM jobs WHERE ready_at IS NOT NULL AND ready_at <= ?"
                " ORDER BY ready_at, id LIMIT ?",
                (now, limit * 2),
            ).fetchall()
            claimed: list[JobRecord] = []
            for job_id, raw in rows:
                try:
                    current = _load(raw, job_id)
                except RecordUnreadable:
                    self._unreadable.add(job_id)  # reported by `unreadable_due`
                    continue  # the jobs behind it go on
                taken = current.model_copy(
                    update={
                        "lease_owner": owner,
                        "lease_until": now + lease_s,
                        "version": current.version + 1,
                    }
                )
                db.execute(
                    "UPDATE jobs SET lease_until = ?, version = ?, record = ?, ready_at = ? WHERE id = ?",
                    (taken.lease_until, taken.version, _dump(taken), taken.ready_at, taken.id),
                )
                claimed.append(taken)
                if len(claimed) == limit:
                    break
            return claimed

        return await self._transaction(claim)

    async def next_due_at(self) -> float | None:
        row = await self._run(
            lambda db: db.execute("SELECT MIN(ready_at) FROM jobs WHERE ready_at IS NOT NULL").fetchone()
        )
        return None if row is None or row[0] is None else float(row[0])

    async def unreadable_due(self, now: float, *, limit: int = 10) -> list[str]:
        # Claims note the records they could not decode; one process owns a SQLite store.
        return sorted(self._unreadable)[:limit]

    async def quarantine_job(self, job_id: str) -> None:
        self._unreadable.discard(job_id)
        await self._run(
            lambda db: db.execute(
                "UPDATE jobs SET ready_at = NULL, status = ? WHERE id = ?", (_UNREADABLE, job_id)
            )
        )

    async def index_task(self, provider: str, provider_job_id: str, job_id: str) -> None:
        if await self.find_task(provider, provider_job_id) == job_id:
            return  # the replace that stored the task's handle indexed it in the same transaction
        await self._run(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO tasks (provider, provider_job_id, job_id) VALUES (?, ?, ?)",
                (provider, provider_job_id, job_id),
            )
        )

    async def find_task(self, provider: str, provider_job_id: str) -> str | None:
        row = await self._run(
            lambda db: db.execute(
                "SELECT job_id FROM tasks WHERE provider = ? AND provider_job_id = ?",
                (provider, provider_job_id),
            ).fetchone()
        )
        return None if row is None else str(row[0])

    async def count_jobs(self, status: JobStatus) -> int:
        row = await self._run(
            lambda db: db.execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (status.value,)).fetchone()
        )
        return int(row[0])
