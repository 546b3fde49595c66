"""The submit step: pick the cheapest untried route, take a capacity slot, reserve any extra budget,
and hand the render to the provider.

The attempt is written as `submitting` (its `SubmitState` marked `sending`) right before the submit
goes out, in a fenced write that also renews the lease, and as `submitted` (with the task's handle,
due at its first poll) after, so a crash in between is seen as uncertain.

Waits that are due times, never sleeps in a step:
  * a submit the provider refused for now (429 with its `Retry-After`, a 5xx): the attempt stays
    `submitting`, not sending, and the job is parked until the adapter's `submit_retry` policy says;
    the next step sends the same attempt again (same request, same idempotency key). When the policy
    gives up, the attempt fails and the router falls back;
  * the chosen provider at capacity (or at its rate limit): the job takes a place in the provider's
    queue and is parked with no timer of its own; the slot freed for it wakes it (`queues.py`);
  * the chosen provider's circuit open: parked for `capacity_check_s`.
An uncertain submit (its answer was lost, or a runner stopped mid-send) is sent again only where the
provider takes an idempotency key; anywhere else it is booked at the route's estimate as
`unconfirmed_usd` (the provider may have the task and charge it; never $0) and fails with
`submission_uncertain`, listed by the reconciliation report. Never paid twice.
"""

from __future__ import annotations

import secrets
import time

import structlog

from adapters.base import Adapter, ImageInput, RenderTask
from adapters.errors import ProviderError, ProviderUnavailable, SubmissionUncertain
from adapters.images import FetchPolicy, ImageFetchFailed, check_image, fetch_image
from adapters.outbound import OutboundRefused
from adapters.spec import Webhooks
from broker.jobs.booking import Booking
from broker.jobs.context import StepContext
from broker.jobs.ending import fail_attempt, fail_job
from broker.jobs.hosted_inputs import hosted_image
from broker.jobs.queues import record_seat
from broker.jobs.work import JobWork, with_attempt
from broker.schema import (
    Attempt,
    AttemptStatus,
    BrokerError,
    ErrorCode,
    JobError,
    JobRequest,
    JobStatus,
    RouteRef,
    decode_data_uri,
)
from broker.store import JobRecord
from broker.store.base import AttemptHandle, PollState, SubmitState
from pricing.catalog import RouteSpec
from pricing.money import Money
from pricing.quote import Quote, bounded_cost

log = structlog.get_logger("broker.jobs")
LOST_ANSWER_RESEND_MAX_S = 60.0  # the longest wait between resends of a submit whose answers were lost
QUEUED_RECHECK_S = 900.0  # a queued job with no latency limit looks again at worst this often
LATENCY_RECHECK_S = 30.0  # one with a limit, to move if its queue's prediction stops fitting


class WaitForCapacity(Exception):
    """The chosen route's provider has no slot for the job now: it waits (parked), in the provider's
    queue when `queued`, else (an open circuit) for `wait_s`."""

    def __init__(self, provider: str, wait_s: float, *, queued: bool) -> None:
        super().__init__(provider)
        self.provider, self.wait_s, self.queued = provider, wait_s, queued


async def start_attempt(ctx: StepContext, work: JobWork) -> None:
    """Choose a route and submit to it; or park the job until a slot frees; or end it."""
    attempt_id = f"att_{secrets.token_hex(8)}"
    try:
        route = await _claim_route(ctx, work, attempt_id)
    except WaitForCapacity as wait:
        await _wait_for_slot(ctx, work, wait)
        return
    if isinstance(route, JobError):
        last = work.job.attempts[-1].error if work.job.attempts else None
        # Out of routes after failures: the last failure says more than "no route".
        use_last = last is not None and route.code is ErrorCode.NO_FEASIBLE_ROUTE
        await fail_job(ctx, work, last if use_last and last is not None else route)
        return
    price, unpriced = bounded_cost(route, work.job.request, unpriced_ceiling(work.record))
    if not await _budget_covers(ctx, work, route, attempt_id, price):
        return
    attempt = Attempt(
        id=attempt_id,
        job_id=work.job.id,
        provider=route.provider,
        model=route.model,
        status=AttemptStatus.SUBMITTING,
        started_at=work.now(),
        estimated_cost_usd=price,
        unpriced=unpriced,
    )

    state = SubmitState(since=ctx.clock(), sending=False)

    def begin(record: JobRecord) -> JobRecord:
        ref = RouteRef(
            provider=route.provider, model=route.model, estimated_cost_usd=attempt.estimated_cost_usd
        )
        changed = with_attempt(record, attempt, work.now()).evolve(status=JobStatus.RUNNING, route=ref)
        # A save applied again after a lost store reply must not list the route twice.
        tried = record.tried_routes if route.key in record.tried_routes else [*record.tried_routes, route.key]
        update = {"tried_routes": tried, "poll": None, "submit": state, "queued": None, "queued_since": None}
        return changed.model_copy(update=update)

    await work.save(begin)
    log.info("attempt_started", provider=route.provider, model=route.model, attempt=attempt.id)
    await submit(ctx, work, attempt)


