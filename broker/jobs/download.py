"""The download step: fetch the finished MP4 into the artifact store, check it, book the cost, end.

A finished output is paid for, so a failed fetch is tried again rather than rendered again elsewhere:
the job stays `running` with its attempt `downloading`, parked between tries on a doubling back-off,
each try asking the provider afresh where the output is (signed URLs expire). It keeps trying for as
long as the provider keeps outputs (`providers.<name>.output_retention_s`, else its adapter's
`spec.output_retention_s`). Only an output the provider says is gone (the task no longer has one, or
its URL answers 404/410), a file that is not a video, or the end of the retention ends the attempt,
with its cost still booked, and the job falls back.

Each fetch is logged when it starts and when it ends (`output_fetch_started`, `output_fetch_ended` with
its outcome), naming the job, the attempt, the provider and the step's owner (the replica's scheduler
and its claim): an operator can tell which replica fetched an output, and a fetch that started and
never ended is one whose process died mid-download.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import structlog

from adapters.base import Adapter, TaskHandle, TaskState, TaskStatus
from adapters.errors import OutputInvalid, ProviderError
from broker.jobs.booking import Booking
from broker.jobs.context import StepContext
from broker.jobs.costs import cost, reported_text, route_key
from broker.jobs.ending import fail_attempt, settle
from broker.jobs.outputs import accept_output
from broker.jobs.work import JobWork, end_job, finish_attempt, with_attempt
from broker.schema import Attempt, AttemptStatus, BrokerError, JobStatus, Output
from broker.store.base import DownloadState
from pricing.money import Money

log = structlog.get_logger("broker.jobs")
FIRST_RETRY_S = 5.0
MAX_RETRY_S = 900.0
GONE_STATUSES = (404, 410)


def retention_s(ctx: StepContext, provider: str) -> float:
    """How long `provider` keeps a finished output: the operator's setting, else its adapter's spec."""
    if (setting := ctx.output_retention_s.get(provider)) is not None:
        return setting
    adapter = ctx.adapters.get(provider)
    return adapter.spec.output_retention_s if adapter is not None else 0.0


def output_gone(exc: BrokerError) -> bool:
    """The output can never be fetched: not a video, or the provider says it no longer has it."""
    if isinstance(exc, OutputInvalid):
        return True
    return isinstance(exc, ProviderError) and exc.status in GONE_STATUSES


async def download(ctx: StepContext, work: JobWork, attempt: Attempt, status: TaskStatus | None) -> None:
    adapter = ctx.adapters[attempt.provider]
    stored = work.record.handles[attempt.id]
    if attempt.status is not AttemptStatus.DOWNLOADING:
        attempt = attempt.model_copy(update={"status": AttemptStatus.DOWNLOADING})
        downloading, since = attempt, ctx.clock()
        await work.save(
            lambda r: with_attempt(r, downloading, work.now()).model_copy(
                update={"download": DownloadState(since=since)}
            )
        )
    route = ctx.routes.get(route_key(attempt))
    # The route's latency is its render's: from the submit to the output being ready, not the fetch.
    rendered_s = ctx.clock() - attempt.started_at.timestamp()
    # Each step writes its own partial file: a step that lost its lease never shares one with the next.
    partial = ctx.artifacts.partial_path(f"{attempt.id}-{work.owner}")
    try:
        if status is None:  # a retry, or resumed after a restart: ask again where the output is
            status = await adapter.status(TaskHandle(stored.provider_job_id, stored.model, stored.data))
        if status.state is not TaskState.SUCCEEDED or status.output_url is None:
            raise ProviderError(
                f"{attempt.provider} no longer has the task's output", provider=attempt.provider, status=410
            )
        fetched = status
        output = await work.keep_lease(lambda: _fetch(ctx, adapter, fetched, partial, work, attempt))
    except BrokerError as exc:
        await _not_fetched(ctx, work, attempt, status, exc)
        return
    spent = cost(route, status, attempt, succeeded=True)
    done = finish_attempt(attempt, AttemptStatus.SUCCEEDED, work.now(), spent, reported=reported_text(status))
    await ctx.provider_slots.release(attempt.provider, attempt.id)
    await ctx.provider_health.report_success(attempt.provider, route_key(attempt), rendered_s)
    await work.save(
        lambda r: end_job(with_attempt(r, done, work.now()), JobStatus.SUCCEEDED, work.now()).evolve(
            output=output
        ),
        release=True,
    )
    await settle(ctx, work)
    log.info("job_succeeded", provider=attempt.provider, model=attempt.model, cost_usd=str(work.job.cost_usd))


async def _fetch(
    ctx: StepContext, adapter: Adapter, status: TaskStatus, partial: Path, work: JobWork, attempt: Attempt
) -> Output:
    """Download the output, then check, normalize and store it (`broker.jobs.outputs`); a download
    cut off leaves no partial file."""
    try:
        await _logged_fetch(adapter, status, partial, work, attempt)
        return await accept_output(ctx.artifacts, ctx.normalizer, partial, work.record)
    finally:
        partial.unlink(missing_ok=True)


async def _logged_fetch(
    adapter: Adapter, status: TaskStatus, partial: Path, work: JobWork, attempt: Attempt
) -> None:
    """`adapter.fetch_output`, between a line saying it started and one saying how it ended."""
    fetch_log = log.bind(
        job_id=work.record.id, attempt_id=attempt.id, provider=attempt.provider, owner=work.owner
    )
    fetch_log.info("output_fetch_started")
    began = time.monotonic()
    try:
        await adapter.fetch_output(status, partial)
    except asyncio.CancelledError:  # the lease was lost (or the process is stopping) mid-download
        fetch_log.info("output_fetch_ended", outcome="cancelled", seconds=_since(began))
        raise
    except BrokerError as exc:
        fetch_log.info("output_fetch_ended", outcome="failed", code=exc.code.value, seconds=_since(began))
        raise
    size = partial.stat().st_size
    fetch_log.info("output_fetch_ended", outcome="fetched", bytes=size, seconds=_since(began))


def _since(began: float) -> float:
    return round(time.monotonic() - began, 3)


async def _not_fetched(
    ctx: StepContext, work: JobWork, attempt: Attempt, status: TaskStatus | None, exc: BrokerError
) -> None:
    """Park the job for another try while the provider keeps the output; else end the attempt, paid."""
    state = work.record.download or DownloadState(since=ctx.clock())
    kept_until = state.since + retention_s(ctx, attempt.provider)
    delay = min(max(FIRST_RETRY_S, state.delay_s * 2), MAX_RETRY_S)
    if not output_gone(exc) and ctx.clock() + delay < kept_until:
        log.warning("download_retrying", provider=attempt.provider, tries=state.tries + 1, in_s=delay)
        # The render is done: it no longer takes a place in the provider's concurrency while we wait.
        await ctx.provider_slots.release(attempt.provider, attempt.id)
        retry = state.model_copy(update={"tries": state.tries + 1, "delay_s": delay})
        await work.park(delay, lambda r: r.model_copy(update={"download": retry}))
        return
    # The render was delivered and paid: its cost stays booked though the file never arrived.
    route = ctx.routes.get(route_key(attempt))
    spent = cost(route, status, attempt, succeeded=True) if status is not None else _estimate(attempt)
    booking = Booking(spent, reported=reported_text(status))
    await fail_attempt(ctx, work, attempt, exc, spent, fallback=True, booking=booking)


def _estimate(attempt: Attempt) -> Money:
    return attempt.estimated_cost_usd or Money.zero()
