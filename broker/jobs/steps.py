"""Which step a job takes next, from its record alone (so any runner can take any job at any step).

  cancel requested   -> cancel (at the provider too, where it can) and end
  no active attempt  -> submit: quote again without the tried routes, take a slot, submit (`submit.py`)
  submitting         -> a refused submit due again: send it again; one a stopped runner left mid-send:
                        resend only where the provider takes an idempotency key, else book it unconfirmed
  submitted/running  -> poll once and park until the next poll (`poll.py`); past the deadline,
                        cancel at the provider, book what it charged, fall back (`booking.py`)
  downloading        -> fetch the output, book the cost, end (`download.py`); a failed fetch is
                        parked and tried again while the provider keeps the output
A failure another route could fix (rate limited, unavailable, timed out, out of funds, bad key) falls
back to the next cheapest route, at most `max_attempts` routes per job; anything else ends the job.
"""

from __future__ import annotations

from broker.jobs.context import StepContext
from broker.jobs.download import download
from broker.jobs.ending import cancel
from broker.jobs.poll import poll
from broker.jobs.submit import resume_submit, start_attempt
from broker.jobs.work import JobWork
from broker.schema import AttemptStatus


async def run_step(ctx: StepContext, work: JobWork) -> None:
    """Run the job's next step; it ends with the job parked (due again later) or ended."""
    attempt = work.active_attempt()
    if work.record.cancel_requested:
        await cancel(ctx, work, attempt)
    elif attempt is None:
        await start_attempt(ctx, work)
    elif attempt.status is AttemptStatus.SUBMITTING:
        await resume_submit(ctx, work, attempt)
    elif attempt.status is AttemptStatus.DOWNLOADING:
        await download(ctx, work, attempt, None)
    else:
        await poll(ctx, work, attempt)
