"""The quote: which catalog routes can serve a request, what each costs, and why the others can't.

Every route is priced for the request and run through every filter; a rejected route keeps all of its
reasons, not just the first. Feasible routes are ranked cheapest first, ties broken by expected
latency and then by route key, so the same inputs always give the same answer.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from broker.schema import Constraints, JobRequest
from pricing.catalog import RouteSpec
from pricing.filters import RouteFilter, build_filters
from pricing.money import Money, UnknownPrice


@dataclass(frozen=True, slots=True)
class QuotedRoute:
    """A feasible route and its price for the request."""

    route: RouteSpec
    cost: Money
    unpriced: bool = False  # `cost` is the policy's ceiling: the route has no known price
    predicted_wait_s: int = 0  # the wait for a slot in the provider's queue before the render starts

    @property
    def key(self) -> str:
        """`provider/model`."""
        return self.route.key

    def to_json(self) -> dict[str, Any]:
        """The API's route shape, money as a six-decimal string."""
        return {
            "provider": self.route.provider,
            "model": self.route.model,
            "cost_usd": str(self.cost),
            "expected_latency_s": self.route.expected_latency_s,
            "predicted_wait_s": self.predicted_wait_s,
            "quality": self.route.quality.value,
            "unpriced": self.unpriced,
        }


class Rejection:
    """A route that can't serve the request, with every reason why.

    The reasons are written when first read: a quote rejects most of the catalog, and most callers only
    look at the chosen route.
    """

    __slots__ = ("_cost", "_failed", "_reasons", "route")

    def __init__(self, route: RouteSpec, cost: Money | None, failed: Sequence[RouteFilter]) -> None:
        self.route = route
        self._cost = cost
        self._failed = failed
        self._reasons: list[str] | None = None

    @property
    def provider(self) -> str:
        """The route's provider."""
        return self.route.provider

    @property
    def model(self) -> str:
        """The route's model id."""
        return self.route.model

    @property
    def reasons(self) -> list[str]:
        """Every constraint the route fails, in words, in filter order."""
        if self._reasons is None:
            self._reasons = [check.reason(self.route, self._cost) for check in self._failed]
        return list(self._reasons)

    def to_json(self) -> dict[str, Any]:
        """The API's rejection shape."""
        return {"provider": self.provider, "model": self.model, "reasons": self.reasons}

    def __repr__(self) -> str:
        return f"Rejection({self.route.key!r}, {self.reasons!r})"


@dataclass(frozen=True, slots=True)
class Quote:
    """The answer for one request: the chosen route, the ranked feasible routes and the rejections."""

    chosen: QuotedRoute | None
    routes: list[QuotedRoute]
    rejected: list[Rejection]
    # The priciest feasible route: what the job would have cost without routing, for savings reports.
    baseline: QuotedRoute | None
    # The constraints the routes were filtered under (the request's own, or its effective ones).
    constraints: Constraints | None = None

    @property
    def feasible(self) -> bool:
        """Whether any route can serve the request."""
        return self.chosen is not None

    def to_json(self) -> dict[str, Any]:
        """`POST /v1/quotes`'s body."""
        return {
            "chosen": self.chosen.to_json() if self.chosen is not None else None,
            "routes": [quoted.to_json() for quoted in self.routes],
            "rejected": [rejection.to_json() for rejection in self.rejected],
        }


def route_cost(route: RouteSpec, request: JobRequest) -> Money | None:
    """The route's price for this request; None when the route is unpriced for it."""
    if route.price is None:
        return None
    try:
        return route.price.usd(request.duration_s, request.resolution, request.audio)
    except UnknownPrice:
        return None


def bounded_cost(route: RouteSpec, request: JobRequest, ceiling: Money | None) -> tuple[Money | None, bool]:
    """(cost, unpriced): the route's price, else `ceiling` (a policy's `allow_unpriced_max_usd`) marked
    unpriced, else (None, False)."""
    cost = route_cost(route, request)
    if cost is None and ceiling is not None:
        return ceiling, True
    return cost, False


def _ranking(quoted: QuotedRoute) -> tuple[int, bool, int, str]:
    # At equal cost a known price goes before a ceiling, then the sooner done (wait and render).
    done_s = quoted.route.expected_latency_s + quoted.predicted_wait_s
    return (quoted.cost.micros, quoted.unpriced, done_s, quoted.route.key)


def quote(
    request: JobRequest,
    catalog: Sequence[RouteSpec],
    *,
    constraints: Constraints | None = None,
    exclude_models: Collection[str] = (),
    unavailable: Mapping[str, str] | None = None,
    exclude_routes: Collection[str] = (),
    latency: Mapping[str, int] | None = None,
    unpriced_ceiling: Money | None = None,
    waits: Mapping[str, int] | None = None,
) -> Quote:
    """Price and filter every route for the request; rank the feasible ones cheapest first.

    `constraints` defaults to the request's own; `unavailable` maps a provider name or a route key to
    why it can't be used now; `exclude_routes` are route keys already tried for this job; `latency`
    maps a route key to its observed latency in seconds, which then stands for the catalog's
    `expected_latency_s` (in the latency filter, the ranking and the answer); `unpriced_ceiling`
    admits unpriced routes at that cost, marked unpriced (every cost filter judges the ceiling);
    `waits` maps a route key to the predicted wait for a slot in seconds, which `max_latency_s` counts
    on top of the render's latency: the cheapest route whose wait and render fit is chosen.
    """
    applied = constraints if constraints is not None else request.constraints
    filters = build_filters(
        request,
        applied,
        exclude_models=exclude_models,
        unavailable=unavailable,
        exclude_routes=exclude_routes,
        waits=waits,
    )
    checks = [(check, check.admits) for check in filters]
    feasible: list[QuotedRoute] = []
    rejected: list[Rejection] = []
    for route in catalog:
        if latency and (observed := latency.get(route.key)) is not None:
            route = route.model_copy(update={"expected_latency_s": observed})
        cost, unpriced = bounded_cost(route, request, unpriced_ceiling)
        failed = [check for check, admits in checks if not admits(route, cost)]
        if failed:
            rejected.append(Rejection(route, cost, failed))
        else:
            assert cost is not None  # PricedFilter lets no route without a cost through
            wait = waits.get(route.key, 0) if waits else 0
            feasible.append(QuotedRoute(route, cost, unpriced, wait))
    feasible.sort(key=_ranking)
    return Quote(
        chosen=feasible[0] if feasible else None,
        routes=feasible,
        rejected=rejected,
        baseline=feasible[-1] if feasible else None,
        constraints=applied,
    )