async def _claim_route(ctx: StepContext, work: JobWork, attempt_id: str) -> RouteSpec | JobError:
    """The cheapest feasible untried route, with a capacity slot taken for `attempt_id`."""
    if len(work.job.attempts) >= await ctx.attempt_limit(work.record):
        return JobError(code=ErrorCode.NO_FEASIBLE_ROUTE, message="every allowed attempt failed")
    quote = await ctx.quote(work.record, work.record.tried_routes)
    if quote.chosen is None:
        # Every route left waits on an open circuit: an accepted job waits for it to close (bounded by
        # its max_latency_s, below), as for a free slot, rather than failing for a passing outage.
        quote = await ctx.quote(work.record, work.record.tried_routes, patient=True)
    if quote.chosen is None:
        return JobError(code=ErrorCode.NO_FEASIBLE_ROUTE, message="no untried route can serve the job")
    route = quote.chosen.route
    health, slots, seat = ctx.provider_health, ctx.provider_slots, record_seat(work.record)
    if work.record.queued is not None and work.record.queued != route.provider:
        # The job moves to a route whose queue fits it better: its old place (and grant) goes on.
        await slots.leave(work.record.queued, seat)
        await work.save(lambda r: r.model_copy(update={"queued": None}))
    # A half-open circuit's probe may have gone to another step since the quote: admitting is checked
    # again here (atomically, in the shared state across replicas), so at most one probe goes out.
    if not await health.admit(route.provider):
        if (expired := _capacity_deadline_passed(ctx, work, quote)) is not None:
            return expired
        raise WaitForCapacity(route.provider, ctx.options.capacity_check_s, queued=False)
    if await slots.try_acquire(route.provider, attempt_id, seat, ctx.slot_ttl(route.provider)):
        return route
    await health.report_abandoned(route.provider)
    if (expired := _capacity_deadline_passed(ctx, work, quote)) is not None:
        await slots.leave(route.provider, seat)
        return expired
    park_s = _queued_park_s(ctx, work, quote)
    if (refill := await slots.free_in(route.provider)) is not None:
        park_s = min(park_s, max(refill, 0.5))
    raise WaitForCapacity(route.provider, park_s, queued=True)


async def _wait_for_slot(ctx: StepContext, work: JobWork, wait: WaitForCapacity) -> None:
    """Park the job: in the provider's queue it waits for a grant (which wakes it), else for `wait_s`.
    A grant made while this step still held the job could not wake it, so it is looked for after."""
    log.info("waiting_for_capacity", provider=wait.provider, queued=wait.queued)
    if not wait.queued:
        await work.park(wait.wait_s)
        return

    def take_place(record: JobRecord) -> JobRecord:
        since = record.queued_since if record.queued_since is not None else work.clock()
        return record.model_copy(update={"queued": wait.provider, "queued_since": since})

    await work.park(wait.wait_s, take_place)
    if await ctx.provider_slots.granted(wait.provider, work.job.id):
        await ctx.wake_jobs([work.job.id])


def _queued_park_s(ctx: StepContext, work: JobWork, quote: Quote) -> float:
    """How long a queued job sleeps without a grant: until its rate window refills where that blocks,
    a short look again where a latency limit may make it move, else a long safety net (a grant wakes
    it long before)."""
    max_latency = quote.constraints.max_latency_s if quote.constraints is not None else None
    if max_latency is None:
        return QUEUED_RECHECK_S
    left = work.job.created_at.timestamp() + max_latency - ctx.clock()
    return max(1.0, min(LATENCY_RECHECK_S, left))


def unpriced_ceiling(record: JobRecord) -> Money | None:
    """The accepted policy's `allow_unpriced_max_usd`: what an unpriced route may reserve and book."""
    ceiling = (record.policy or {}).get("allow_unpriced_max_usd")
    return None if ceiling is None else Money.parse(str(ceiling))


def _capacity_deadline_passed(ctx: StepContext, work: JobWork, quote: Quote) -> JobError | None:
    """The job's error once waiting for capacity has used up its `max_latency_s`."""
    max_latency = quote.constraints.max_latency_s if quote.constraints is not None else None
    if max_latency is None or work.job.created_at.timestamp() + max_latency > ctx.clock():
        return None
    message = f"every feasible provider stayed at capacity past max_latency_s ({max_latency} s)"
    return JobError(code=ErrorCode.TIMED_OUT, message=message)


