"""Quoting a job for a team: the team's current policy, the providers the app can reach, their health,
their free capacity and the job's image decide which catalog routes are feasible (`pricing.quote`
ranks them). Observed latencies stand in for the catalog's expected ones once there are any.

`Router` holds what a quote depends on, each named: the deployment in force (config.yaml, swapped by
a reload), the adapters built at start, the store (team policies), input hosting, provider health and
capacity slots. A quote reads them and changes none (a reload updates the slots' limits).
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Mapping

from adapters.base import Adapter
from adapters.images import image_infeasibility
from broker.config import BrokerConfig
from broker.deployment import Deployment
from broker.jobs.hosted_inputs import HOSTING_OFF, InputHosting
from broker.jobs.provider_health import ProviderHealth
from broker.jobs.queues import Seat, predicted_wait_s, seat_of
from broker.jobs.slots import Slots
from broker.schema import JobRequest, decode_data_uri
from broker.store import Store
from policies.effective import effective_constraints
from policies.model import Policy
from pricing.money import Money
from pricing.quote import Quote, quote

PROVIDER_FAILED = "rate-limited, unavailable, out of funds, refused our key, or failed the render"


async def current_policy(config: BrokerConfig, store: Store, team: str) -> Policy:
    """The team's policy: its latest edit through the API if any, else config.yaml's; over `default`."""
    stored = await store.get_policy(team)
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
    config: BrokerConfig,
    adapters: Mapping[str, Adapter],
    hosting: InputHosting | None,
    request: JobRequest,
    upload_bytes: int | None,
) -> dict[str, str]:
    """Provider -> why none of its routes can serve this job right now."""
    has_url, has_bytes, size = image_size(request, upload_bytes)
    # With hosting on, image bytes can also be handed over as a signed URL (GET /v1/inputs/{id}).
    reachable_by_url = has_url or (has_bytes and hosting is not None)
    reasons: dict[str, str] = {}
    for name, provider in config.providers.items():
        adapter = adapters.get(name)
        if adapter is None:
            env = f" ({provider.api_key_env})" if provider.api_key_env else ""
            reasons[name] = f"provider {name} has no API key configured{env}"
            continue
        if why := image_infeasibility(adapter.spec.image_acceptance, reachable_by_url, has_bytes, size):
            url_only = not reachable_by_url and adapter.spec.image_acceptance.url
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


class Router:
    """Quotes jobs for teams from its named dependencies (see the module docstring)."""

    def __init__(
        self,
        deployment: Deployment,
        adapters: Mapping[str, Adapter],
        store: Store,
        hosting: InputHosting | None,
        health: ProviderHealth,
        slots: Slots,
    ) -> None:
        self.deployment = deployment
        self.adapters = adapters
        self.store = store
        self.hosting = hosting
        self.health = health
        self.slots = slots

    async def policy(self, team: str) -> Policy:
        """The team's current policy (see `current_policy`)."""
        return await current_policy(self.deployment.config, self.store, team)

    async def quote(
        self,
        team: str,
        request: JobRequest,
        *,
        upload_bytes: int | None = None,
        exclude_routes: Collection[str] = (),
        exclude_providers: Collection[str] = (),
        policy: Policy | None = None,
        through_open_circuits: bool = False,
        seat: Seat | None = None,
    ) -> Quote:
        """Quote `request` for `team` under `policy` (default: the team's current one), skipping routes
        in `exclude_routes` and every route of the providers in `exclude_providers` (those that failed
        this job at the provider level: `adapters.failures.providers_to_exclude`).

        Providers with an open circuit are rejected (kept with `through_open_circuits`: an accepted job
        whose every route waits on a circuit waits for it, as for a slot). Providers at capacity are
        not: each route carries the predicted wait for a slot (`seat`'s place in its queue; a new job's
        when None), which the job's `max_latency_s` counts, so a job with no limit takes the cheapest
        route however long its queue, and one with a limit the cheapest whose wait and render fit. A new
        job no route's wait fits is refused (with the predicted waits); an accepted one waits on.
        """
        if policy is None:
            policy = await self.policy(team)
        config = self.deployment.config
        unpriced_ceiling = unpriced_ceiling_of(policy)
        failed = {
            name: f"provider {name} already failed this job ({PROVIDER_FAILED})" for name in exclude_providers
        }
        unavailable = _merged(
            unavailable_providers(config, self.adapters, self.hosting, request, upload_bytes),
            failed,
            {} if through_open_circuits else await self.health.unavailable_now(),
        )
        latency = self.health.latency.expected()
        accepted = seat is not None
        if seat is None:  # a new job: it would queue behind everyone waiting now
            seat = seat_of("", team, time.time(), request.priority, policy.model_dump())

        def ranked(waits: Mapping[str, int]) -> Quote:
            return quote(
                request,
                config.routes,
                constraints=effective_constraints(policy, request.constraints),
                exclude_models=policy.exclude_models,
                unavailable=unavailable,
                exclude_routes=exclude_routes,
                latency=latency,
                unpriced_ceiling=unpriced_ceiling,
                waits=waits,
            )

        waits = await self.waits(seat, latency)
        answer = ranked(waits)
        if answer.chosen is None and waits and accepted:
            # An accepted job whose every route's queue looks too long still waits (the prediction may
            # be pessimistic) in the cheapest one, until its max_latency_s runs out.
            waiting = ranked({})
            if waiting.chosen is not None:
                return waiting
        return answer

    async def waits(self, seat: Seat, latency: Mapping[str, int]) -> dict[str, int]:
        """Route key -> the predicted wait (s) for a slot: the queue ahead of `seat` under the fair-share
        order, through the provider's cap at the route's render time; or the rate window's refill."""
        routes = self.deployment.config.routes
        providers = {route.provider for route in routes}
        views = await self.slots.views(providers, seat)  # one store round trip for every limited one
        waits: dict[str, int] = {}
        for route in routes:
            if (view := views.get(route.provider)) is None:
                continue
            wait = predicted_wait_s(view, latency.get(route.key, route.expected_latency_s))
            if wait > 0:
                waits[route.key] = math.ceil(wait)
        return waits
