"""Route filters: one small object per constraint, each saying why it rejects a route.

A filter is called with a route and the route's price for the request (None when unpriced) and answers
None to let it through, or a reason a person can act on. `build_filters` makes only the filters a
request and its constraints switch on, so an unconstrained quote does no needless work.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

from broker.schema import AspectRatio, Constraints, Feature, JobRequest, Mode, Quality, Resolution
from pricing.catalog import RouteSpec
from pricing.money import Money


class RouteFilter(Protocol):
    """Answers None when the route may serve the request, else why it may not."""

    def __call__(self, route: RouteSpec, cost: Money | None) -> str | None: ...


def _listed(values: Collection[str]) -> str:
    return ", ".join(sorted(values))


@dataclass(frozen=True, slots=True)
class ModeFilter:
    mode: Mode

    def __call__(self, route: RouteSpec, cost: Money | None) -> str | None:
        if self.mode in route.modes:
            return None
        return f"mode {self.mode.value} not supported (supports {_listed(route.modes)})"


@dataclass(frozen=True, slots=True)
class DurationFilter:
    duration_s: int

    def __call__(self, route: RouteSpec, cost: Money | None) -> str | None:
        if route.durations.allows(self.duration_s):
            return None
        return f"duration {self.duration_s} s not supported (supports {route.durations.describe()})"


@dataclass(frozen=True, slots=True)
class AspectRatioFilter:
    aspect_ratio: AspectRatio
    mode: Mode

    def __call__(self, route: RouteSpec, cost: Money | None) -> str | None:
        supported = route.aspect_ratios_for(self.mode)
        if self.aspect_ratio in supported:
            return None
        return f"aspect ratio {self.aspect_ratio.value} not supported (supports {_listed(supported)})"


@dataclass(frozen=True, slots=True)
class ResolutionFilter:
    resolution: Resolution

    def __call__(self, route: RouteSpec, cost: Money | None) -> str | None:
        if self.resolution in route.resolutions:
            return None
        return f"resolution {self.resolution.value} not supported (supports {_listed(route.resolutions)})"


@dataclass(frozen=True, slots=True)
class FeatureFilter:
    feature: Feature

    def __call__(self, route: RouteSpec, cost: Money | None) -> str | None:
        if self.feature in route.features:
            return None
        return f"feature {self.feature.value} not supported"


@dataclass(frozen=True, slots=True)
class PricedFilter:
    """An unpriced route is never free and never chosen: its cost is unknown."""

    def __call__(self, route: RouteSpec, cost: Money | None) -> str | None:
        if cost is not None:
            return None
        if route.price is None:
            return "unpriced: the sources give no price for this route; an operator must set one"
        return "unpriced: no price for this resolution"


@dataclass(frozen=True, slots=True)
class MaxCostFilter:
    limit: Money

    def __call__(self, route: RouteSpec, cost: Money | None) -> str | None:
        if cost is None or cost <= self.limit:
            return None
        return f"cost {cost} USD above max_cost_usd {self.limit}"


@dataclass(frozen=True, slots=True)
class MaxLatencyFilter:
    limit_s: int

    def __call__(self, route: RouteSpec, cost: Money | None) -> str | None:
        if route.expected_latency_s <= self.limit_s:
            return None
        return f"expected latency {route.expected_latency_s} s above max_latency_s {self.limit_s}"


@dataclass(frozen=True, slots=True)
class MinQualityFilter:
    minimum: Quality

    def __call__(self, route: RouteSpec, cost: Money | None) -> str | None:
        if route.quality.rank >= self.minimum.rank:
            return None
        return f"quality {route.quality.value} below min_quality {self.minimum.value}"


@dataclass(frozen=True, slots=True)
class AllowedProvidersFilter:
    allowed: frozenset[str]

    def __call__(self, route: RouteSpec, cost: Money | None) -> str | None:
        if route.provider in self.allowed:
            return None
        return f"provider {route.provider} not in the allowed providers ({_listed(self.allowed)})"


@dataclass(frozen=True, slots=True)
class ExcludedProvidersFilter:
    excluded: frozenset[str]

    def __call__(self, route: RouteSpec, cost: Money | None) -> str | None:
        if route.provider not in self.excluded:
            return None
        return f"provider {route.provider} is excluded"


def _names_model(names: frozenset[str], route: RouteSpec) -> bool:
    """A model is named by its own id or by its route key, so `gen4_turbo` and `runway/gen4_turbo` match."""
    return route.model in names or route.key in names


@dataclass(frozen=True, slots=True)
class AllowedModelsFilter:
    allowed: frozenset[str]

    def __call__(self, route: RouteSpec, cost: Money | None) -> str | None:
        if _names_model(self.allowed, route):
            return None
        return f"model {route.model} not in the allowed models ({_listed(self.allowed)})"


@dataclass(frozen=True, slots=True)
class ExcludedModelsFilter:
    excluded: frozenset[str]

    def __call__(self, route: RouteSpec, cost: Money | None) -> str | None:
        if not _names_model(self.excluded, route):
            return None
        return f"model {route.model} is excluded"


@dataclass(frozen=True, slots=True)
class UnavailableFilter:
    """Providers or routes the broker can't use now: no key, an open circuit, an image form it lacks."""

    reasons: Mapping[str, str]

    def __call__(self, route: RouteSpec, cost: Money | None) -> str | None:
        by_route = self.reasons.get(route.key)
        by_provider = self.reasons.get(route.provider)
        if by_route is not None and by_provider is not None:
            return f"{by_provider}; {by_route}"
        return by_route if by_route is not None else by_provider


@dataclass(frozen=True, slots=True)
class AlreadyTriedFilter:
    tried: frozenset[str]

    def __call__(self, route: RouteSpec, cost: Money | None) -> str | None:
        if route.key not in self.tried:
            return None
        return "already tried for this job"


def build_filters(
    request: JobRequest,
    constraints: Constraints,
    *,
    exclude_models: Collection[str] = (),
    unavailable: Mapping[str, str] | None = None,
    exclude_routes: Collection[str] = (),
) -> list[RouteFilter]:
    """The filters that apply to one request under its effective constraints."""
    mode = request.resolved_mode
    filters: list[RouteFilter] = [
        ModeFilter(mode),
        DurationFilter(request.duration_s),
        AspectRatioFilter(request.aspect_ratio, mode),
        ResolutionFilter(request.resolution),
    ]
    filters.extend(FeatureFilter(feature) for feature in sorted(request.features))
    filters.append(PricedFilter())
    filters.extend(_constraint_filters(constraints))
    if exclude_models:
        filters.append(ExcludedModelsFilter(frozenset(exclude_models)))
    if unavailable:
        filters.append(UnavailableFilter(unavailable))
    if exclude_routes:
        filters.append(AlreadyTriedFilter(frozenset(exclude_routes)))
    return filters


def _constraint_filters(constraints: Constraints) -> list[RouteFilter]:
    filters: list[RouteFilter] = []
    if constraints.max_cost_usd is not None:
        filters.append(MaxCostFilter(Money.parse(constraints.max_cost_usd)))
    if constraints.max_latency_s is not None:
        filters.append(MaxLatencyFilter(constraints.max_latency_s))
    if constraints.min_quality is not None:
        filters.append(MinQualityFilter(constraints.min_quality))
    if constraints.providers is not None:
        filters.append(AllowedProvidersFilter(frozenset(constraints.providers)))
    if constraints.exclude_providers:
        filters.append(ExcludedProvidersFilter(frozenset(constraints.exclude_providers)))
    if constraints.models is not None:
        filters.append(AllowedModelsFilter(frozenset(constraints.models)))
    return filters
