"""Quoting a job for a team: the team's current policy, the providers the app can reach, and the
job's image decide which catalog routes are feasible (`pricing.quote` ranks them)."""

from __future__ import annotations

from collections.abc import Collection

from aiohttp import web

from adapters.images import image_infeasibility
from broker.appkeys import ADAPTERS, CONFIG, STORE
from broker.schema import JobRequest, decode_data_uri
from policies.effective import effective_constraints
from policies.model import Policy
from pricing.quote import Quote, quote


async def current_policy(app: web.Application, team: str) -> Policy:
    """The team's policy: its latest edit through the API if any, else config.yaml's; over `default`."""
    config = app[CONFIG]
    stored = await app[STORE].get_policy(team)
    if stored is None:
        return config.policy_for(team)
    return Policy.model_validate(stored.policy).merged_over(config.policies.get("default", Policy()))


def image_size(request: JobRequest, upload_bytes: int | None) -> tuple[bool, bool, int | None]:
    """(has_url, has_bytes, size in bytes if known) of the job's image."""
    if request.image_upload is not None:
        return False, True, upload_bytes
    if request.image_url is None:
        return False, False, None
    if request.image_url.startswith("data:"):
        return False, True, len(decode_data_uri(request.image_url)[1])
    return True, True, None  # an https URL can also be fetched and sent as bytes


def unavailable_providers(
    app: web.Application, request: JobRequest, upload_bytes: int | None
) -> dict[str, str]:
    """Provider -> why none of its routes can serve this job right now."""
    config, adapters = app[CONFIG], app[ADAPTERS]
    has_url, has_bytes, size = image_size(request, upload_bytes)
    reasons: dict[str, str] = {}
    for name, provider in config.providers.items():
        adapter = adapters.get(name)
        if adapter is None:
            env = f" ({provider.api_key_env})" if provider.api_key_env else ""
            reasons[name] = f"provider {name} has no API key configured{env}"
            continue
        if why := image_infeasibility(adapter.image_acceptance, has_url, has_bytes, size):
            reasons[name] = why
    return reasons


async def quote_for(
    app: web.Application,
    team: str,
    request: JobRequest,
    *,
    upload_bytes: int | None = None,
    exclude_routes: Collection[str] = (),
) -> Quote:
    """Quote `request` for `team` under its policy, skipping routes in `exclude_routes`."""
    policy = await current_policy(app, team)
    return quote(
        request,
        app[CONFIG].routes,
        constraints=effective_constraints(policy, request.constraints),
        exclude_models=policy.exclude_models,
        unavailable=unavailable_providers(app, request, upload_bytes),
        exclude_routes=exclude_routes,
    )