async def _budget_covers(
    ctx: StepContext, work: JobWork, route: RouteSpec, attempt_id: str, price: Money | None
) -> bool:
    """Reserve what this attempt may cost beyond what the job already holds (a fallback to a pricier
    route); when the team's budget cannot take it, end the job rather than overspend."""
    held = work.record.reserved_usd
    if ctx.reserve_more is None or price is None or held is None:
        return True
    need = work.job.cost_usd + price - held
    if need.micros <= 0:
        return True
    if await ctx.reserve_more(work.record, need):
        await work.save(lambda r: r.model_copy(update={"reserved_usd": held + need}))
        return True
    await ctx.provider_slots.release(route.provider, attempt_id)
    await ctx.provider_health.report_abandoned(route.provider)
    message = f"falling back to {route.key} needs {need} USD more than the team's budget has left"
    await fail_job(ctx, work, JobError(code=ErrorCode.BUDGET_EXCEEDED, message=message))
    return False


async def submit(ctx: StepContext, work: JobWork, attempt: Attempt) -> None:
    """Send the attempt's render; on success the job is parked until its first poll."""
    adapter = ctx.adapters.get(attempt.provider)
    if adapter is None:
        error = ProviderUnavailable(
            f"provider {attempt.provider} is not configured", provider=attempt.provider
        )
        await fail_attempt(ctx, work, attempt, error, Money.zero())
        return
    try:
        image = await work.keep_lease(lambda: _provider_image(ctx, work.job.id, work.job.request, adapter))
    except BrokerError as exc:
        await fail_attempt(ctx, work, attempt, exc, Money.zero(), fallback=False)
        return
    base, hooks = ctx.options.public_url, adapter.spec.webhooks is not Webhooks.NONE
    task = RenderTask(
        attempt_id=attempt.id,
        model=attempt.model,
        request=work.job.request,
        image=image,
        # Only a provider that sends webhooks is given the callback URL; the others are polled.
        webhook_url=f"{base.rstrip('/')}/v1/callbacks/{attempt.provider}" if base and hooks else None,
    )
    state = work.record.submit or SubmitState(since=ctx.clock())
    # The fence: this write lands only while the step holds the job, and renews the lease, so the
    # request below (bounded by the provider's timeout, well under a lease) never goes out after it.
    await work.save(lambda r: r.model_copy(update={"submit": state.model_copy(update={"sending": True})}))
    try:
        submission = await work.keep_lease(lambda: adapter.submit(task), stop_in_outage=False)
    except SubmissionUncertain as exc:
        await _uncertain(ctx, work, attempt, exc)
        return
    except ProviderError as exc:
        await _refused(ctx, work, attempt, exc, state)
        return
    handle = submission.handle
    submitted = attempt.model_copy(
        update={"status": AttemptStatus.SUBMITTED, "provider_job_id": handle.provider_job_id}
    )
    # Where the provider gives no estimate, the first poll is timed from the route's expected latency
    # instead of polling a long render from its first seconds.
    expected = submission.estimated_seconds or ctx.expected_latency_s(attempt.provider, attempt.model)
    delay = adapter.spec.poll_schedule.first_delay(expected)

    def record_submit(record: JobRecord) -> JobRecord:
        stored = AttemptHandle(
            provider_job_id=handle.provider_job_id, model=handle.model, data=dict(handle.data)
        )
        changed = with_attempt(record, submitted, work.now())
        return changed.model_copy(
            update={
                "handles": {**record.handles, attempt.id: stored},
                "poll": PollState(delay_s=delay),
                "submit": None,
            }
        )

    await work.park(delay, record_submit)
    await ctx.store.index_task(attempt.provider, handle.provider_job_id, work.job.id)
    log.info("attempt_submitted", provider=attempt.provider, provider_job_id=handle.provider_job_id)


