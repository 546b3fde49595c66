"""The download step: fetch the finished MP4 into the artifact store, check it, book the cost, end."""

from __future__ import annotations

import asyncio

import structlog

from adapters.base import TaskHandle, TaskStatus
from broker.jobs.context import StepContext
from broker.jobs.costs import cost, route_key, with_reported
from broker.jobs.ending import fail_attempt, settle
from broker.jobs.work import JobWork, end_job, finish_attempt, with_attempt
from broker.schema import Attempt, AttemptStatus, BrokerError, JobStatus, Output

log = structlog.get_logger("broker.jobs")


async def download(ctx: StepContext, work: JobWork, attempt: Attempt, status: TaskStatus | None) -> None:
    adapter = ctx.adapters[attempt.provider]
    stored = work.record.handles[attempt.id]
    if attempt.status is not AttemptStatus.DOWNLOADING:
        attempt = attempt.model_copy(update={"status": AttemptStatus.DOWNLOADING})
        downloading = attempt
        await work.save(lambda r: with_attempt(r, downloading, work.now()))
    if status is None:  # resumed after a restart: ask again where the output is
        status = await adapter.status(TaskHandle(stored.provider_job_id, stored.model, stored.data))
    route = ctx.routes.get(route_key(attempt))
    attempt = with_reported(attempt, status)
    partial = ctx.artifacts.partial_path(attempt.id)
    try:
        await adapter.fetch_output(status, partial)
        info = await asyncio.to_thread(ctx.artifacts.commit_output, partial, work.job.id)
    except BrokerError as exc:
        spent = cost(route, status, attempt, succeeded=True)
        await fail_attempt(ctx, work, attempt, exc, spent, fallback=True)
        return
    spent = cost(route, status, attempt, succeeded=True)
    done = finish_attempt(attempt, AttemptStatus.SUCCEEDED, work.now(), spent)
    await ctx.provider_slots.release(attempt.provider, attempt.id)
    elapsed = ctx.clock() - attempt.started_at.timestamp()
    await ctx.provider_health.report_success(attempt.provider, route_key(attempt), elapsed)
    output = Output(
        url=f"/v1/jobs/{work.job.id}/output",
        bytes=info.bytes,
        width=info.width,
        height=info.height,
        duration_s=info.duration_s,
        sha256=info.sha256,
    )
    await work.save(
        lambda r: end_job(with_attempt(r, done, work.now()), JobStatus.SUCCEEDED, work.now()).evolve(
            output=output
        ),
        release=True,
    )
    await settle(ctx, work)
    log.info("job_succeeded", provider=attempt.provider, model=attempt.model, cost_usd=work.job.cost_usd)
