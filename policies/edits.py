"""Edits of a team's policy through the API: the body validated into a `Policy`, names checked against
the catalog, and the form a version is stored in."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from policies.model import Policy
from pricing.catalog import RouteSpec


class PolicyInvalid(ValueError):
    """A policy body that cannot be used; `problems` name each field and what is wrong with it."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{p['field']}: {p['message']}" for p in problems))
        self.problems = problems


def _field(loc: Sequence[int | str]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def parse_policy(body: dict[str, Any]) -> Policy:
    """Validate an edit body (the policy's fields) into a `Policy`; `PolicyInvalid` names the field."""
    try:
        return Policy.model_validate(body)
    except ValidationError as exc:
        problems = [
            {"field": _field(err["loc"]), "message": err["msg"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        raise PolicyInvalid(problems) from None


def check_names(policy: Policy, providers: Collection[str], routes: Collection[RouteSpec]) -> None:
    """Refuse provider and model names the catalog does not know: a typo would silently allow nothing
    (in an allow list) or exclude nothing (in an exclude list)."""
    models = {route.model for route in routes} | {route.key for route in routes}
    problems: list[dict[str, str]] = []
    for name in ("providers", "exclude_providers"):
        for index, provider in enumerate(getattr(policy, name) or []):
            if provider not in providers:
                problems.append({"field": f"{name}.{index}", "message": f"unknown provider {provider!r}"})
    for name in ("models", "exclude_models"):
        for index, model in enumerate(getattr(policy, name) or []):
            if model not in models:
                problems.append({"field": f"{name}.{index}", "message": f"unknown model {model!r}"})
    daily, monthly = policy.daily_budget_usd, policy.monthly_budget_usd
    if daily is not None and monthly is not None and Decimal(daily) > Decimal(monthly):
        problems.append({"field": "daily_budget_usd", "message": "above monthly_budget_usd"})
    if problems:
        raise PolicyInvalid(problems)


def stored_form(policy: Policy) -> dict[str, Any]:
    """The fields the edit set, as JSON: unset fields keep inheriting from the `default` policy."""
    return policy.model_dump(mode="json", exclude_unset=True)
