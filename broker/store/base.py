"""The `Store` interface: jobs (with their attempts), claims, idempotency keys, budgets and policy
versions. SQLite and Redis implement it and pass one contract suite (`tests/support/store_contract.py`).

A job is one record with a `version`; every write is compare-and-set on that version, so two workers
can never both move one job. Attempts live inside the job record, so a transition of an attempt and of
its job is one atomic write.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field

from broker.schema import BrokerError, ErrorCode, Job, JobStatus, Usd
from broker.store.batches import BatchStore
from broker.store.retention import RetentionStore

log = structlog.get_logger("broker.store")


class RecordUnreadable(BrokerError):
    """A stored record that cannot be decoded (written by a bug, or by hand): that one job fails."""

    code = ErrorCode.INTERNAL


def unreadable(job_id: str | None) -> RecordUnreadable:
    which = f"job {job_id}" if job_id else "a job"
    return RecordUnreadable(
        f"the stored record of {which} cannot be read; the job was failed and set aside (it is logged)",
        details={"job_id": job_id} if job_id else None,
    )


def readable(raws: Iterable[str]) -> list[JobRecord]:
    """The records that decode; one that does not is logged and left out, so a listing or a report
    never fails for one bad record."""
    records: list[JobRecord] = []
    for raw in raws:
        try:
            records.append(JobRecord.model_validate_json(raw))
        except ValueError as exc:
            log.error("job_record_unreadable", error=str(exc)[:200])
    return records


class StoreUnavailable(BrokerError):
    code = ErrorCode.STORE_UNAVAILABLE


class IdempotencyConflict(BrokerError):
    code = ErrorCode.IDEMPOTENCY_CONFLICT


class VersionConflict(BrokerError):
    code = ErrorCode.CONFLICT


class AttemptHandle(BaseModel):
    """Where an attempt's task lives at its provider (mirrors `adapters.base.TaskHandle`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider_job_id: str
    model: str
    data: dict[str, str] = Field(default_factory=dict)


class PollState(BaseModel):
    """Where polling of the active attempt stands: the last wait, and the last progress seen and when."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    delay_s: float
    progress: float | None = None
    at: float | None = None


class DownloadState(BaseModel):
    """Tries at fetching a finished output: since when (unix s), how many, and the wait before the next."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    since: float
    tries: int = 0
    delay_s: float = 0.0


class SubmitState(BaseModel):
    """Sends of the active attempt's submit. `sending`: a request may be out (a runner that stops now
    leaves the attempt uncertain); else the last send was refused (429, 5xx) and may be sent again."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    since: float  # the first send (unix s), for the retry policy's time bound
    tries: int = 0  # sends refused so far
    sending: bool = True
    answer_lost: bool = False  # a send's answer never came: the provider may hold the task


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
    baseline_cost_usd: Usd | None = None  # the priciest feasible route when quoted, for savings
    # The team policy the job was accepted under: its re-quotes keep to it, so a later edit (or a
    # config reload) never fails a job that was already accepted and reserved against its budget.
    policy: dict[str, Any] | None = None
    # What the job holds against its team's budgets: its estimate at submit, raised before a fallback
    # to a pricier route, so settled spend never outruns what was reserved.
    reserved_usd: Usd | None = None
    cancel_requested: bool = False
    # Scheduling: when the job's next step is due (unix s by the runner's clock; None: now). A job
    # waiting for its provider is only this record: no worker, no lease, no task holds it.
    due_at: float | None = None
    poll: PollState | None = None  # the active attempt's polling so far
    step_failures: int = 0  # steps that crashed (bugs, not provider failures), bounded by the runner
    download: DownloadState | None = None  # the active attempt's output fetch, retried while kept
    submit: SubmitState | None = None  # the active attempt's submit, while it is `submitting`
    queued: str | None = None  # the provider whose queue the job waits in for a slot (broker.jobs.queues)
    # When it first took a place in a queue (unix s, kept if it moves to another), until its slot is
    # taken: the start of the queue wait that `broker_queue_wait_seconds` observes.
    queued_since: float | None = None

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def status(self) -> JobStatus:
        return self.job.status

    @property
    def ready_at(self) -> float | None:
        """When a claim may take the job: its due time, or the end of a lease a step holds; None once
        it has ended. A killed runner's job is therefore due again as soon as its lease lapses."""
        if self.status.terminal:
            return None
        if self.lease_owner is not None and self.lease_until is not None:
            return max(self.lease_until, self.due_at or 0.0)
        return self.due_at or 0.0

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


