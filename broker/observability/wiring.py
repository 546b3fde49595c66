"""Wiring metrics, transition logs and provider-call tracing onto the app."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from broker.appkeys import DEPLOYMENT, OBSERVERS
from broker.observability.joblog import TransitionLogger
from broker.observability.metrics import METRICS, BrokerMetrics, MetricsObserver
from broker.observability.provider_calls import ProviderResolver, provider_trace_config


def install(app: web.Application) -> aiohttp.TraceConfig:
    """Give the app its metrics and job observers; returns the trace config for its HTTP session."""
    metrics = BrokerMetrics()
    app[METRICS] = metrics
    app[OBSERVERS].extend([MetricsObserver(metrics), TransitionLogger()])
    return provider_trace_config(ProviderResolver(app[DEPLOYMENT].config.providers), metrics)
