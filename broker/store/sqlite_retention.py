"""The SQLite store's retention: ended jobs expire into the daily ledger (see `retention.py`).

    ledger   one row per (day, team, provider, model, figure): the summed integer
    jobs_upload   an index on each job's upload digest, so expiry knows whether another job still
                  names an upload (uploads are shared by content)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import date, datetime

from broker.schema import JobStatus
from broker.store.base import JobRecord, readable
from broker.store.retention import Expiry, LedgerRow, merge_rows
from broker.store.sqlite_db import SQLiteDatabase

_ENDED = tuple(status.value for status in JobStatus if status.terminal)
_UPLOAD = "json_extract(record, '$.job.request.image_upload')"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS ledger (
    day TEXT NOT NULL,
    team TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    figure TEXT NOT NULL,
    amount INTEGER NOT NULL,
    PRIMARY KEY (day, team, provider, model, figure)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS jobs_upload ON jobs({_UPLOAD}) WHERE {_UPLOAD} IS NOT NULL;
"""


def _expire(db: sqlite3.Connection, record: JobRecord, rows: Sequence[LedgerRow]) -> Expiry:
    found = db.execute("SELECT version, status FROM jobs WHERE id = ?", (record.id,)).fetchone()
    if found is None:
        return Expiry.GONE
    version, status = found
    if version != record.version:
        return Expiry.CHANGED
    if status not in _ENDED:
        return Expiry.NOT_ENDED
    if db.execute("SELECT 1 FROM reconcile WHERE job_id = ?", (record.id,)).fetchone():
        return Expiry.RECONCILING
    db.execute("DELETE FROM jobs WHERE id = ?", (record.id,))
    db.execute("DELETE FROM tasks WHERE job_id = ?", (record.id,))
    # A settled reservation is kept only for corrections, which end with the job.
    db.execute("DELETE FROM budget_reservations WHERE job_id = ? AND settled = 1", (record.id,))
    db.executemany(
        "INSERT INTO ledger (day, team, provider, model, figure, amount) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (day, team, provider, model, figure) DO UPDATE SET amount = amount + excluded.amount",
        [
            (row.day.isoformat(), row.team, row.provider, row.model, name, amount)
            for row in rows
            for name, amount in row.figures.items()
            if amount
        ],
    )
    return Expiry.EXPIRED


class SQLiteRetention(SQLiteDatabase):
    """Expiry of ended jobs and the daily ledger, on the SQLite file."""

    async def open(self) -> None:
        await super().open()
        await self._run(lambda db: db.executescript(_SCHEMA))

    async def job_teams(self) -> list[str]:
        rows = await self._run(
            lambda db: db.execute("SELECT DISTINCT team FROM jobs ORDER BY team").fetchall()
        )
        return [str(team) for (team,) in rows]

    async def ended_jobs(
        self, team: str, created_before: datetime, *, limit: int, skip: int = 0
    ) -> list[JobRecord]:
        marks = ",".join("?" * len(_ENDED))
        rows = await self._run(
            lambda db: db.execute(
                f"SELECT record FROM jobs WHERE team = ? AND created_at < ? AND status IN ({marks})"
                " ORDER BY created_at, id LIMIT ? OFFSET ?",
                (team, created_before.isoformat(), *_ENDED, limit, skip),
            ).fetchall()
        )
        return readable(row[0] for row in rows)

    async def upload_in_use(self, digest: str, *, besides: str) -> bool:
        row = await self._run(
            lambda db: db.execute(
                f"SELECT 1 FROM jobs WHERE {_UPLOAD} = ? AND id != ? LIMIT 1", (digest, besides)
            ).fetchone()
        )
        return row is not None

    async def expire_job(self, record: JobRecord, rows: Sequence[LedgerRow]) -> Expiry:
        def expire(db: sqlite3.Connection) -> Expiry:
            outcome = _expire(db, record, rows)
            return outcome

        return await self._transaction(expire)

    async def ledger_rows(self, start: date, end: date, *, team: str | None = None) -> list[LedgerRow]:
        sql = "SELECT day, team, provider, model, figure, amount FROM ledger WHERE day >= ? AND day < ?"
        params = [start.isoformat(), end.isoformat()]
        if team is not None:
            sql += " AND team = ?"
            params.append(team)
        found = await self._run(lambda db: db.execute(sql, params).fetchall())
        return merge_rows(
            [
                LedgerRow(date.fromisoformat(day), team_, provider, model, {figure: int(amount)})
                for day, team_, provider, model, figure, amount in found
            ]
        )

    async def drop_ledger_before(self, day: date) -> None:
        await self._run(lambda db: db.execute("DELETE FROM ledger WHERE day < ?", (day.isoformat(),)))
