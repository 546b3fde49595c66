"""Taking a job in and calling one off: what `POST /v1/jobs` and `DELETE /v1/jobs/{id}` decide, on the
app's injected clock, with no HTTP in sight.

A submit with a repeated idempotency key gets that key's job back (checked before quoting and
reserving, so a retry gets its job even when the budget or the routes have changed since; another
body is an `IdempotencyConflict`). Otherwise the router quotes the job under the team's current
policy (no route: `NoFeasibleRoute`), the budget holds the estimate, and the store creates the job,
queued and due now; its observers hear of it and the scheduler wakes.

Retries of one key racing each other: in one process they take turns (a lock per key), so every one
after the first finds the first's job before it quotes or reserves; across replicas, the store's
create settles which one made the job, and a retry the budget refused looks for the key's job once
more before it answers 402 — a retry of an accepted job always gets that job.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from datetime import UTC, datetime

from adapters.base import Clock
from broker.errors import BudgetExceeded, Conflict, NoFeasibleRoute, NotFound
from broker.jobs import budgets, team_webhooks
from broker.jobs.routing import Router
from broker.observability.events import JobObserver, notify
from broker.schema import Job, JobRequest, JobStatus, RouteRef
from broker.store import IdempotencyConflict, JobRecord, Store, StoreUnavailable
from policies.model import Policy
from pricing.quote import Quote


def new_id(prefix: str, at: datetime) -> str:
    """A unique id that sorts by creation time: milliseconds in hex, then randomness."""
    return f"{prefix}_{int(at.timestamp() * 1000):012x}{secrets.token_hex(5)}"


def new_job_record(
    team: str,
    request: JobRequest,
    quote: Quote,
    policy: Policy,
    now: datetime,
    *,
    request_hash: str,
    idempotency_key: str | None = None,
) -> JobRecord:
    """A queued job on the quote's chosen route, holding its estimate against the budget (once reserved)."""
    if quote.chosen is None:
        raise NoFeasibleRoute("no route can serve this job")
    estimate = quote.chosen.cost
    job = Job(
        id=new_id("job", now),
        team=team,
        status=JobStatus.QUEUED,
        request=request,
        route=RouteRef(
            provider=quote.chosen.route.provider,
            model=quote.chosen.route.model,
            estimated_cost_usd=estimate,
            unpriced=quote.chosen.unpriced,
        ),
        estimated_cost_usd=estimate,
        created_at=now,
        updated_at=now,
    )
    return JobRecord(
        job=job,
        request_hash=request_hash,
        idempotency_key=idempotency_key,
        baseline_cost_usd=quote.baseline.cost if quote.baseline else None,
        policy=policy.model_dump(mode="json", exclude_none=True),
        reserved_usd=estimate,
    )


class _KeyLock(asyncio.Lock):
    """One idempotency key's turn-taking, dropped when its last waiter is done."""

    users = 0


class Acceptance:
    """Submits and cancels jobs for the API, with its dependencies named."""

    def __init__(
        self,
        store: Store,
        router: Router,
        observers: list[JobObserver],
        clock: Clock,
        wake: Callable[[], None],
    ) -> None:
        self.store = store
        self.router = router
        self.observers = observers
        self.clock = clock
        self.wake = wake  # the scheduler's: a new or cancelled job is due now
        self._keys: dict[tuple[str, str], _KeyLock] = {}  # idempotency keys being submitted here

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def submit(
        self,
        team: str,
        request: JobRequest,
        *,
        request_hash: str,
        upload_bytes: int | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[JobRecord, bool]:
        """The job for this request, and whether this call created it (False: an idempotent replay)."""
        if idempotency_key is None:
            return await self._create(team, request, request_hash, upload_bytes, None)
        lock = self._keys.setdefault((team, idempotency_key), _KeyLock())
        lock.users += 1
        try:
            async with lock:
                replay = await self._replay(team, idempotency_key, request_hash)
                if replay is not None:
                    return replay, False
                try:
                    return await self._create(team, request, request_hash, upload_bytes, idempotency_key)
                except BudgetExceeded:
                    # Another replica may have accepted this key's job while this one quoted.
                    if (replay := await self._replay(team, idempotency_key, request_hash)) is not None:
                        return replay, False
                    raise
        finally:
            lock.users -= 1
            if not lock.users:
                del self._keys[(team, idempotency_key)]

    async def _create(
        self,
        team: str,
        request: JobRequest,
        request_hash: str,
        upload_bytes: int | None,
        idempotency_key: str | None,
    ) -> tuple[JobRecord, bool]:
        policy = await self.router.policy(team)
        quote = await self.router.quote(team, request, upload_bytes=upload_bytes, policy=policy)
        if quote.chosen is None:
            raise NoFeasibleRoute(
                "no route can serve this job", details={"rejected": [r.to_json() for r in quote.rejected]}
            )
        now = self.now()
        record = new_job_record(
            team, request, quote, policy, now, request_hash=request_hash, idempotency_key=idempotency_key
        )
        job, estimate = record.job, quote.chosen.cost
        await budgets.reserve(self.store, job.id, estimate, budgets.budget_windows(team, policy, now))
        try:
            stored, created = await self.store.create_job(record)
        except StoreUnavailable:
            # A create that timed out may still have made the job (Redis): releasing its hold now could
            # let it run unreserved. The budget sweeper settles it once the job ends, or to 0 if none exists.
            raise
        except BaseException:
            await self.store.settle_budget(job.id, 0)
            raise
        if not created:
            await self.store.settle_budget(job.id, 0)  # a replay: the first job holds the reservation
            return stored, False
        notify(self.observers, None, stored)
        self.wake()
        return stored, True

    async def _replay(self, team: str, key: str, request_hash: str) -> JobRecord | None:
        existing = await self.store.find_idempotent_job(team, key)
        if existing is not None and existing.request_hash != request_hash:
            raise IdempotencyConflict(
                "this Idempotency-Key was used with a different request body", details={"job_id": existing.id}
            )
        return existing

    async def cancel(self, record: JobRecord) -> JobRecord:
        """Cancel a job: at once if no worker holds it and it has not been submitted, else flag it."""
        before = record
        while True:
            if record.status.terminal:
                raise Conflict(f"the job already ended: {record.status.value}")
            now = self.now()
            untouched = not record.job.attempts and record.lease_owner is None
            if untouched:
                changed = record.evolve(status=JobStatus.CANCELLED, updated_at=now, completed_at=now)
                await team_webhooks.enqueue(self.store, changed)
            else:
                # Due now: a job waiting for its next poll is cancelled at once, not at that poll.
                changed = record.model_copy(update={"cancel_requested": True, "due_at": None})
            stored = await self.store.replace_job(changed)
            if stored is not None:
                if untouched:
                    await self.store.settle_budget(record.id, 0)
                notify(self.observers, before, stored)
                self.wake()
                return stored
            fresh = await self.store.get_job(record.id)
            if fresh is None:
                raise NotFound("no such job")
            record = fresh
