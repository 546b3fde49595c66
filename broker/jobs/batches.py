"""Taking a batch in and calling it off: what `POST /v1/batches` and `DELETE /v1/batches/{id}` decide.

A batch is all or none. Every item is quoted for the team under one reading of its policy; an item no
route can serve refuses the whole batch, naming its index (a batch never runs short of an item the
caller asked for). The sum of the estimates is then reserved in one step against each of the team's
budget windows (each job's share under its own id, so its own settlement later releases exactly it):
a sum that does not fit refuses the batch with the figures, having created and reserved nothing.
Only then are the batch and its jobs stored (`Store.create_batch`).

Crashes and retries: reservations made before a crash whose jobs never came are released by the
budget sweeper, as a lone job's are. A Redis store writes the record before the jobs, so a crash can
leave a record short of jobs: a replay of the same Idempotency-Key and body creates the missing ones
(quoted and reserved then) and answers the batch whole. Items default to `priority: batch`.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from broker.errors import BudgetExceeded, Conflict, NoFeasibleRoute, NotFound
from broker.jobs import budgets
from broker.jobs.acceptance import Acceptance, new_id, new_job_record
from broker.observability.events import notify
from broker.request_types import Priority
from broker.schema import JobRequest
from broker.store import BudgetWindow, IdempotencyConflict, JobRecord, StoreUnavailable
from broker.store.batches import BatchRecord
from policies.model import Policy
from pricing.money import Money


def as_batch_item(request: JobRequest) -> JobRequest:
    """A batch item's request: `priority: batch` unless the item names its own."""
    return (
        request if request.priority is not None else request.model_copy(update={"priority": Priority.BATCH})
    )


def _over_budget(total: Money, count: int, remaining: Mapping[str, int], windows: list[BudgetWindow]) -> None:
    left = {key: str(Money(max(0, micros))) for key, micros in remaining.items()}
    short = [w.key for w in windows if remaining[w.key] < total.micros]
    said = ", ".join(f"{left[key]} USD left in {key}" for key in short)
    raise BudgetExceeded(
        f"the batch's estimate of {total} USD for {count} items does not fit the team's budget ({said});"
        " the whole batch was refused and nothing was created or reserved",
        details={
            "estimated_cost_usd": str(total),
            "items": count,
            "remaining_usd": left,
            "limit_usd": {w.key: str(Money(w.limit_micros)) for w in windows},
            "short_windows": short,
        },
    )


