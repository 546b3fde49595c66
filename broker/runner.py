"""The job runner: background workers that claim queued jobs and carry each one to its end.

One step at a time, each written to the store before the next side effect:
  no active attempt  -> quote again without the tried routes (open circuits and saturated providers
                        left out), take a capacity slot on the cheapest (or wait for one, still
                        queued, until `max_latency_s` runs out) and submit
  submitting         -> after a crash: resubmit only where the provider takes an idempotency key,
                        else fail the attempt with `submission_uncertain` (never paid for twice)
  submitted/running  -> poll on the adapter's schedule (a provider webhook only wakes the poll early)
  downloading        -> fetch the MP4 into the artifact store, check it, book the cost, settle budget
A failure another route could fix (rate limited, unavailable, timed out, out of funds, bad key) moves
on to the next cheapest route, at most `max_attempts` routes per job; anything else ends the job.
Every attempt's end is reported to provider health (`broker.health`) and gives back its capacity slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field

import structlog

from adapters.base import Adapter, Clock, ImageInput, RenderTask, Sleep, TaskHandle, TaskState, TaskStatus
from adapters.errors import ProviderError, ProviderUnavailable, SubmissionUncertain
from adapters.images import FetchPolicy, ImageFetchFailed, check_image, fetch_image
from adapters.outbound import OutboundPolicy, OutboundRefused
from adapters.polling import poll_until_done
from broker.artifacts import ArtifactStore
from broker.capacity import Capacity
from broker.events import JobObserver
from broker.health import ProviderHealth
from broker.jobwork import JobWork, LeaseLost, end_job, finish_attempt, route_key, with_attempt
from broker.schema import (
    Attempt,
    AttemptStatus,
    BrokerError,
    ErrorCode,
    JobError,
    JobRequest,
    JobStatus,
    Output,
    RouteRef,
    decode_data_uri,
)
from broker.store import JobRecord, Store
from broker.store.base import AttemptHandle
from pricing.catalog import RouteSpec
from pricing.money import Money, UnknownPrice
from pricing.quote import Quote

log = structlog.get_logger("broker.runner")

QuoteFn = Callable[[JobRecord, Collection[str]], Awaitable[Quote]]


class CancelRequested(Exception):
    """Raised out of a poll when the job's owner asked to cancel it."""


@dataclass(frozen=True, slots=True)
class RunnerOptions:
    workers: int = 4
    lease_s: float = 60.0
    idle_wait_s: float = 1.0
    max_attempts: int = 3
    capacity_check_s: float = 5.0  # how often a job waiting for a slot looks again at worst
    max_crashes: int = 3  # unexpected errors on one job before it is failed rather than retried
    public_url: str | None = None  # where providers can reach this broker's /v1/callbacks/{provider}
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)  # where a job's image_url may lead


