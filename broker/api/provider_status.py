"""Each provider's health as this replica sees it: circuit state, capacity in use, call latency and
error rate, for `GET /v1/providers`, the dashboard and the Prometheus gauges.

Circuit state and capacity come from the runner (the same state routing consults: shared by every
replica with a Redis store); latency and errors from the metrics this process has counted since it
started.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

from broker.appkeys import ADAPTERS, DEPLOYMENT, RUNNER
from broker.observability.metrics import METRICS, BrokerMetrics

OK_CLASSES = ("2xx", "3xx")


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    provider: str
    routable: bool  # has an adapter (its key is set, or it needs none)
    circuit: str  # closed, open, half_open
    circuit_reason: str | None
    in_flight: int
    max_concurrency: int | None  # None: no limit of the broker's own
    # HTTP calls to the provider; for one reached without HTTP (the local backend, no base_url), its
    # renders: attempts ended, those that failed, and their mean time from start to end.
    requests: int
    failed_requests: int  # answers other than 2xx/3xx, and calls that got no answer
    mean_latency_s: float | None

    @property
    def error_rate(self) -> float | None:
        return self.failed_requests / self.requests if self.requests else None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "error_rate": self.error_rate}


@dataclass
class _Calls:
    requests: int = 0
    failed: int = 0
    latency_sum: float = 0.0
    latency_count: int = 0


def _calls_by_provider(metrics: BrokerMetrics) -> dict[str, _Calls]:
    calls: dict[str, _Calls] = defaultdict(_Calls)
    for family in metrics.provider_requests.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                entry = calls[sample.labels["provider"]]
                entry.requests += int(sample.value)
                if sample.labels["status_class"] not in OK_CLASSES:
                    entry.failed += int(sample.value)
    for family in metrics.provider_latency.collect():
        for sample in family.samples:
            entry = calls[sample.labels["provider"]]
            if sample.name.endswith("_sum"):
                entry.latency_sum += sample.value
            elif sample.name.endswith("_count"):
                entry.latency_count += int(sample.value)
    return calls


def _renders_by_provider(metrics: BrokerMetrics) -> dict[str, _Calls]:
    """Attempts ended per provider, as calls: for providers the broker reaches without HTTP."""
    renders: dict[str, _Calls] = defaultdict(_Calls)
    for family in metrics.attempts_ended.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                entry = renders[sample.labels["provider"]]
                entry.requests += int(sample.value)
                if sample.labels["status"] == "failed":
                    entry.failed += int(sample.value)
    for family in metrics.attempt_duration.collect():
        for sample in family.samples:
            entry = renders[sample.labels["provider"]]
            if sample.name.endswith("_sum"):
                entry.latency_sum += sample.value
            elif sample.name.endswith("_count"):
                entry.latency_count += int(sample.value)
    return renders


def _circuit(reason: str | None, local: str | None) -> str:
    if local is not None:
        return local
    if reason is None:
        return "closed"
    return "open" if reason.startswith("circuit open") else "half_open"


async def provider_statuses(app: web.Application) -> list[ProviderStatus]:
    """One status per configured provider, in configuration order."""
    runner, adapters = app[RUNNER], app[ADAPTERS]
    calls, renders = _calls_by_provider(app[METRICS]), _renders_by_provider(app[METRICS])
    blocked = await runner.health.unavailable_now()
    circuits = {} if runner.health.shared is not None else runner.health.states()
    statuses = []
    for name, config in app[DEPLOYMENT].config.providers.items():
        seen = calls.get(name, _Calls()) if config.base_url else renders.get(name, _Calls())
        statuses.append(
            ProviderStatus(
                provider=name,
                routable=name in adapters,
                circuit=_circuit(blocked.get(name), circuits[name].value if name in circuits else None),
                circuit_reason=blocked.get(name),
                in_flight=await runner.slots.in_flight(name),
                max_concurrency=config.max_concurrency,
                requests=seen.requests,
                failed_requests=seen.failed,
                mean_latency_s=seen.latency_sum / seen.latency_count if seen.latency_count else None,
            )
        )
    return statuses


async def refresh_provider_gauges(app: web.Application) -> None:
    """Set the per-provider gauges and `broker_runner_up` from the runner's state."""
    metrics = app[METRICS]
    for status in await provider_statuses(app):
        metrics.circuit_open.labels(status.provider).set(0 if status.circuit == "closed" else 1)
        metrics.provider_in_flight.labels(status.provider).set(status.in_flight)
        if status.max_concurrency is not None:
            metrics.provider_max_concurrency.labels(status.provider).set(status.max_concurrency)
    metrics.runner_up.set(1 if app[RUNNER].running else 0)
