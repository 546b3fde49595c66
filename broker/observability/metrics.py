"""Prometheus metrics, on a registry owned by the app (no global registry).

Counters follow stored job changes (`MetricsObserver`, fed each change's before/after, so a cost is
counted once, when it is booked, and a queue wait when the job's slot lets it submit) and provider
calls (`provider_calls.py`). Gauges that describe
the present (queue depth, jobs in flight, budgets) are read from the store at scrape time (by
`broker/api/metrics.py`, the `/metrics` handler), so they are right for every replica sharing a
store and after a restart.

Label values are bounded: provider, model and team names come from the configuration, statuses and
error codes from enums, endpoints from path templates; never a job id or a prompt.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from broker.observability.loop_lag import LAG_BUCKETS
from broker.schema import Attempt, AttemptStatus
from broker.store import JobRecord
from pricing.money import MICROS_PER_USD, Money

# Renders take tens of seconds; status polls and submits well under one.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# A queued job waits from a render's length (a minute or two) to hours behind a batch.
QUEUE_WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)


class BrokerMetrics:
    """Every metric the broker exports, registered on one registry per app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.job_transitions = Counter(
            "broker_job_transitions", "Jobs entering a status", ["status", "provider", "model"], registry=r
        )
        self.spend = Counter(
            "broker_spend_usd", "USD booked for attempts", ["provider", "team", "model"], registry=r
        )
        self.provider_errors = Counter(
            "broker_provider_errors", "Failed attempts by error class", ["provider", "error"], registry=r
        )
        self.attempts_ended = Counter(
            "broker_attempts_ended",
            "Attempts that ended, by provider and outcome",
            ["provider", "status"],
            registry=r,
        )
        self.attempt_duration = Histogram(
            "broker_attempt_duration_seconds", "From an attempt's start to its end", ["provider"], registry=r
        )
        self.provider_requests = Counter(
            "broker_provider_requests",
            "HTTP requests to providers",
            ["provider", "endpoint", "status_class"],
            registry=r,
        )
        self.provider_latency = Histogram(
            "broker_provider_request_duration_seconds",
            "Time to a provider's answer (headers), by endpoint",
            ["provider", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.jobs = Gauge("broker_jobs", "Jobs in the store by status", ["status"], registry=r)
        self.in_flight = Gauge("broker_jobs_in_flight", "Jobs running now", registry=r)
        self.queue_depth = Gauge("broker_queue_depth", "Jobs queued, waiting for a worker", registry=r)
        self.budget_remaining = Gauge(
            "broker_budget_remaining_usd",
            "What a team may still spend in its current budget window",
            ["team", "window"],
            registry=r,
        )
        self.budget_limit = Gauge(
            "broker_budget_limit_usd",
            "A team's budget for its current window",
            ["team", "window"],
            registry=r,
        )
        # This replica's view (circuits and capacity slots are per replica), read at scrape time.
        self.circuit_open = Gauge(
            "broker_provider_circuit_open",
            "1 while a provider's circuit is open or half-open",
            ["provider"],
            registry=r,
        )
        self.provider_in_flight = Gauge(
            "broker_provider_in_flight", "Capacity slots a provider has taken", ["provider"], registry=r
        )
        self.provider_max_concurrency = Gauge(
            "broker_provider_max_concurrency",
            "A provider's configured max_concurrency",
            ["provider"],
            registry=r,
        )
        # Provider queues (broker.jobs.queues), from where the slots live: the same for every replica
        # sharing a Redis store.
        self.provider_queue_depth = Gauge(
            "broker_provider_queue_depth",
            "Jobs waiting in a provider's queue for a slot, by team (granted ones until they take it)",
            ["provider", "team"],
            registry=r,
        )
        self.provider_slots_in_use = Gauge(
            "broker_provider_slots_in_use",
            "Slots of a provider with max_concurrency that each team's attempts hold",
            ["provider", "team"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "broker_queue_wait_seconds",
            "From a job's first place in a provider queue to the submit its slot let it make",
            ["team"],
            buckets=QUEUE_WAIT_BUCKETS,
            registry=r,
        )
        self.runner_up = Gauge("broker_runner_up", "1 while this replica's job runner is running", registry=r)
        self.loop_lag = Histogram(
            "broker_event_loop_lag_seconds",
            "How late this replica's event loop ran a timer (work holding the loop delays every request)",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.loop_lag_max = Gauge(
            "broker_event_loop_lag_max_seconds", "The worst event-loop lag since the last scrape", registry=r
        )

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


METRICS = web.AppKey("metrics", BrokerMetrics)


def usd_float(money: Money) -> float:
    """Dollars as a float, for a Prometheus sample (the books stay in integer micro-USD)."""
    return money.micros / MICROS_PER_USD


def _route(record: JobRecord) -> tuple[str, str]:
    route = record.job.route
    return (route.provider, route.model) if route else ("none", "none")


class MetricsObserver:
    """Counts job transitions, booked spend and failed attempts from each stored change."""

    def __init__(self, metrics: BrokerMetrics) -> None:
        self.metrics = metrics

    def job_changed(self, before: JobRecord | None, after: JobRecord) -> None:
        """Count what changed between `before` and `after`, and nothing that was already counted."""
        if before is None or before.status is not after.status:
            self.metrics.job_transitions.labels(after.status.value, *_route(after)).inc()
        previous = {a.id: a for a in before.job.attempts} if before else {}
        for attempt in after.job.attempts:
            self._attempt_changed(previous.get(attempt.id), attempt, after.job.team)
        if before is not None and before.queued_since is not None and after.queued_since is None:
            started = after.job.attempts[-1] if after.job.attempts else None
            if started is not None and started.id not in previous:  # the write that began its attempt
                waited = started.started_at.timestamp() - before.queued_since
                self.metrics.queue_wait.labels(after.job.team).observe(max(0.0, waited))

    def _attempt_changed(self, before: Attempt | None, after: Attempt, team: str) -> None:
        booked = Money.zero() if before is None or before.cost_usd is None else before.cost_usd
        if after.cost_usd is not None:
            # A counter only grows: count a cost once, and only what it grew by if it is ever revised.
            added = after.cost_usd - booked
            if added.micros > 0:
                self.metrics.spend.labels(after.provider, team, after.model).inc(usd_float(added))
        if after.status.terminal and (before is None or not before.status.terminal):
            self.metrics.attempts_ended.labels(after.provider, after.status.value).inc()
            if after.finished_at is not None:
                took = (after.finished_at - after.started_at).total_seconds()
                self.metrics.attempt_duration.labels(after.provider).observe(max(0.0, took))
        failed = after.status is AttemptStatus.FAILED
        if failed and (before is None or before.status is not AttemptStatus.FAILED):
            code = after.error.code.value if after.error else "unknown"
            self.metrics.provider_errors.labels(after.provider, code).inc()
