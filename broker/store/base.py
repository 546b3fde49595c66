"""The `Store` interface: jobs (with their attempts), claims, idempotency keys, budgets and policy
versions. SQLite and Redis implement it and pass one contract suite (`tests/store_contract.py`).

A job is one record with a `version`; every write is compare-and-set on that version, so two workers
can never both move one job. Attempts live inside the job record, so a transition of an attempt and of
its job is one atomic write.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from broker.schema import BrokerError, ErrorCode, Job, JobStatus


class StoreUnavailable(BrokerError):
    code = ErrorCode.STORE_UNAVAILABLE
    http_status = 503


class IdempotencyConflict(BrokerError):
    code = ErrorCode.IDEMPOTENCY_CONFLICT
    http_status = 409


class VersionConflict(BrokerError):
    code = ErrorCode.CONFLICT
    http_status = 409


class AttemptHandle(BaseModel):
    """Where an attempt's task lives at its provider (mirrors `adapters.base.TaskHandle`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider_job_id: str
    model: str
    data: dict[str, str] = Field(default_factory=dict)


class JobRecord(BaseModel):
    """A job as stored: the public `Job` plus the fields only the broker sees."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job: Job
    version: int = 0
    request_hash: str = ""
    idempotency_key: str | None = None
    lease_owner: str | None = None
    lease_until: float | None = None  # unix seconds
    handles: dict[str, AttemptHandle] = Field(default_factory=dict)  # attempt id -> handle
    tried_routes: list[str] = Field(default_factory=list)
    baseline_cost_usd: str | None = None  # the priciest feasible route when quoted, for savings
    # The team policy the job was accepted under: its re-quotes keep to it, so a later edit (or a
    # config reload) never fails a job that was already accepted and reserved against its budget.
    policy: dict[str, Any] | None = None
    # What the job holds against its team's budgets: its estimate at submit, raised before a fallback
    # to a pricier route, so settled spend never outruns what was reserved.
    reserved_usd: str | None = None
    cancel_requested: bool = False

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def status(self) -> JobStatus:
        return self.job.status

    def evolve(self, **job_changes: Any) -> JobRecord:
        """A copy with the job's fields changed (the version is left for the store to bump)."""
        return self.model_copy(update={"job": self.job.model_copy(update=job_changes)})


@dataclass(frozen=True, slots=True)
class BudgetWindow:
    """One budget a reservation must fit: e.g. key "growth:day:2026-11-21", limit in micro-USD."""

    key: str
    limit_micros: int


@dataclass(frozen=True, slots=True)
class Reservation:
    ok: bool
    # Per window key: what remains (limit - spent - reserved) after this call.
    remaining_micros: dict[str, int]


class PolicyVersion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    team: str
    version: int
    policy: dict[str, Any]
    actor: str
    changed_at: datetime
    change: dict[str, Any] = Field(default_factory=dict)  # field -> [old, new]


class Store(ABC):
    """Durable broker state. Every method may raise `StoreUnavailable`."""

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> None:
        """Raise `StoreUnavailable` unless the store answers."""

    # Jobs ---------------------------------------------------------------------------------------
    @abstractmethod
    async def create_job(self, record: JobRecord) -> tuple[JobRecord, bool]:
        """Insert a job; with `record.idempotency_key` set, a second create with the same team and
        key returns the first job and False, or raises `IdempotencyConflict` if the bodies differ."""

    @abstractmethod
    async def get_job(self, job_id: str) -> JobRecord | None: ...

    @abstractmethod
    async def find_idempotent_job(self, team: str, key: str) -> JobRecord | None:
        """The team's job created with this Idempotency-Key, if any."""

    @abstractmethod
    async def list_jobs(
        self,
        *,
        team: str | None = None,
        status: JobStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[JobRecord], str | None]:
        """Newest first; returns the page and the cursor of the next page (None at the end)."""

    @abstractmethod
    async def jobs_created_between(
        self, start: datetime, end: datetime, *, team: str | None = None
    ) -> list[JobRecord]:
        """Every job created in [start, end), oldest first (for reports)."""

    @abstractmethod
    async def replace_job(self, record: JobRecord) -> JobRecord | None:
        """Compare-and-set: write `record` if the stored version equals `record.version`; return the
        stored record (version + 1), or None if another writer got there first."""

    @abstractmethod
    async def claim_job(self, owner: str, now: float, lease_s: float) -> JobRecord | None:
        """Lease the oldest job that is queued, or running under an expired lease, to `owner`."""

    @abstractmethod
    async def count_jobs(self, status: JobStatus) -> int: ...

    # Budgets ------------------------------------------------------------------------------------
    @abstractmethod
    async def reserve_budget(
        self, job_id: str, amount_micros: int, windows: list[BudgetWindow]
    ) -> Reservation:
        """Atomically reserve `amount_micros` in every window, or in none if any would overflow.
        A second reservation for the same job adds to its first; settling releases all of it."""

    @abstractmethod
    async def settle_budget(self, job_id: str, actual_micros: int) -> None:
        """Replace the job's reservation by its actual spend (0 releases it). Idempotent per job."""

    @abstractmethod
    async def budget_usage(self, keys: list[str]) -> dict[str, tuple[int, int]]:
        """Per window key: (spent, reserved) in micro-USD."""

    # Policies -----------------------------------------------------------------------------------
    @abstractmethod
    async def get_policy(self, team: str) -> PolicyVersion | None: ...

    @abstractmethod
    async def put_policy(
        self, team: str, policy: dict[str, Any], *, expected_version: int, actor: str, at: datetime
    ) -> PolicyVersion:
        """Write version `expected_version + 1`; `VersionConflict` if the current one differs."""

    @abstractmethod
    async def policy_history(self, team: str) -> list[PolicyVersion]:
        """Every version, oldest first."""


def policy_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Field -> [old, new] for every field whose value changed between two policy versions."""
    keys = sorted(set(old) | set(new))
    return {
        key: [old.get(key), new.get(key)]
        for key in keys
        if json.dumps(old.get(key), sort_keys=True) != json.dumps(new.get(key), sort_keys=True)
    }


def next_policy_version(
    team: str,
    current: PolicyVersion | None,
    policy: dict[str, Any],
    *,
    expected_version: int,
    actor: str,
    at: datetime,
) -> PolicyVersion:
    """The version that replaces `current`; `VersionConflict` unless `current` is `expected_version`."""
    current_version = 0 if current is None else current.version
    if current_version != expected_version:
        raise VersionConflict(
            f"policy of {team} is at version {current_version}, not {expected_version}",
            details={"current_version": current_version},
        )
    return PolicyVersion(
        team=team,
        version=current_version + 1,
        policy=policy,
        actor=actor,
        changed_at=at,
        change=policy_diff({} if current is None else current.policy, policy),
    )
