"""Wiring metrics, transition logs and provider-call tracing onto the app."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from broker.appkeys import DEPLOYMENT, OBSERVERS
from broker.observability.joblog import TransitionLogger
from broker.observability.loop_lag import LoopLagMonitor
from broker.observability.metrics import METRICS, BrokerMetrics, MetricsObserver
from broker.observability.provider_calls import ProviderResolver, provider_trace_config

LOOP_LAG = web.AppKey("loop_lag", LoopLagMonitor)


def install(app: web.Application) -> aiohttp.TraceConfig:
    """Give the app its metrics and job observers; returns the trace config for its HTTP session."""
    metrics = BrokerMetrics()
    app[METRICS] = metrics
    app[OBSERVERS].extend([MetricsObserver(metrics), TransitionLogger()])
    monitor = LoopLagMonitor(metrics.loop_lag)
    app[LOOP_LAG] = monitor

    async def watch_the_loop(_: web.Application) -> AsyncIterator[None]:
        monitor.start()
        yield
        await monitor.stop()

    app.cleanup_ctx.append(watch_the_loop)
    return provider_trace_config(ProviderResolver(app[DEPLOYMENT].config.providers), metrics)