class BatchAcceptance:
    """Submits and cancels batches through the jobs' own acceptance (its store, router and clock)."""

    def __init__(self, jobs: Acceptance) -> None:
        self.jobs = jobs
        # Idempotency keys being submitted in this process: retries of one take turns; [lock, users].
        self._keys: dict[tuple[str, str], tuple[asyncio.Lock, list[int]]] = {}

    async def submit(
        self,
        team: str,
        items: Sequence[JobRequest],
        *,
        request_hash: str,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[BatchRecord, bool]:
        """The batch for this body, and whether this call created it (False: an idempotent replay)."""
        items = [as_batch_item(item) for item in items]
        if idempotency_key is None:
            return await self._create(team, items, request_hash, metadata, None)
        lock, users = self._keys.setdefault((team, idempotency_key), (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                if (replay := await self._replay(team, idempotency_key, request_hash)) is not None:
                    return await self._complete(replay, items), False
                return await self._create(team, items, request_hash, metadata, idempotency_key)
        finally:
            users[0] -= 1
            if not users[0]:
                del self._keys[(team, idempotency_key)]

    async def _replay(self, team: str, key: str, request_hash: str) -> BatchRecord | None:
        existing = await self.jobs.store.find_idempotent_batch(team, key)
        if existing is not None and existing.request_hash != request_hash:
            raise IdempotencyConflict(
                "this Idempotency-Key was used with a different batch body", details={"batch_id": existing.id}
            )
        return existing

    async def _records(self, team: str, items: Sequence[JobRequest], policy: Policy) -> list[JobRecord]:
        """Each item quoted and made a queued job, in order; an item no route serves refuses them all."""
        router, now = self.jobs.router, self.jobs.now()
        records: list[JobRecord] = []
        for index, item in enumerate(items):
            quote = await router.quote(team, item, policy=policy)
            if quote.chosen is None:
                raise NoFeasibleRoute(
                    f"item {index}: no route can serve this job; the whole batch was refused",
                    details={"index": index, "rejected": [r.to_json() for r in quote.rejected]},
                )
            digest = hashlib.sha256(item.model_dump_json().encode()).hexdigest()
            records.append(new_job_record(team, item, quote, policy, now, request_hash=digest))
        return records

    async def _reserve(self, team: str, policy: Policy, records: Sequence[JobRecord]) -> None:
        windows = budgets.budget_windows(team, policy, self.jobs.now())
        if not windows:
            return
        amounts = {r.id: (r.reserved_usd or Money.zero()).micros for r in records}
        result = await self.jobs.store.reserve_budgets(amounts, windows)
        if not result.ok:
            _over_budget(Money(sum(amounts.values())), len(records), result.remaining_micros, windows)

    async def _release(self, records: Sequence[JobRecord]) -> None:
        for record in records:
            await self.jobs.store.settle_budget(record.id, 0)

    async def _create(
        self,
        team: str,
        items: Sequence[JobRequest],
        request_hash: str,
        metadata: dict[str, Any] | None,
        idempotency_key: str | None,
    ) -> tuple[BatchRecord, bool]:
        policy = await self.jobs.router.policy(team)
        records = await self._records(team, items, policy)
        total = sum((r.reserved_usd or Money.zero() for r in records), Money.zero())
        batch = BatchRecord(
            id=new_id("bat", self.jobs.now()),
            team=team,
            created_at=self.jobs.now(),
            job_ids=[r.id for r in records],
            estimated_cost_usd=str(total),
            request_hash=request_hash,
            idempotency_key=idempotency_key,
            metadata=metadata,
        )
        await self._reserve(team, policy, records)
        try:
            stored, created = await self.jobs.store.create_batch(batch, records)
        except StoreUnavailable:
            raise  # the writes may have happened: the sweeper releases what has no job once it is old
        except BaseException:
            await self._release(records)
            raise
        if not created:  # another replica took this key meanwhile: its batch holds the reservations
            await self._release(records)
            return await self._complete(stored, items), False
        for record in records:
            notify(self.jobs.observers, None, record)
        self.jobs.wake()
        return stored, True

    async def _complete(self, batch: BatchRecord, items: Sequence[JobRequest]) -> BatchRecord:
        """Create the jobs a crash left out of a stored batch (only a Redis store can leave any)."""
        found = await self.jobs.store.get_jobs(batch.job_ids)
        missing = [index for index, record in enumerate(found) if record is None]
        if not missing:
            return batch
        policy = await self.jobs.router.policy(batch.team)
        fresh = await self._records(batch.team, [items[i] for i in missing], policy)
        records = [
            r.model_copy(update={"job": r.job.model_copy(update={"id": batch.job_ids[i]})})
            for i, r in zip(missing, fresh, strict=True)
        ]
        await self._release(records)  # anything a crashed first try left reserved under these ids
        await self._reserve(batch.team, policy, records)
        for record in records:
            stored, _ = await self.jobs.store.create_job(record)
            notify(self.jobs.observers, None, stored)
        self.jobs.wake()
        return batch

    async def cancel(self, batch: BatchRecord) -> list[JobRecord | None]:
        """Cancel every job of the batch that has not ended (through the jobs' own cancel); the jobs
        after it, in item order."""
        records = await self.jobs.store.get_jobs(batch.job_ids)
        after: list[JobRecord | None] = []
        for record in records:
            if record is not None and not record.status.terminal:
                try:
                    record = await self.jobs.cancel(record)
                except (Conflict, NotFound):  # it ended meanwhile: read what it ended as
                    record = await self.jobs.store.get_job(record.id)
            after.append(record)
        return after
