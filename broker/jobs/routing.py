"""Quoting a job for a team: the team's current policy, the providers the app can reach, their health,
their free capacity and the job's image decide which catalog routes are feasible (`pricing.quote`
ranks them). Observed latencies stand in for the catalog's expected ones once there are any."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from aiohttp import web

from adapters.images import image_infeasibility
from broker.appkeys import ADAPTERS, DEPLOYMENT, RUNNER, SETTINGS, STORE
from broker.jobs.hosted_inputs import HOSTING_OFF, InputHosting
from broker.schema import JobRequest, decode_data_uri
from policies.effective import effective_constraints
from policies.model import Policy
from pricing.money import Money
from pricing.quote import Quote, quote

PROVIDER_FAILED = "rate-limited, unavailable, out of funds, refused our key, or failed the render"


async def current_policy(app: web.Application, team: str) -> Policy:
    """The team's policy: its latest edit through the API if any, else config.yaml's; over `default`."""
    config = app[DEPLOYMENT].config
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
    config, adapters = app[DEPLOYMENT].config, app[ADAPTERS]
    has_url, has_bytes, size = image_size(request, upload_bytes)
    hosting = InputHosting.from_settings(app[SETTINGS])
    # With hosting on, image bytes can also be handed over as a signed URL (GET /v1/inputs/{id}).
    reachable_by_url = has_url or (has_bytes and hosting is not None)
    reasons: dict[str, str] = {}
    for name, provider in config.providers.items():
        adapter = adapters.get(name)
        if adapter is None:
            env = f" ({provider.api_key_env})" if provider.api_key_env else ""
            reasons[name] = f"provider {name} has no API key configured{env}"
            continue
        if why := image_infeasibility(adapter.image_acceptance, reachable_by_url, has_bytes, size):
            url_only = not reachable_by_url and adapter.image_acceptance.url
            reasons[name] = f"{why}; {HOSTING_OFF}" if url_only else why
    return reasons


def _merged(*sources: Mapping[str, str]) -> dict[str, str]:
    """One reason per provider, every source's reason kept."""
    merged: dict[str, str] = {}
    for source in sources:
        for name, reason in source.items():
            merged[name] = f"{merged[name]}; {reason}" if name in merged else reason
    return merged


def unpriced_ceiling_of(policy: Policy) -> Money | None:
    """What the policy lets a job on an unpriced route reserve and book, or None: no unpriced routes."""
    ceiling = policy.allow_unpriced_max_usd
    return None if ceiling is None else Money.parse(ceiling)


async def quote_for(
    app: web.Application,
    team: str,
    request: JobRequest,
    *,
    upload_bytes: int | None = None,
    exclude_routes: Collection[str] = (),
    exclude_providers: Collection[str] = (),
    policy: Policy | None = None,
) -> Quote:
    """Quote `request` for `team` under `policy` (default: the team's current one), skipping routes in
    `exclude_routes` and every route of the providers in `exclude_providers` (those that failed this
    job at the provider level: `adapters.failures.providers_to_exclude`).

    Providers with an open circuit are rejected. Providers at capacity are rejected too when another
    route can serve the job; when none can, the quote keeps them (the job waits for a slot).
    """
    if policy is None:
        policy = await current_policy(app, team)
    unpriced_ceiling = unpriced_ceiling_of(policy)
    unavailable = _merged(
        unavailable_providers(app, request, upload_bytes),
        {name: f"provider {name} already failed this job ({PROVIDER_FAILED})" for name in exclude_providers},
    )
    latency: Mapping[str, int] = {}
    saturated: Mapping[str, str] = {}
    runner = app.get(RUNNER)
    if runner is not None:
        # Limits come from the config in force, so a reload changes them before the next route is picked.
        runner.slots.follow(app[DEPLOYMENT].config.providers)
        unavailable = _merged(unavailable, await runner.health.unavailable_now())
        latency, saturated = runner.health.latency.expected(), await runner.slots.saturated()

    def ranked(busy: Mapping[str, str]) -> Quote:
        return quote(
            request,
            app[DEPLOYMENT].config.routes,
            constraints=effective_constraints(policy, request.constraints),
            exclude_models=policy.exclude_models,
            unavailable=_merged(unavailable, busy),
            exclude_routes=exclude_routes,
            latency=latency,
            unpriced_ceiling=unpriced_ceiling,
        )

    answer = ranked(saturated)
    if answer.chosen is None and saturated:
        waiting = ranked({})
        if waiting.chosen is not None:
            return waiting
    return answer
