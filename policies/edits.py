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


def unknown_names(
    lists: object, providers: Collection[str], routes: Collection[RouteSpec], prefix: str = ""
) -> list[dict[str, str]]:
    """A problem for each provider and model name in `lists` (a policy, or a request's constraints:
    its `providers`, `exclude_providers`, `models`, `exclude_models`) that the catalog does not know."""
    models = {route.model for route in routes} | {route.key for route in routes}
    problems: list[dict[str, str]] = []
    for name, known, kind in (
        ("providers", providers, "provider"),
        ("exclude_providers", providers, "provider"),
        ("models", models, "model"),
        ("exclude_models", models, "model"),
    ):
        for index, value in enumerate(getattr(lists, name, None) or []):
            if value not in known:
                problems.append({"field": f"{prefix}{name}.{index}", "message": f"unknown {kind} {value!r}"})
    return problems


def check_names(policy: Policy, providers: Collection[str], routes: Collection[RouteSpec]) -> None:
    """Refuse provider and model names the catalog does not know: a typo would silently allow nothing
    (in an allow list) or exclude nothing (in an exclude list)."""
    problems = unknown_names(policy, providers, routes)
    daily, monthly = policy.daily_budget_usd, policy.monthly_budget_usd
    if daily is not None and monthly is not None and Decimal(daily) > Decimal(monthly):
        problems.append({"field": "daily_budget_usd", "message": "above monthly_budget_usd"})
    if problems:
        raise PolicyInvalid(problems)


def stored_form(policy: Policy) -> dict[str, Any]:
    """The fields the edit set, as JSON: unset fields keep inheriting from the `default` policy."""
    return policy.model_dump(mode="json", exclude_unset=True)
