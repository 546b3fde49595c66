"""Waking the jobs a freed slot was granted to (`broker.jobs.queues`).

A queued job is parked with no timer of its own; the grant makes it due now, and the scheduler that
looks next (on Redis, any replica's, within its idle wait) takes it. A grant to a job that is gone or
ended is passed on at once. A job whose step still holds it is left alone: that step looks for its
grant after it parks the job (`broker.jobs.submit`).
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from broker.jobs.queues import Seat
from broker.jobs.slots import Slots
from broker.store import Store

log = structlog.get_logger("broker.scheduler")


async def make_due(
    store: Store, slots: Slots, now: Callable[[], float], job_ids: list[str], provider: str | None
) -> None:
    """Make each parked job due now; pass on the grants of jobs that can no longer take them."""
    for job_id in job_ids:
        record = await store.get_job(job_id)
        if record is None or record.status.terminal:
            if provider is not None:
                team = record.job.team if record is not None else ""
                await slots.leave(provider, Seat(job_id=job_id, team=team))
            continue
        if record.lease_owner is not None or (record.due_at or 0.0) <= now():
            continue  # a step holds it (and looks for its grant after parking), or it is due anyway
        if await store.replace_job(record.model_copy(update={"due_at": None})) is None:
            log.info("grant_wake_raced", job_id=job_id)  # changed meanwhile: a step has it
