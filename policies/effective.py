"""A job's effective constraints: its team's policy narrowed by the request. A request can tighten a
policy, never loosen it."""

from __future__ import annotations

from decimal import Decimal

from broker.schema import Constraints, Quality
from policies.model import Policy


def _min_usd(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return a if b is None else b
    return a if Decimal(a) <= Decimal(b) else b


def _min_int(a: int | None, b: int | None) -> int | None:
    if a is None or b is None:
        return a if b is None else b
    return min(a, b)


def _max_quality(a: Quality | None, b: Quality | None) -> Quality | None:
    if a is None or b is None:
        return a if b is None else b
    return a if a.rank >= b.rank else b


def _narrow(allowed: list[str] | None, requested: list[str] | None) -> list[str] | None:
    """The requested allow list within the policy's; None means "any"."""
    if allowed is None:
        return requested
    if requested is None:
        return list(allowed)
    return [name for name in requested if name in allowed]


def effective_constraints(policy: Policy, requested: Constraints) -> Constraints:
    """The tighter of policy and request on every field."""
    return Constraints(
        max_cost_usd=_min_usd(policy.max_cost_usd, requested.max_cost_usd),
        max_latency_s=_min_int(policy.max_latency_s, requested.max_latency_s),
        min_quality=_max_quality(policy.min_quality, requested.min_quality),
        providers=_narrow(policy.providers, requested.providers),
        exclude_providers=sorted(set(policy.exclude_providers) | set(requested.exclude_providers)),
        models=_narrow(policy.models, requested.models),
    )
