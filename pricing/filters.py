"""Route filters: one small object per constraint, each able to say why it rejects a route.

A filter sees a route and the route's price for the request (None when unpriced). `admits` decides;
`reason` explains a rejection in words a person can act on. The two are apart because a quote checks
every route against every filter but most callers read only the chosen route, so the explanations are
written only when someone reads them. `build_filters` makes only the filters that a request and its
constraints switch on.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Protocol

from broker.schema import AspectRatio, Constraints, Feature, JobRequest, Mode, Quality, Resolution
from pricing.catalog import RouteSpec
from pricing.money import Money


class RouteFilter(Protocol):
    """One constraint on routes."""

    def admits(self, route: RouteSpec, cost: Money | None) -> bool:
        """Whether the route passes this constraint."""
        ...

    def reason(self, route: RouteSpec, cost: Money | None) -> str:
        """Why the route fails this constraint; only asked of a route `admits` refused."""
        ...


def _listed(values: Collection[str]) -> str:
    return ", ".join(sorted(values))


def _allowed(values: Collection[str], kind: str) -> str:
    """The allow list as a reason shows it; an empty one says why it is empty."""
    if values:
        return f"the allowed {kind} ({_listed(values)})"
    # A request may only narrow its team's policy: asking for names the policy leaves out leaves none.
    return f"the allowed {kind}: none, as the request and its team's policy name none in common"


@dataclass(frozen=True, slots=True)
class ModeFilter:
    mode: Mode

    def admits(self, route: RouteSpec, cost: Money | None) -> bool:
        return self.mode in route.modes

    def reason(self, route: RouteSpec, cost: Money | None) -> str:
        return f"mode {self.mode.value} not supported (supports {_listed(route.modes)})"


@dataclass(frozen=True, slots=True)
class DurationFilter:
    duration_s: int

    def admits(self, route: RouteSpec, cost: Money | None) -> bool:
        return route.durations.allows(self.duration_s)

    def reason(self, route: RouteSpec, cost: Money | None) -> str:
        return f"duration {self.duration_s} s not supported (supports {route.durations.describe()})"


@dataclass(frozen=True, slots=True)
class AspectRatioFilter:
    aspect_ratio: AspectRatio
    mode: Mode

    def admits(self, route: RouteSpec, cost: Money | None) -> bool:
        return self.aspect_ratio in route.aspect_ratios_for(self.mode)

    def reason(self, route: RouteSpec, cost: Money | None) -> str:
        supported = _listed(route.aspect_ratios_for(self.mode))
        return f"aspect ratio {self.aspect_ratio.value} not supported (supports {supported})"


@dataclass(frozen=True, slots=True)
class ResolutionFilter:
    resolution: Resolution

    def admits(self, route: RouteSpec, cost: Money | None) -> bool:
        return self.resolution in route.resolutions

    def reason(self, route: RouteSpec, cost: Money | None) -> str:
        return f"resolution {self.resolution.value} not supported (supports {_listed(route.resolutions)})"


@dataclass(frozen=True, slots=True)
class FeatureFilter:
    feature: Feature

    def admits(self, route: RouteSpec, cost: Money | None) -> bool:
        return self.feature in route.features

    def reason(self, route: RouteSpec, cost: Money | None) -> str:
        return f"feature {self.feature.value} not supported"


@dataclass(frozen=True, slots=True)
class PricedFilter:
    """An unpriced route is never free and never chosen: its cost is unknown."""

    def admits(self, route: RouteSpec, cost: Money | None) -> bool:
        return cost is not None

    def reason(self, route: RouteSpec, cost: Money | None) -> str:
        allow = "or a team policy's allow_unpriced_max_usd admit it at a ceiling"
        if route.price is None:
            return f"unpriced: the sources give no price for this route; an operator must set one, {allow}"
        return f"unpriced: no price for this resolution; {allow}"


@dataclass(frozen=True, slots=True)
class MaxCostFilter:
    limit: Money

    def admits(self, route: RouteSpec, cost: Money | None) -> bool:
        # An unpriced route is PricedFilter's to reject; this one judges known costs only.
        return cost is None or cost.micros <= self.limit.micros

    def reason(self, route: RouteSpec, cost: Money | None) -> str:
        return f"cost {cost} USD above max_cost_usd {self.limit}"


@dataclass(frozen=True, slots=True)
class MaxLatencyFilter:
    """The render's expected latency plus the predicted wait for a slot (route key -> seconds)."""

    limit_s: int
    waits: Mapping[str, int] | None = None

    def _wait(self, route: RouteSpec) -> int:
        return self.waits.get(route.key, 0) if self.waits else 0

    def admits(self, route: RouteSpec, cost: Money | None) -> bool:
        return route.expected_latency_s + self._wait(route) <= self.limit_s

    def reason(self, route: RouteSpec, cost: Money | None) -> str:
        if wait := self._wait(route):
            return (
                f"expected latency {route.expected_latency_s} s after a predicted {wait} s wait for a slot"
                f" is above max_latency_s {self.limit_s}"
            )
        return f"expected latency {route.expected_latency_s} s above max_latency_s {self.limit_s}"


