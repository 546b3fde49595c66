"""`GET /metrics`: the Prometheus text format, with the store-backed gauges read at scrape time."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from broker.api.provider_status import refresh_provider_gauges
from broker.appkeys import CLOCK, DEPLOYMENT, STORE
from broker.jobs import budgets
from broker.jobs.routing import current_policy
from broker.observability.metrics import METRICS, usd_float
from broker.observability.wiring import LOOP_LAG
from broker.schema import JobStatus
from pricing.money import Money

routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    await refresh_gauges(request.app)
    await refresh_provider_gauges(request.app)
    request.app[METRICS].loop_lag_max.set(request.app[LOOP_LAG].take_max())
    response = web.Response(body=request.app[METRICS].render())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def _window_kind(key: str) -> str:
    """ "growth:day:2026-11-21" -> "day": the date itself would make the label unbounded."""
    parts = key.split(":")
    return parts[1] if len(parts) == 3 and parts[1] in ("day", "month") else "other"


async def refresh_gauges(app: web.Application) -> None:
    """Read the present from the store: jobs by status, the queue, and each team's budget left."""
    metrics, store, config = app[METRICS], app[STORE], app[DEPLOYMENT].config
    for status in JobStatus:
        count = await store.count_jobs(status)
        metrics.jobs.labels(status.value).set(count)
        if status is JobStatus.RUNNING:
            metrics.in_flight.set(count)
        elif status is JobStatus.QUEUED:
            metrics.queue_depth.set(count)
    now = datetime.fromtimestamp(app[CLOCK](), UTC)
    remaining: dict[tuple[str, str], Money] = {}
    limits: dict[tuple[str, str], Money] = {}
    for team in config.teams:
        windows = budgets.budget_windows(team.name, await current_policy(config, store, team.name), now)
        usage = await store.budget_usage([w.key for w in windows])
        for window in windows:
            spent, reserved = usage.get(window.key, (0, 0))
            remaining[team.name, _window_kind(window.key)] = Money(window.limit_micros - spent - reserved)
            limits[team.name, _window_kind(window.key)] = Money(window.limit_micros)
    # Replaced whole, with no await in between, so a concurrent scrape never sees half the series, and
    # a team or budget dropped by a config reload leaves no stale one.
    metrics.budget_remaining.clear()
    metrics.budget_limit.clear()
    for (team_name, kind), left in remaining.items():
        metrics.budget_remaining.labels(team_name, kind).set(usd_float(left))
        metrics.budget_limit.labels(team_name, kind).set(usd_float(limits[team_name, kind]))
