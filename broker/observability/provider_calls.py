"""Every HTTP call to a provider, timed and logged, from an aiohttp `TraceConfig` on the shared session.

A request is a provider's when its URL falls under that provider's configured `base_url`; other
requests on the session (fetching a caller's image) are neither measured nor logged here. Metrics get
an endpoint label bounded by design: the method and a path template with ids replaced, and at most
`MAX_ENDPOINTS` distinct templates per provider. Logs get the real path, never the query string
(some providers take keys there).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace

import aiohttp
import structlog
from yarl import URL

from broker.config import ProviderConfig
from broker.observability.metrics import BrokerMetrics

log = structlog.get_logger("broker.observability.provider_calls")

MAX_ENDPOINTS = 50
MAX_SEGMENTS = 8
# A segment is an id if it is all digits, hex-and-dashes (UUIDs), or long and holds a digit.
_ID_SEGMENT = re.compile(r"^(\d+|[0-9a-fA-F-]{16,}|(?=[^/]*\d)[A-Za-z0-9_.~:-]{16,})$")


def path_template(path: str) -> str:
    """ "/v1/tasks/3f2c...-9a" -> "/v1/tasks/{id}"; at most `MAX_SEGMENTS` segments kept."""
    segments = [s for s in path.split("/") if s]
    shown = ["{id}" if _ID_SEGMENT.match(s) else s for s in segments[:MAX_SEGMENTS]]
    if len(segments) > MAX_SEGMENTS:
        shown.append("...")
    return "/" + "/".join(shown)


@dataclass(frozen=True, slots=True)
class _Base:
    provider: str
    scheme: str
    host: str
    port: int | None
    prefix: str


class ProviderResolver:
    """Which provider a URL belongs to (by `base_url`), and its bounded endpoint label."""

    def __init__(self, providers: Mapping[str, ProviderConfig]) -> None:
        bases = []
        for name, provider in providers.items():
            url = URL(provider.base_url)
            if url.host:
                bases.append(_Base(name, url.scheme, url.host.lower(), url.port, url.path.rstrip("/")))
        # The longest prefix wins when two providers share a host.
        self._bases = sorted(bases, key=lambda b: len(b.prefix), reverse=True)
        self._endpoints: dict[str, set[str]] = {}

    def provider_of(self, url: URL) -> str | None:
        """The provider whose base URL `url` is under, or None."""
        host = (url.host or "").lower()
        for base in self._bases:
            if (base.scheme, base.host, base.port) != (url.scheme, host, url.port):
                continue
            if url.path == base.prefix or url.path.startswith(base.prefix + "/"):
                return base.provider
        return None

    def endpoint(self, provider: str, method: str, url: URL) -> str:
        """ "GET /v1/tasks/{id}"; "other" once the provider has `MAX_ENDPOINTS` distinct ones."""
        label = f"{method.upper()} {path_template(url.path)}"
        seen = self._endpoints.setdefault(provider, set())
        if label not in seen:
            if len(seen) >= MAX_ENDPOINTS:
                return "other"
            seen.add(label)
        return label


class ProviderCallTracer:
    """Times, counts and logs each provider request; `trace_config()` hooks it onto a session."""

    def __init__(
        self,
        resolver: ProviderResolver,
        metrics: BrokerMetrics,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.resolver, self.metrics, self.clock = resolver, metrics, clock

    def trace_config(self) -> aiohttp.TraceConfig:
        """A `TraceConfig` for the `ClientSession` whose provider calls should be traced."""
        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(self._started)
        trace.on_request_end.append(self._ended)
        trace.on_request_exception.append(self._failed)
        return trace

    async def _started(
        self, session: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestStartParams
    ) -> None:
        ctx.provider = self.resolver.provider_of(params.url)
        ctx.started = self.clock()

    async def _ended(
        self, session: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestEndParams
    ) -> None:
        if ctx.provider is None:
            return
        seconds = self.clock() - ctx.started
        status = params.response.status
        endpoint = self.resolver.endpoint(ctx.provider, params.method, params.url)
        self.metrics.provider_latency.labels(ctx.provider, endpoint).observe(seconds)
        self.metrics.provider_requests.labels(ctx.provider, endpoint, f"{status // 100}xx").inc()
        log.info(
            "provider_call",
            provider=ctx.provider,
            method=params.method,
            path=params.url.path,
            status=status,
            duration_s=round(seconds, 4),
        )

    async def _failed(
        self,
        session: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestExceptionParams,
    ) -> None:
        if ctx.provider is None:
            return
        seconds = self.clock() - ctx.started
        endpoint = self.resolver.endpoint(ctx.provider, params.method, params.url)
        self.metrics.provider_requests.labels(ctx.provider, endpoint, "error").inc()
        log.warning(
            "provider_call",
            provider=ctx.provider,
            method=params.method,
            path=params.url.path,
            status=None,
            error=type(params.exception).__name__,
            duration_s=round(seconds, 4),
        )


def provider_trace_config(
    resolver: ProviderResolver, metrics: BrokerMetrics, clock: Callable[[], float] = time.perf_counter
) -> aiohttp.TraceConfig:
    """A `TraceConfig` that times, counts and logs each provider request on the session it is given to."""
    return ProviderCallTracer(resolver, metrics, clock).trace_config()
