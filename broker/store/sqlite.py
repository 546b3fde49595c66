"""The embedded store: one SQLite file in WAL mode, written from one thread.

Every call runs on a single-thread executor, so statements never interleave; multi-statement changes
run in `BEGIN IMMEDIATE` transactions, and `synchronous=FULL` makes a committed write survive a crash.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from broker.schema import JobStatus
from broker.store.base import (
    BudgetWindow,
    IdempotencyConflict,
    JobRecord,
    PolicyVersion,
    RecordUnreadable,
    Reservation,
    Store,
    StoreUnavailable,
    VersionConflict,
    next_policy_version,
    readable,
    unreadable,
)

T = TypeVar("T")
_Write = tuple[JobRecord, JobRecord, "asyncio.Future[bool]"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    team TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    idempotency_key TEXT,
    lease_until REAL,
    version INTEGER NOT NULL,
    record TEXT NOT NULL,
    ready_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs(team, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, id);
CREATE INDEX IF NOT EXISTS jobs_team ON jobs(team, id);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at);
CREATE TABLE IF NOT EXISTS tasks (
    provider TEXT NOT NULL,
    provider_job_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    PRIMARY KEY (provider, provider_job_id)
);
CREATE TABLE IF NOT EXISTS budget_windows (
    key TEXT PRIMARY KEY,
    spent INTEGER NOT NULL DEFAULT 0,
    reserved INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS budget_reservations (
    job_id TEXT NOT NULL,
    key TEXT NOT NULL,
    amount INTEGER NOT NULL,
    settled INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, key)
);
CREATE TABLE IF NOT EXISTS reconcile (
    job_id TEXT PRIMARY KEY,
    due_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS reconcile_due ON reconcile(due_at);
CREATE TABLE IF NOT EXISTS policy_versions (
    team TEXT NOT NULL,
    version INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (team, version)
);
"""


# Added after the first release: databases from before it get the column and its index on open.
_READY_INDEX = "CREATE INDEX IF NOT EXISTS jobs_ready ON jobs(ready_at, id) WHERE ready_at IS NOT NULL"
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


def _migrate(db: sqlite3.Connection) -> None:
    columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    if "ready_at" not in columns:
        db.execute("ALTER TABLE jobs ADD COLUMN ready_at REAL")
        db.execute(
            "UPDATE jobs SET ready_at = COALESCE(lease_until, 0) WHERE status IN ('queued', 'running')"
        )
    db.execute(_READY_INDEX)
    reservation_columns = {row[1] for row in db.execute("PRAGMA table_info(budget_reservations)")}
    if "reserved_at" not in reservation_columns:  # reservations from before it count as old
        db.execute("ALTER TABLE budget_reservations ADD COLUMN reserved_at REAL NOT NULL DEFAULT 0")
    if "spent" not in reservation_columns:  # what a settled job put into spend (NULL: from before)
        db.execute("ALTER TABLE budget_reservations ADD COLUMN spent INTEGER")


