"""One structured log event per job transition and per attempt transition, from stored job changes.

The events carry ids, names, statuses, error codes and money; never the prompt, the image or the
metadata a caller sent (the request is not logged at all).
"""

from __future__ import annotations

import structlog

from broker.schema import Attempt
from broker.store import JobRecord

log = structlog.get_logger("broker.jobs")


class TransitionLogger:
    """A `JobObserver` logging `job_transition` and `attempt_transition` events."""

    def job_changed(self, before: JobRecord | None, after: JobRecord) -> None:
        """Log what changed status between `before` and `after` (a new job counts as a transition)."""
        job = after.job
        previous = {a.id: a for a in before.job.attempts} if before else {}
        for attempt in job.attempts:
            old = previous.get(attempt.id)
            if old is None or old.status is not attempt.status:
                self._attempt(after, attempt, None if old is None else old.status.value)
        if before is None or before.status is not after.status:
            log.info(
                "job_transition",
                job_id=job.id,
                team=job.team,
                provider=job.route.provider if job.route else None,
                model=job.route.model if job.route else None,
                status=job.status.value,
                previous=None if before is None else before.status.value,
                attempts=len(job.attempts),
                estimated_cost_usd=None if job.estimated_cost_usd is None else str(job.estimated_cost_usd),
                cost_usd=str(job.cost_usd),
                error=job.error.code.value if job.error else None,
            )

    @staticmethod
    def _attempt(record: JobRecord, attempt: Attempt, previous: str | None) -> None:
        log.info(
            "attempt_transition",
            job_id=record.id,
            team=record.job.team,
            attempt_id=attempt.id,
            provider=attempt.provider,
            model=attempt.model,
            status=attempt.status.value,
            previous=previous,
            cost_usd=None if attempt.cost_usd is None else str(attempt.cost_usd),
            error=attempt.error.code.value if attempt.error else None,
        )
