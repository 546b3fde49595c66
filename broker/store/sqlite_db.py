"""The SQLite file under the store: its schema and migrations, one connection, one writer thread.

Every call runs on a single-thread executor, so statements never interleave.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from broker.store.base import (
    JobRecord,
    StoreUnavailable,
    VersionConflict,
)

T = TypeVar("T")

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
CREATE TABLE IF NOT EXISTS webhooks (
    delivery TEXT PRIMARY KEY,
    due_at REAL NOT NULL,
    tries INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS webhooks_due ON webhooks(due_at);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    team TEXT NOT NULL,
    idempotency_key TEXT,
    record TEXT NOT NULL,
    created_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS batches_idempotency ON batches(team, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS policy_versions (
    team TEXT NOT NULL,
    version INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (team, version)
);
"""


# Added after the first release: databases from before it get the column and its index on open.
_READY_INDEX = "CREATE INDEX IF NOT EXISTS jobs_ready ON jobs(ready_at, id) WHERE ready_at IS NOT NULL"
# Retention's index of batches (unix s); batches from before it have none and are never expired.
_BATCHES_CREATED_INDEX = (
    "CREATE INDEX IF NOT EXISTS batches_created ON batches(team, created_at, id) WHERE created_at IS NOT NULL"
)


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
    if "created_at" not in {row[1] for row in db.execute("PRAGMA table_info(batches)")}:
        db.execute("ALTER TABLE batches ADD COLUMN created_at REAL")
    db.execute(_BATCHES_CREATED_INDEX)


def insert_job_row(db: sqlite3.Connection, record: JobRecord) -> None:
    """Insert a new job's row (inside the caller's transaction)."""
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
            record.model_dump_json(),
            record.ready_at,
        ),
    )


def store_error(exc: BaseException) -> BaseException:
    """A SQLite error as the store's: a constraint is a `VersionConflict`, the file failing is
    `StoreUnavailable`; any other exception as it is."""
    if isinstance(exc, sqlite3.IntegrityError):
        return VersionConflict(f"the write conflicts with stored state: {exc}")
    if isinstance(exc, sqlite3.OperationalError):
        return StoreUnavailable(f"the job store failed: {exc}")
    return exc


def write_each(
    db: sqlite3.Connection, writes: Sequence[Callable[[sqlite3.Connection], T]]
) -> list[T | Exception]:
    """Group commit: `writes` in one transaction (one fsync), each in a savepoint of its own, so one
    that fails (a constraint, a record that will not serialize) is rolled back alone and its error
    (as `store_error` names it) takes its place in the results; the others commit."""
    db.execute("BEGIN IMMEDIATE")
    try:
        results: list[T | Exception] = []
        for write in writes:
            db.execute("SAVEPOINT one_write")
            try:
                results.append(write(db))
            except Exception as exc:
                db.execute("ROLLBACK TO one_write")
                failed = store_error(exc)
                results.append(failed if isinstance(failed, Exception) else exc)
            db.execute("RELEASE one_write")
        db.execute("COMMIT")
        return results
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


class SQLiteDatabase:
    """An open SQLite file in WAL mode, with `synchronous=FULL`, reached only through `_run`."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._executor is None or self._db is None:
            raise StoreUnavailable("the store is not open")
        db = self._db
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, db)
        except (sqlite3.IntegrityError, sqlite3.OperationalError) as exc:
            raise store_error(exc) from exc

    async def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn` in one `BEGIN IMMEDIATE` transaction: committed when it returns, rolled back when it
        raises (its error goes on)."""

        def run(db: sqlite3.Connection) -> T:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(db)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # a failed COMMIT may have left it open
                    db.execute("ROLLBACK")
                raise
            return result

        return await self._run(run)

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