class SQLiteStore(Store):
    """`sqlite:///path/to/broker.db` (relative) or `sqlite:////abs/path.db`."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        self._writes: list[_Write] = []
        self._unreadable: set[str] = set()
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        return cls(Path(url.removeprefix("sqlite:///")))

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._executor is None or self._db is None:
            raise StoreUnavailable("the store is not open")
        db = self._db
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, db)
        except sqlite3.IntegrityError as exc:
            raise VersionConflict(f"the write conflicts with stored state: {exc}") from exc
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"the job store failed: {exc}") from exc

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")

        def connect() -> sqlite3.Connection:
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            _migrate(db)
            return db

        self._db = await asyncio.get_running_loop().run_in_executor(self._executor, connect)

    async def close(self) -> None:
        if self._db is not None and self._executor is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._db.close)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._db = None
        self._executor = None

    async def ping(self) -> None:
        await self._run(lambda db: db.execute("SELECT 1").fetchone())

    # Jobs ---------------------------------------------------------------------------------------
    async def create_job(self, record: JobRecord) -> tuple[JobRecord, bool]:
        def create(db: sqlite3.Connection) -> tuple[JobRecord, bool]:
            db.execute("BEGIN IMMEDIATE")
            try:
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
                        db.execute("COMMIT")
                        return existing, False
                db.execute(
                    "INSERT INTO jobs (id, team, status, created_at, idempotency_key, lease_until,"
                    " version, record, ready_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.id,
                        record.job.team,
                        record.status.value,
                        record.job.created_at.isoformat(),
                        record.idempotency_key,
                        record.lease_until,
                        record.version,
                        _dump(record),
                        record.ready_at,
                    ),
                )
                db.execute("COMMIT")
                return record, True
            except BaseException:
                db.execute("ROLLBACK")
                raise

        return await self._run(create)

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

            def write(db: sqlite3.Connection, batch: list[_Write] = batch) -> list[bool]:
                db.execute("BEGIN IMMEDIATE")
                try:
                    results = [_replace_row(db, old, new) for old, new, _ in batch]
                    db.execute("COMMIT")
                    return results
                except BaseException:
                    db.execute("ROLLBACK")
                    raise

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
                    done.set_result(result)

    async def claim_due(self, owner: str, now: float, lease_s: float, *, limit: int) -> list[JobRecord]:
        def claim(db: sqlite3.Connection) -> list[JobRecord]:
            db.execute("BEGIN IMMEDIATE")
            try:
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
                db.execute("COMMIT")
                return claimed
            except BaseException:
                db.execute("ROLLBACK")
                raise

        return await self._run(claim)

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

    # Budgets ------------------------------------------------------------------------------------
    async def reserve_budget(
        self, job_id: str, amount_micros: int, windows: list[BudgetWindow]
    ) -> Reservation:
        def reserve(db: sqlite3.Connection) -> Reservation:
            db.execute("BEGIN IMMEDIATE")
            try:
                remaining: dict[str, int] = {}
                for window in windows:
                    db.execute("INSERT OR IGNORE INTO budget_windows (key) VALUES (?)", (window.key,))
                    spent, reserved = db.execute(
                        "SELECT spent, reserved FROM budget_windows WHERE key = ?", (window.key,)
                    ).fetchone()
                    remaining[window.key] = window.limit_micros - spent - reserved
                if any(remaining[w.key] < amount_micros for w in windows):
                    db.execute("COMMIT")
                    return Reservation(ok=False, remaining_micros=remaining)
                for window in windows:
                    db.execute(
                        "UPDATE budget_windows SET reserved = reserved + ? WHERE key = ?",
                        (amount_micros, window.key),
                    )
                    db.execute(
                        "INSERT INTO budget_reservations (job_id, key, amount, reserved_at, spent)"
                        " VALUES (?, ?, ?, ?, 0)"
                        " ON CONFLICT(job_id, key) DO UPDATE SET settled = 0, amount = excluded.amount"
                        " + CASE WHEN settled THEN 0 ELSE amount END",
                        (job_id, window.key, amount_micros, time.time()),
                    )
                    remaining[window.key] -= amount_micros
                db.execute("COMMIT")
                return Reservation(ok=True, remaining_micros=remaining)
            except BaseException:
                db.execute("ROLLBACK")
                raise

        return await self._run(reserve)

    async def settle_budget(self, job_id: str, actual_micros: int) -> None:
        def settle(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                rows = db.execute(
                    "SELECT key, amount, settled, spent FROM budget_reservations WHERE job_id = ?", (job_id,)
                ).fetchall()
                for key, amount, settled, spent in rows:
                    if settled and spent is None:
                        continue  # settled before the spent amount was kept: nothing to correct from
                    released, delta = (0 if settled else amount), actual_micros - (spent or 0)
                    db.execute(
                        "UPDATE budget_windows SET reserved = reserved - ?, spent = spent + ? WHERE key = ?",
                        (released, delta, key),
                    )
                db.execute(
                    "UPDATE budget_reservations SET settled = 1, spent = ?"
                    " WHERE job_id = ? AND (settled = 0 OR spent IS NOT NULL)",
                    (actual_micros, job_id),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        await self._run(settle)

    async def budget_usage(self, keys: list[str]) -> dict[str, tuple[int, int]]:
        def usage(db: sqlite3.Connection) -> dict[str, tuple[int, int]]:
            found = {
                key: (spent, reserved)
                for key, spent, reserved in db.execute(
                    f"SELECT key, spent, reserved FROM budget_windows WHERE key IN"
                    f" ({','.join('?' * len(keys))})",
                    keys,
                ).fetchall()
            }
            return {key: found.get(key, (0, 0)) for key in keys}

        return await self._run(usage) if keys else {}

    async def open_reservations(self, reserved_before: float, *, limit: int = 100) -> list[str]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT job_id FROM budget_reservations WHERE settled = 0 AND reserved_at < ?"
                " GROUP BY job_id ORDER BY MIN(reserved_at) LIMIT ?",
                (reserved_before, limit),
            ).fetchall()
        )
        return [job_id for (job_id,) in rows]

    # Reconciliation -----------------------------------------------------------------------------
    async def schedule_reconcile(self, job_id: str, at: float) -> None:
        await self._run(
            lambda db: db.execute(
                "INSERT INTO reconcile (job_id, due_at) VALUES (?, ?)"
                " ON CONFLICT(job_id) DO UPDATE SET due_at = excluded.due_at",
                (job_id, at),
            )
        )

    async def due_reconciles(self, now: float, *, limit: int = 50) -> list[str]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT job_id FROM reconcile WHERE due_at <= ? ORDER BY due_at LIMIT ?", (now, limit)
            ).fetchall()
        )
        return [job_id for (job_id,) in rows]

    async def drop_reconcile(self, job_id: str) -> None:
        await self._run(lambda db: db.execute("DELETE FROM reconcile WHERE job_id = ?", (job_id,)))

    # Policies -----------------------------------------------------------------------------------
    async def get_policy(self, team: str) -> PolicyVersion | None:
        row = await self._run(
            lambda db: db.execute(
                "SELECT record FROM policy_versions WHERE team = ? ORDER BY version DESC LIMIT 1", (team,)
            ).fetchone()
        )
        return None if row is None else PolicyVersion.model_validate_json(row[0])

    async def put_policy(
        self, team: str, policy: dict[str, Any], *, expected_version: int, actor: str, at: datetime
    ) -> PolicyVersion:
        def put(db: sqlite3.Connection) -> PolicyVersion:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT record FROM policy_versions WHERE team = ? ORDER BY version DESC LIMIT 1",
                    (team,),
                ).fetchone()
                current = None if row is None else PolicyVersion.model_validate_json(row[0])
                new = next_policy_version(
                    team, current, policy, expected_version=expected_version, actor=actor, at=at
                )
                db.execute(
                    "INSERT INTO policy_versions (team, version, record) VALUES (?, ?, ?)",
                    (team, new.version, new.model_dump_json()),
                )
                db.execute("COMMIT")
                return new
            except BaseException:
                db.execute("ROLLBACK")
                raise

        return await self._run(put)

    async def policy_history(self, team: str) -> list[PolicyVersion]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT record FROM policy_versions WHERE team = ? ORDER BY version", (team,)
            ).fetchall()
        )
        return [PolicyVersion.model_validate_json(row[0]) for row in rows]