async def _refused(
    ctx: StepContext, work: JobWork, attempt: Attempt, exc: ProviderError, state: SubmitState
) -> None:
    """The provider answered and created nothing this time: send again when its policy says; else fail
    the attempt and let the router fall back — at nothing charged, unless an earlier send's answer was
    lost (then the provider may hold the task: booked as uncertain)."""
    tries = state.tries + 1
    adapter = ctx.adapters[attempt.provider]
    elapsed = ctx.clock() - state.since
    delay = adapter.spec.submit_retry.delay_before_next(tries, exc, elapsed)
    lost = state.answer_lost or isinstance(exc, SubmissionUncertain)
    if (
        delay is None
        and lost
        and adapter.spec.idempotent_submit
        and elapsed < adapter.spec.poll_schedule.deadline_s
    ):
        # The provider may hold the task, and its key finds it again without making a second one: keep
        # asking (as a due time) until it answers with the task, within the task's own deadline.
        delay = min(LOST_ANSWER_RESEND_MAX_S, 2.0**tries)
    if delay is None:
        if lost:
            await _book_uncertain(ctx, work, attempt, exc)
            return
        await fail_attempt(ctx, work, attempt, exc, Money.zero())
        return
    log.info(
        "submit_refused_retrying", provider=attempt.provider, code=exc.code.value, tries=tries, in_s=delay
    )
    retry = state.model_copy(update={"tries": tries, "sending": False, "answer_lost": lost})
    await work.park(delay, lambda r: r.model_copy(update={"submit": retry}))


async def _uncertain(ctx: StepContext, work: JobWork, attempt: Attempt, exc: SubmissionUncertain) -> None:
    """The submit may have reached the provider: send again where that is safe (the same key finds the
    same task), else — or once the retries are spent — book it."""
    if ctx.adapters[attempt.provider].spec.idempotent_submit:
        state = work.record.submit or SubmitState(since=ctx.clock())
        await _refused(ctx, work, attempt, exc, state.model_copy(update={"answer_lost": True}))
        return
    await _book_uncertain(ctx, work, attempt, exc)


async def _book_uncertain(ctx: StepContext, work: JobWork, attempt: Attempt, exc: ProviderError) -> None:
    """The provider may have the task and charge it: booked at the estimate until it says otherwise."""
    spent = attempt.estimated_cost_usd or Money.zero()
    error = (
        exc
        if isinstance(exc, SubmissionUncertain)
        else SubmissionUncertain(
            f"{exc.message}; an earlier send's answer was lost, so the provider may hold the task",
            provider=attempt.provider,
        )
    )
    await fail_attempt(ctx, work, attempt, error, spent, booking=Booking(spent, unconfirmed=True))


async def resume_submit(ctx: StepContext, work: JobWork, attempt: Attempt) -> None:
    """An attempt found `submitting`: a refused submit due again, or one a stopped runner left."""
    slot_ttl = ctx.slot_ttl(attempt.provider)
    await ctx.provider_slots.hold(attempt.provider, attempt.id, record_seat(work.record), slot_ttl)
    state = work.record.submit
    adapter = ctx.adapters.get(attempt.provider)
    if state is not None and not state.sending:
        await submit(ctx, work, attempt)  # nothing went out, or the provider refused it: send again
        return
    if adapter is not None and adapter.spec.idempotent_submit:
        await submit(ctx, work, attempt)  # same attempt id, so the same idempotency key
        return
    error = SubmissionUncertain(
        "the broker stopped while sending this submit; the provider may have the task, so it is not"
        " resent, and it is booked at the route's estimate until the provider's charge is known",
        provider=attempt.provider,
    )
    await _uncertain(ctx, work, attempt, error)


async def _image(ctx: StepContext, request: JobRequest, adapter: Adapter) -> ImageInput | None:
    if request.image_upload is not None:
        data = await ctx.artifacts.read_upload(request.image_upload)
        return ImageInput(content_type=check_image(data).content_type, data=data)
    if request.image_url is None:
        return None
    if request.image_url.startswith("data:"):
        content_type, data = decode_data_uri(request.image_url)
        return ImageInput(content_type=content_type, data=data)
    if adapter.spec.image_acceptance.url:
        # The provider fetches it, but on the broker's say-so: the same rule as a fetch of our own.
        try:
            await ctx.options.outbound.check(request.image_url)
        except OutboundRefused as exc:
            raise ImageFetchFailed(f"image URL {exc}") from None
        return ImageInput(content_type="image/*", url=request.image_url)
    return await fetch_image(request.image_url, FetchPolicy(outbound=ctx.options.outbound))


async def _provider_image(
    ctx: StepContext, job_id: str, request: JobRequest, adapter: Adapter
) -> ImageInput | None:
    """The job's image in a form the provider takes: bytes it cannot take are served to it from a
    signed broker URL (`broker.jobs.hosted_inputs`), where hosting is on."""
    image = await _image(ctx, request, adapter)
    if image is None:
        return None
    return hosted_image(
        image,
        adapter.spec.image_acceptance,
        job_id=job_id,
        hosting=ctx.options.input_hosting,
        now=time.time(),  # the signature's expiry is wall-clock time, checked by the inputs handler
        deadline_s=adapter.spec.poll_schedule.deadline_s,
    )