class Store(BatchStore, RetentionStore, ABC):
    """Durable broker state (batches' part in `batches.py`). Every method may raise `StoreUnavailable`;
    expiry and the daily ledger are declared in `retention.py`."""

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

    async def claim_job(self, owner: str, now: float, lease_s: float) -> JobRecord | None:
        """Lease the job that has been due longest to `owner` (see `claim_due`)."""
        claimed = await self.claim_due(owner, now, lease_s, limit=1)
        return claimed[0] if claimed else None

    @abstractmethod
    async def claim_due(self, owner: str, now: float, lease_s: float, *, limit: int) -> list[JobRecord]:
        """Lease up to `limit` unfinished jobs whose `ready_at` is at or before `now` to `owner`, the
        longest due first. A record that cannot be decoded is skipped here and reported by
        `unreadable_due`, so it never blocks the jobs behind it."""

    @abstractmethod
    async def next_due_at(self) -> float | None:
        """The earliest `ready_at` of any unfinished job (None when there is none)."""

    @abstractmethod
    async def unreadable_due(self, now: float, *, limit: int = 10) -> list[str]:
        """Ids of due jobs whose records cannot be decoded."""

    @abstractmethod
    async def quarantine_job(self, job_id: str) -> None:
        """Take an undecodable job out of the due index for good (its raw record stays for forensics)."""

    @abstractmethod
    async def index_task(self, provider: str, provider_job_id: str, job_id: str) -> None:
        """Remember which job a provider task belongs to, so a provider webhook can find it."""

    @abstractmethod
    async def find_task(self, provider: str, provider_job_id: str) -> str | None:
        """The job id of a provider task indexed by `index_task`."""

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
        """Replace the job's reservation by its actual spend (0 releases it). Idempotent per job; a
        later call with another amount (a reconciled charge) books the difference in the same windows."""

    @abstractmethod
    async def budget_usage(self, keys: list[str]) -> dict[str, tuple[int, int]]:
        """Per window key: (spent, reserved) in micro-USD."""

    @abstractmethod
    async def open_reservations(self, reserved_before: float, *, limit: int = 100) -> list[str]:
        """Ids of jobs holding an unsettled reservation first made before `reserved_before` (unix s,
        wall clock), oldest first: what the budget sweeper checks against the jobs' ends."""

    # Reconciliation -----------------------------------------------------------------------------
    @abstractmethod
    async def schedule_reconcile(self, job_id: str, at: float) -> None:
        """Ask the job's providers about its unconfirmed charges at `at` (unix s; replaces any time)."""

    @abstractmethod
    async def due_reconciles(self, now: float, *, limit: int = 50) -> list[str]:
        """Ids of jobs whose reconciliation is due at `now`, the longest due first."""

    @abstractmethod
    async def drop_reconcile(self, job_id: str) -> None:
        """Nothing of the job is left to reconcile."""

    # Team webhooks: an outbox every replica sends from ------------------------------------------
    @abstractmethod
    async def schedule_webhook(self, delivery: str, at: float, tries: int = 0) -> None:
        """Put a delivery ("<job id>|<event>") in the outbox, due at `at`, after `tries` tries."""

    @abstractmethod
    async def claim_webhooks(self, now: float, hold_s: float, *, limit: int = 50) -> list[tuple[str, int]]:
        """The due deliveries with their tries, each held for `hold_s` so no other replica sends it."""

    @abstractmethod
    async def drop_webhook(self, delivery: str) -> None:
        """The delivery is done (delivered, or given up)."""

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