class JobRunner:
    def __init__(
        self,
        *,
        store: Store,
        artifacts: ArtifactStore,
        adapters: dict[str, Adapter],
        routes: Collection[RouteSpec],
        quote: QuoteFn,
        options: RunnerOptions,
        max_attempts: Callable[[JobRecord], Awaitable[int]] | None = None,
        clock: Clock,
        sleep: Sleep = asyncio.sleep,
        observers: list[JobObserver] | None = None,
        health: ProviderHealth | None = None,
        capacity: Capacity | None = None,
        scrub: Callable[[str], str] = str,
        reserve_more: Callable[[JobRecord, Money], Awaitable[bool]] | None = None,
    ) -> None:
        self.store, self.artifacts, self.adapters = store, artifacts, adapters
        self.routes = {route.key: route for route in routes}
        self.quote, self.options = quote, options
        self.clock, self.sleep = clock, sleep
        self._max_attempts = max_attempts
        self.observers = observers if observers is not None else []
        self.health = health or ProviderHealth(clock)
        self.capacity = capacity or Capacity(clock)
        self.owner = f"runner-{secrets.token_hex(6)}"
        self._scrub = scrub
        self._reserve_more = reserve_more
        self._crashes: dict[str, int] = {}
        self._wakeup = asyncio.Event()
        self._webhooks: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return any(not task.done() for task in self._tasks)

    def wake(self) -> None:
        """A job was queued or changed: let an idle worker look now."""
        self._wakeup.set()

    def notify(self, provider_job_id: str) -> None:
        """A provider webhook arrived for this task: poll it now rather than at the next interval."""
        if (event := self._webhooks.get(provider_job_id)) is not None:
            event.set()

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._worker(f"{self.owner}-{i}"), name=f"job-worker-{i}")
            for i in range(self.options.workers)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _worker(self, owner: str) -> None:
        # Each worker claims under its own name, so a job whose lease lapsed and went to a sibling
        # worker is seen as lost by the first at its next write.
        while True:
            try:
                record = await self.store.claim_job(owner, self.clock(), self.options.lease_s)
            except BrokerError as exc:  # the store is down: wait, it recovers by itself
                log.warning("claim_failed", code=exc.code.value, error=exc.message)
                record = None
            if record is None:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the cancel that
                # stops the runner when the wake-up lands at the same moment, and stop() then hangs.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.options.idle_wait_s):
                        await self._wakeup.wait()
                self._wakeup.clear()
                continue
            await self.run_job(record)

    async def run_job(self, record: JobRecord) -> None:
        """Carry one claimed job as far as it goes; errors are logged, never raised to the worker."""
        owner = record.lease_owner or self.owner
        work = JobWork(
            self.store, record, owner, self.clock, self.options.lease_s, self.observers, self.sleep
        )
        with structlog.contextvars.bound_contextvars(job_id=record.id, team=record.job.team):
            try:
                while not work.record.status.terminal:
                    await self._step(work)
            except LeaseLost:
                log.info("lease_lost")
            except BrokerError as exc:
                log.warning("job_step_failed", code=exc.code.value, error=exc.message)
            except Exception:
                log.exception("job_step_crashed")
                await self._after_crash(work)
            finally:
                self.capacity.release_job(record.id)

    async def _after_crash(self, work: JobWork) -> None:
        """A bug, not a provider's failure: retry the job after its lease runs out, a few times only."""
        crashes = self._crashes[work.job.id] = self._crashes.get(work.job.id, 0) + 1
        if crashes < self.options.max_crashes:
            return
        self._crashes.pop(work.job.id, None)
        error = JobError(
            code=ErrorCode.INTERNAL, message="the broker failed on this job repeatedly; it is logged"
        )
        with contextlib.suppress(LeaseLost, BrokerError):
            await work.refresh()
            await self._end(work, JobStatus.FAILED, error)

    async def _step(self, work: JobWork) -> None:
        attempt = work.active_attempt()
        if work.record.cancel_requested:
            await self._cancel(work, attempt)
        elif attempt is None:
            await self._start_attempt(work)
        elif attempt.status is AttemptStatus.SUBMITTING:
            await self._resolve_uncertain(work, attempt)
        elif attempt.status is AttemptStatus.DOWNLOADING:
            await self._download(work, attempt, None)
        else:
            await self._poll(work, attempt)

    # Choosing and submitting --------------------------------------------------------------------
    async def _limit(self, record: JobRecord) -> int:
        return await self._max_attempts(record) if self._max_attempts else self.options.max_attempts

    async def _claim_route(self, work: JobWork, attempt_id: str) -> RouteSpec | JobError | None:
        """The cheapest feasible untried route, with a capacity slot taken for `attempt_id`.

        When every feasible route's provider is saturated the job waits here (still queued, or running
        after a failed attempt) until a slot frees or its `max_latency_s` runs out. None: the owner
        asked to cancel while it waited.
        """
        while True:
            if len(work.job.attempts) >= await self._limit(work.record):
                return JobError(code=ErrorCode.NO_FEASIBLE_ROUTE, message="every allowed attempt failed")
            quote = await self.quote(work.record, work.record.tried_routes)
            if quote.chosen is None:
                message = "no untried route can serve the job"
                return JobError(code=ErrorCode.NO_FEASIBLE_ROUTE, message=message)
            route = quote.chosen.route
            # A half-open circuit's probe may have gone to another worker since the quote; it is checked
            # again here, with no await before the slot is taken, so at most one probe goes out.
            probe_taken = self.health.breaker(route.provider).blocked() is not None
            if not probe_taken and self.capacity.try_acquire(route.provider, attempt_id, work.job.id):
                self.health.started(route.provider)
                return route
            if (expired := self._capacity_deadline_passed(work, quote)) is not None:
                return expired
            await self._wait_for_capacity(work, route.provider)
            if work.record.cancel_requested:
                return None

    def _capacity_deadline_passed(self, work: JobWork, quote: Quote) -> JobError | None:
        """The job's error once waiting for capacity has used up its `max_latency_s`."""
        max_latency = quote.constraints.max_latency_s if quote.constraints is not None else None
        if max_latency is None or work.job.created_at.timestamp() + max_latency > self.clock():
            return None
        message = f"every feasible provider stayed at capacity past max_latency_s ({max_latency} s)"
        return JobError(code=ErrorCode.TIMED_OUT, message=message)

    async def _wait_for_capacity(self, work: JobWork, provider: str) -> None:
        """Wait until a slot may have freed (or a while), keeping the lease and seeing cancel requests."""
        log.info("waiting_for_capacity", provider=provider, reason=self.capacity.blocked(provider))
        pause = min(self.options.capacity_check_s, self.options.lease_s / 3)
        refill = self.capacity.free_in(provider)
        if refill is not None:
            pause = min(pause, refill)
        await self.capacity.wait_for_change(pause, self.sleep)
        await work.refresh()
        await work.renew_if_due()

    async def _start_attempt(self, work: JobWork) -> None:
        attempt_id = f"att_{secrets.token_hex(8)}"
        route = await self._claim_route(work, attempt_id)
        if route is None:
            return  # cancelled while waiting for capacity: the next step cancels
        if isinstance(route, JobError):
            last = work.job.attempts[-1].error if work.job.attempts else None
            # Out of routes after failures: the last failure says more than "no route".
            use_last = last is not None and route.code is ErrorCode.NO_FEASIBLE_ROUTE
            await self._end(work, JobStatus.FAILED, last if use_last and last is not None else route)
            return
        estimate = self._estimate(route, work.job.request)
        if not await self._budget_covers(work, route, attempt_id, estimate):
            return
        attempt = Attempt(
            id=attempt_id,
            job_id=work.job.id,
            provider=route.provider,
            model=route.model,
            status=AttemptStatus.SUBMITTING,
            started_at=work.now(),
            estimated_cost_usd=None if estimate is None else str(estimate),
        )

        def begin(record: JobRecord) -> JobRecord:
            changed = with_attempt(record, attempt, work.now()).evolve(
                status=JobStatus.RUNNING,
                route=RouteRef(
                    provider=route.provider, model=route.model, estimated_cost_usd=attempt.estimated_cost_usd
                ),
            )
            # A save applied again after a lost store reply must not list the route twice.
            tried = (
                record.tried_routes if route.key in record.tried_routes else [*record.tried_routes, route.key]
            )
            return changed.model_copy(update={"tried_routes": tried})

        await work.save(begin)
        log.info("attempt_started", provider=route.provider, model=route.model, attempt=attempt.id)
        await self._submit(work, attempt)

    async def _budget_covers(
        self, work: JobWork, route: RouteSpec, attempt_id: str, estimate: Money | None
    ) -> bool:
        """Reserve what this attempt may cost beyond what the job already holds (a fallback to a pricier
        route); when the team's budget cannot take it, end the job rather than overspend."""
        held = Money.parse(work.record.reserved_usd) if work.record.reserved_usd else None
        if self._reserve_more is None or estimate is None or held is None:
            return True
        need = Money.parse(work.job.cost_usd) + estimate - held
        if need.micros <= 0:
            return True
        if await self._reserve_more(work.record, need):
            await work.save(lambda r: r.model_copy(update={"reserved_usd": str(held + need)}))
            return True
        self.capacity.release(attempt_id)
        self.health.abandoned(route.provider)
        message = f"falling back to {route.key} needs {need} USD more than the team's budget has left"
        await self._end(work, JobStatus.FAILED, JobError(code=ErrorCode.BUDGET_EXCEEDED, message=message))
        return False

    async def _submit(self, work: JobWork, attempt: Attempt) -> None:
        adapter = self.adapters.get(attempt.provider)
        if adapter is None:
            error = ProviderUnavailable(
                f"provider {attempt.provider} is not configured", provider=attempt.provider
            )
            await self._fail_attempt(work, attempt, error, Money.zero())
            return
        try:
            image = await self._image(work.job.request, adapter)
        except BrokerError as exc:
            await self._fail_attempt(work, attempt, exc, Money.zero(), fallback=False)
            return
        base = self.options.public_url
        task = RenderTask(
            attempt_id=attempt.id,
            model=attempt.model,
            request=work.job.request,
            image=image,
            webhook_url=f"{base.rstrip('/')}/v1/callbacks/{attempt.provider}" if base else None,
        )
        self.capacity.hold(attempt.provider, attempt.id, work.job.id)
        try:
            submission = await adapter.submit(task)
        except ProviderError as exc:
            # Nothing was accepted, so nothing was charged (an uncertain submit is failed, not paid twice).
            await self._fail_attempt(work, attempt, exc, Money.zero())
            return
        handle = submission.handle
        submitted = attempt.model_copy(
            update={"status": AttemptStatus.SUBMITTED, "provider_job_id": handle.provider_job_id}
        )

        def record_submit(record: JobRecord) -> JobRecord:
            stored = AttemptHandle(
                provider_job_id=handle.provider_job_id, model=handle.model, data=dict(handle.data)
            )
            changed = with_attempt(record, submitted, work.now())
            return changed.model_copy(update={"handles": {**record.handles, attempt.id: stored}})

        await work.save(record_submit)
        log.info("attempt_submitted", provider=attempt.provider, provider_job_id=handle.provider_job_id)

    async def _resolve_uncertain(self, work: JobWork, attempt: Attempt) -> None:
        adapter = self.adapters.get(attempt.provider)
        if adapter is not None and getattr(adapter, "idempotent_submit", False):
            await self._submit(work, attempt)  # same attempt id, so the same idempotency key
            return
        error = SubmissionUncertain(
            "the broker stopped while submitting; the provider may have the task, so it is not resent",
            provider=attempt.provider,
        )
        await self._fail_attempt(work, attempt, error, Money.zero())

    async def _image(self, request: JobRequest, adapter: Adapter) -> ImageInput | None:
        if request.image_upload is not None:
            data = self.artifacts.read_upload(request.image_upload)
            return ImageInput(content_type=check_image(data).content_type, data=data)
        if request.image_url is None:
            return None
        if request.image_url.startswith("data:"):
            content_type, data = decode_data_uri(request.image_url)
            return ImageInput(content_type=content_type, data=data)
        if adapter.image_acceptance.url:
            # The provider fetches it, but on the broker's say-so: the same rule as a fetch of our own.
            try:
                await self.options.outbound.check(request.image_url)
            except OutboundRefused as exc:
                raise ImageFetchFailed(f"image URL {exc}") from None
            return ImageInput(content_type="image/*", url=request.image_url)
        return await fetch_image(request.image_url, FetchPolicy(outbound=self.options.outbound))

    # Polling and finishing ----------------------------------------------------------------------
    async def _poll(self, work: JobWork, attempt: Attempt) -> None:
        adapter = self.adapters.get(attempt.provider)
        stored = work.record.handles.get(attempt.id)
        if adapter is None or stored is None:
            error = ProviderUnavailable(
                f"cannot poll {attempt.provider}: not configured", provider=attempt.provider
            )
            await self._fail_attempt(work, attempt, error, Money.zero())
            return
        self.capacity.hold(attempt.provider, attempt.id, work.job.id, new_submit=False)
        handle = TaskHandle(stored.provider_job_id, stored.model, stored.data)
        wake = self._webhooks.setdefault(handle.provider_job_id, asyncio.Event())

        async def sleep_or_webhook(seconds: float) -> None:
            # Waits in slices shorter than the lease, renewing it, so a long wait between polls never
            # lets the lease lapse while this worker still holds the job.
            remaining = seconds
            while remaining > 0 and not wake.is_set():
                piece = min(remaining, self.options.lease_s / 3)
                sleeper = asyncio.ensure_future(self.sleep(piece))
                waiter = asyncio.ensure_future(wake.wait())
                try:
                    await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for pending in (sleeper, waiter):
                        pending.cancel()
                remaining -= piece
                await work.renew_if_due()
            wake.clear()

        async def on_status(status: TaskStatus) -> None:
            if (await work.refresh()).cancel_requested:
                raise CancelRequested
            if status.state is TaskState.RUNNING and work.active_attempt() == attempt:
                running = attempt.model_copy(update={"status": AttemptStatus.RUNNING})
                await work.save(lambda r: with_attempt(r, running, work.now()))
            else:
                await work.renew_if_due()

        try:
            final = await poll_until_done(
                adapter,
                handle,
                clock=self.clock,
                sleep=sleep_or_webhook,
                submitted_at=attempt.started_at.timestamp(),
                on_status=on_status,
            )
        except CancelRequested:
            return  # the next step cancels
        except ProviderError as exc:  # timed out, or a poll error that cannot be waited out
            await self._fail_attempt(work, attempt, exc, Money.zero())
            return
        finally:
            self._webhooks.pop(handle.provider_job_id, None)
        await self._finish(work, work.active_attempt() or attempt, final)

    async def _finish(self, work: JobWork, attempt: Attempt, status: TaskStatus) -> None:
        route = self.routes.get(route_key(attempt))
        if status.state is TaskState.SUCCEEDED:
            await self._download(work, attempt, status)
            return
        cost = self._cost(route, status, attempt, succeeded=False)
        error = status.error or ProviderUnavailable(
            f"{attempt.provider} ended the task as {status.state.value}", provider=attempt.provider
        )
        await self._fail_attempt(work, attempt, error, cost, refunded=self._refund(route, status, attempt))

    async def _download(self, work: JobWork, attempt: Attempt, status: TaskStatus | None) -> None:
        adapter = self.adapters[attempt.provider]
        stored = work.record.handles[attempt.id]
        if attempt.status is not AttemptStatus.DOWNLOADING:
            attempt = attempt.model_copy(update={"status": AttemptStatus.DOWNLOADING})
            downloading = attempt
            await work.save(lambda r: with_attempt(r, downloading, work.now()))
        if status is None:  # resumed after a restart: ask again where the output is
            status = await adapter.status(TaskHandle(stored.provider_job_id, stored.model, stored.data))
        partial = self.artifacts.partial_path(attempt.id)
        try:
            await adapter.fetch_output(status, partial)
            info = await asyncio.to_thread(self.artifacts.commit_output, partial, work.job.id)
        except BrokerError as exc:
            cost = self._cost(self.routes.get(route_key(attempt)), status, attempt, succeeded=True)
            await self._fail_attempt(work, attempt, exc, cost, fallback=True)
            return
        route = self.routes.get(route_key(attempt))
        cost = self._cost(route, status, attempt, succeeded=True)
        done = finish_attempt(attempt, AttemptStatus.SUCCEEDED, work.now(), cost)
        self.capacity.release(attempt.id)
        elapsed = self.clock() - attempt.started_at.timestamp()
        self.health.succeeded(attempt.provider, route_key(attempt), elapsed)
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
        await self.store.settle_budget(work.job.id, Money.parse(work.job.cost_usd).micros)
        log.info("job_succeeded", provider=attempt.provider, model=attempt.model, cost_usd=work.job.cost_usd)

    # Failing, cancelling, ending ----------------------------------------------------------------
    async def _fail_attempt(
        self,
        work: JobWork,
        attempt: Attempt,
        exc: BrokerError,
        cost: Money,
        *,
        fallback: bool | None = None,
        refunded: Money | None = None,
    ) -> None:
        error = JobError(code=exc.code, message=self._scrub(exc.message))
        failed = finish_attempt(attempt, AttemptStatus.FAILED, work.now(), cost, error, refunded)
        can_fall_back = getattr(exc, "fallback", False) if fallback is None else fallback
        self.capacity.release(attempt.id)
        self.health.failed(attempt.provider, exc)
        log.warning("attempt_failed", provider=attempt.provider, code=exc.code.value, error=exc.message)
        if can_fall_back and len(work.job.attempts) < await self._limit(work.record):
            await work.save(lambda r: with_attempt(r, failed, work.now()))
            return
        await work.save(
            lambda r: end_job(with_attempt(r, failed, work.now()), JobStatus.FAILED, work.now(), error),
            release=True,
        )
        await self.store.settle_budget(work.job.id, Money.parse(work.job.cost_usd).micros)

    async def _cancel(self, work: JobWork, attempt: Attempt | None) -> None:
        cost, refunded = Money.zero(), None
        if attempt is not None and (stored := work.record.handles.get(attempt.id)) is not None:
            adapter = self.adapters.get(attempt.provider)
            if adapter is not None:
                handle = TaskHandle(stored.provider_job_id, stored.model, stored.data)
                try:
                    await adapter.cancel(handle)
                    after = await adapter.status(handle)
                    route = self.routes.get(route_key(attempt))
                    cost = self._cost(route, after, attempt, succeeded=False)
                    refunded = self._refund(route, after, attempt)
                except ProviderError as exc:
                    log.warning("provider_cancel_failed", code=exc.code.value, error=exc.message)

        if attempt is not None:
            self.capacity.release(attempt.id)
            self.health.abandoned(attempt.provider)

        def cancel(record: JobRecord) -> JobRecord:
            if attempt is not None:
                ended = finish_attempt(attempt, AttemptStatus.CANCELLED, work.now(), cost, refunded=refunded)
                record = with_attempt(record, ended, work.now())
            return end_job(record, JobStatus.CANCELLED, work.now())

        await work.save(cancel, release=True)
        await self.store.settle_budget(work.job.id, Money.parse(work.job.cost_usd).micros)
        log.info("job_cancelled", cost_usd=work.job.cost_usd)

    async def _end(self, work: JobWork, status: JobStatus, error: JobError) -> None:
        await work.save(lambda r: end_job(r, status, work.now(), error), release=True)
        await self.store.settle_budget(work.job.id, Money.parse(work.job.cost_usd).micros)
        log.warning("job_failed", code=error.code.value, error=error.message)

    # Money --------------------------------------------------------------------------------------
    @staticmethod
    def _estimate(route: RouteSpec, request: JobRequest) -> Money | None:
        if route.price is None:
            return None
        try:
            return route.price.usd(request.duration_s, request.resolution, request.audio)
        except UnknownPrice:
            return None

    @staticmethod
    def _refund(route: RouteSpec | None, status: TaskStatus, attempt: Attempt) -> Money | None:
        """What the provider gave back (its reported charge, else the estimate); None without a refund."""
        if not status.refunded:
            return None
        if status.reported_cost is not None and route is not None and route.price is not None:
            with contextlib.suppress(UnknownPrice):
                refunded = route.price.reported_to_money(status.reported_cost)
                if refunded.micros > 0:
                    return refunded
        return Money.parse(attempt.estimated_cost_usd) if attempt.estimated_cost_usd else Money.zero()

    @staticmethod
    def _cost(route: RouteSpec | None, status: TaskStatus, attempt: Attempt, *, succeeded: bool) -> Money:
        """What the attempt really cost: the provider's report if it can be converted, else the estimate
        for a delivered video and nothing for a failed one (failed renders are refunded or unbilled)."""
        if status.refunded:
            return Money.zero()
        if status.reported_cost is not None and route is not None and route.price is not None:
            try:
                return route.price.reported_to_money(status.reported_cost)
            except UnknownPrice:
                pass
        if succeeded and attempt.estimated_cost_usd is not None:
            return Money.parse(attempt.estimated_cost_usd)
        return Money.zero()
