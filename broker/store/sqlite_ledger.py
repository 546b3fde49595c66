"""The SQLite store's ledger: budget windows and reservations, the reconciliation index, and the
versioned team policies (the jobs are in `sqlite.py`)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from broker.store.base import (
    BudgetWindow,
    PolicyVersion,
    Reservation,
    next_policy_version,
)
from broker.store.sqlite_db import SQLiteDatabase


def reserve_in(
    db: sqlite3.Connection, amounts: Mapping[str, int], windows: list[BudgetWindow], now: float
) -> Reservation:
    """Reserve each job's amount under its own id in every window, all or none: the sum must fit each
    window (inside the caller's transaction)."""
    total = sum(amounts.values())
    remaining: dict[str, int] = {}
    for window in windows:
        db.execute("INSERT OR IGNORE INTO budget_windows (key) VALUES (?)", (window.key,))
        spent, reserved = db.execute(
            "SELECT spent, reserved FROM budget_windows WHERE key = ?", (window.key,)
        ).fetchone()
        remaining[window.key] = window.limit_micros - spent - reserved
    if any(left < total for left in remaining.values()):
        return Reservation(ok=False, remaining_micros=remaining)
    for window in windows:
        db.execute("UPDATE budget_windows SET reserved = reserved + ? WHERE key = ?", (total, window.key))
        db.executemany(
            "INSERT INTO budget_reservations (job_id, key, amount, reserved_at, spent)"
            " VALUES (?, ?, ?, ?, 0)"
            " ON CONFLICT(job_id, key) DO UPDATE SET settled = 0, amount = excluded.amount"
            " + CASE WHEN settled THEN 0 ELSE amount END",
            [(job_id, window.key, amount, now) for job_id, amount in amounts.items()],
        )
        remaining[window.key] -= total
    return Reservation(ok=True, remaining_micros=remaining)


class SQLiteLedger(SQLiteDatabase):
    """Budgets, reconciliation and policies on the SQLite file, in `BEGIN IMMEDIATE` transactions."""

    # Budgets ------------------------------------------------------------------------------------
    async def reserve_budget(
        self, job_id: str, amount_micros: int, windows: list[BudgetWindow]
    ) -> Reservation:
        now = time.time()
        return await self._transaction(lambda db: reserve_in(db, {job_id: amount_micros}, windows, now))

    async def settle_budget(self, job_id: str, actual_micros: int) -> None:
        def settle(db: sqlite3.Connection) -> None:
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

        await self._transaction(settle)

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

    # Team webhooks ------------------------------------------------------------------------------
    async def schedule_webhook(self, delivery: str, at: float, tries: int = 0) -> None:
        await self._run(
            lambda db: db.execute(
                "INSERT INTO webhooks (delivery, due_at, tries) VALUES (?, ?, ?) ON CONFLICT(delivery)"
                " DO UPDATE SET due_at = excluded.due_at, tries = excluded.tries",
                (delivery, at, tries),
            )
        )

    async def claim_webhooks(self, now: float, hold_s: float, *, limit: int = 50) -> list[tuple[str, int]]:
        def claim(db: sqlite3.Connection) -> list[tuple[str, int]]:
            rows = db.execute(
                "SELECT delivery, tries FROM webhooks WHERE due_at <= ? ORDER BY due_at LIMIT ?", (now, limit)
            ).fetchall()
            db.executemany(
                "UPDATE webhooks SET due_at = ? WHERE delivery = ?", [(now + hold_s, d) for d, _ in rows]
            )
            return [(str(delivery), int(tries)) for delivery, tries in rows]

        return await self._run(claim)

    async def drop_webhook(self, delivery: str) -> None:
        await self._run(lambda db: db.execute("DELETE FROM webhooks WHERE delivery = ?", (delivery,)))

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
            return new

        return await self._transaction(put)

    async def policy_history(self, team: str) -> list[PolicyVersion]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT record FROM policy_versions WHERE team = ? ORDER BY version", (team,)
            ).fetchall()
        )
        return [PolicyVersion.model_validate_json(row[0]) for row in rows]
