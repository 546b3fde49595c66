"""Each provider's health as this replica sees it: circuit state, capacity in use, its queue (jobs
waiting and slots in use per team), call latency and error rate, for `GET /v1/providers`, the dashboard
and the Prometheus gauges.

Circuit state, capacity and queues come from the runner (the same state routing consults: shared by
every replica with a Redis store); latency and errors from the metrics this process has counted since
it started.
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
class TeamQueue:
    """One team at one provider: its jobs waiting for a slot and the slots its attempts hold."""

    team: str
    waiting: int
    in_use: int
    share: float | None  # of the provider's slots in use (every team's); None while none is in use


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
    waiting: int = 0  # jobs in its queue, every team's
    teams: tuple[TeamQueue, ...] = ()  # the teams with jobs waiting or slots in use, by name

    @property
    def error_rate(self) -> float | None:
        return self.failed_requests / self.requests if self.requests else None

    def to_json(self, team: str | None = None) -> dict[str, Any]:
        """The status as JSON; with `team`, only that team's queue row (the totals stay)."""
        body = {**asdict(self), "error_rate": self.error_rate}
        if team is not None:
            body["teams"] = [row for row in body["teams"] if row["team"] == team]
        return body


def team_queues(waiting: dict[str, int], in_use: dict[str, int]) -> tuple[TeamQueue, ...]:
    """Each team's row at one provider, its share counted against every team's slots in use."""
    total = sum(in_use.values())
    return tuple(
        TeamQueue(
            team=team,
            waiting=waiting.get(team, 0),
            in_use=in_use.get(team, 0),
            share=in_use.get(team, 0) / total if total else None,
        )
        for team in sorted({*waiting, *in_use})
        if waiting.get(team, 0) or in_use.get(team, 0)
    )


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
    depths, in_use = await runner.slots.depths(), await runner.slots.in_use()
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
                waiting=sum(depths.get(name, {}).values()),
                teams=team_queues(depths.get(name, {}), in_use.get(name, {})),
            )
        )
    return statuses


async def refresh_provider_gauges(app: web.Application) -> None:
    """Set the per-provider gauges and `broker_runner_up` from the runner's state."""
    metrics, config = app[METRICS], app[DEPLOYMENT].config
    statuses = await provider_statuses(app)
    for status in statuses:
        metrics.circuit_open.labels(status.provider).set(0 if status.circuit == "closed" else 1)
        metrics.provider_in_flight.labels(status.provider).set(status.in_flight)
        if status.max_concurrency is not None:
            metrics.provider_max_concurrency.labels(status.provider).set(status.max_concurrency)
    # Replaced whole, with no await in between: a drained queue reads 0 for every configured team of a
    # limited provider (a steady series), and a team or provider a config reload dropped goes away.
    metrics.provider_queue_depth.clear()
    metrics.provider_slots_in_use.clear()
    teams = [team.name for team in config.teams]
    for status in statuses:
        limits = config.providers[status.provider]
        queues = limits.max_concurrency is not None or limits.requests_per_minute is not None
        for row in [TeamQueue(team, 0, 0, None) for team in teams] + list(status.teams):
            if queues:
                metrics.provider_queue_depth.labels(status.provider, row.team).set(row.waiting)
            if limits.max_concurrency is not None:
                metrics.provider_slots_in_use.labels(status.provider, row.team).set(row.in_use)
    metrics.runner_up.set(1 if app[RUNNER].running else 0)