@dataclass(frozen=True, slots=True)
class MinQualityFilter:
    minimum: Quality

    def admits(self, route: RouteSpec, cost: Money | None) -> bool:
        return route.quality.rank >= self.minimum.rank

    def reason(self, route: RouteSpec, cost: Money | None) -> str:
        return f"quality {route.quality.value} below min_quality {self.minimum.value}"


@dataclass(frozen=True, slots=True)
class AllowedProvidersFilter:
    allowed: frozenset[str]

    def admits(self, route: RouteSpec, cost: Money | None) -> bool:
        return route.provider in self.allowed

    def reason(self, route: RouteSpec, cost: Money | None) -> str:
        return f"provider {route.provider} not in {_allowed(self.allowed, 'providers')}"


@dataclass(frozen=True, slots=True)
class ExcludedProvidersFilter:
    excluded: frozenset[str]

    def admits(self, route: RouteSpec, cost: Money | None) -> bool:
        return route.provider not in self.excluded

    def reason(self, route: RouteSpec, cost: Money | None) -> str:
        return f"provider {route.provider} is excluded"


def _names_model(names: frozenset[str], route: RouteSpec) -> bool:
    """A model is named by its own id or by its route key, so `gen4_turbo` and `runway/gen4_turbo` match."""
    return route.model in names or route.key in names


@dataclass(frozen=True, slots=True)
class AllowedModelsFilter:
    allowed: frozenset[str]

    def admits(self, route: RouteSpec, cost: Money | None) -> bool:
        return _names_model(self.allowed, route)

    def reason(self, route: RouteSpec, cost: Money | None) -> str:
        return f"model {route.model} not in {_allowed(self.allowed, 'models')}"


@dataclass(frozen=True, slots=True)
class ExcludedModelsFilter:
    excluded: frozenset[str]

    def admits(self, route: RouteSpec, cost: Money | None) -> bool:
        return not _names_model(self.excluded, route)

    def reason(self, route: RouteSpec, cost: Money | None) -> str:
        return f"model {route.model} is excluded"


@dataclass(frozen=True, slots=True)
class UnavailableFilter:
    """Providers or routes the broker can't use now: no key, an open circuit, an image form it lacks.

    `reasons` maps a provider name or a route key (`provider/model`) to why.
    """

    reasons: Mapping[str, str]

    def admits(self, route: RouteSpec, cost: Money | None) -> bool:
        return route.provider not in self.reasons and route.key not in self.reasons

    def reason(self, route: RouteSpec, cost: Money | None) -> str:
        found = [self.reasons[name] for name in (route.provider, route.key) if name in self.reasons]
        return "; ".join(found)


@dataclass(frozen=True, slots=True)
class AlreadyTriedFilter:
    tried: frozenset[str]

    def admits(self, route: RouteSpec, cost: Money | None) -> bool:
        return route.key not in self.tried

    def reason(self, route: RouteSpec, cost: Money | None) -> str:
        return "already tried for this job"


def build_filters(
    request: JobRequest,
    constraints: Constraints,
    *,
    exclude_models: Collection[str] = (),
    unavailable: Mapping[str, str] | None = None,
    exclude_routes: Collection[str] = (),
    waits: Mapping[str, int] | None = None,
) -> list[RouteFilter]:
    """The filters that apply to one request under its effective constraints; `waits` are the
    predicted waits for a slot per route key, which the latency limit counts."""
    mode = request.resolved_mode
    filters: list[RouteFilter] = [
        ModeFilter(mode),
        DurationFilter(request.duration_s),
        AspectRatioFilter(request.aspect_ratio, mode),
        ResolutionFilter(request.resolution),
    ]
    filters.extend(FeatureFilter(feature) for feature in sorted(request.features))
    filters.append(PricedFilter())
    filters.extend(_constraint_filters(constraints, waits))
    if exclude_models:
        filters.append(ExcludedModelsFilter(frozenset(exclude_models)))
    if unavailable:
        filters.append(UnavailableFilter(unavailable))
    if exclude_routes:
        filters.append(AlreadyTriedFilter(frozenset(exclude_routes)))
    return filters


def _constraint_filters(constraints: Constraints, waits: Mapping[str, int] | None) -> list[RouteFilter]:
    filters: list[RouteFilter] = []
    if constraints.max_cost_usd is not None:
        filters.append(MaxCostFilter(Money.parse(constraints.max_cost_usd)))
    if constraints.max_latency_s is not None:
        filters.append(MaxLatencyFilter(constraints.max_latency_s, waits))
    if constraints.min_quality is not None:
        filters.append(MinQualityFilter(constraints.min_quality))
    if constraints.providers is not None:
        filters.append(AllowedProvidersFilter(frozenset(constraints.providers)))
    if constraints.exclude_providers:
        filters.append(ExcludedProvidersFilter(frozenset(constraints.exclude_providers)))
    if constraints.models is not None:
        filters.append(AllowedModelsFilter(frozenset(constraints.models)))
    return filters
