"""The aiohttp application: resources opened in `cleanup_ctx`, handlers, middlewares."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import replace

import aiohttp
from aiohttp import web

from adapters.base import Adapter, AdapterContext, AdapterFactory, Clock, Sleep
from adapters.failures import providers_to_exclude
from adapters.outbound import Resolver
from broker.api import (
    batches,
    callbacks,
    dashboard,
    health,
    inputs,
    jobs,
    offload,
    openapi,
    output_deletion,
    policies,
    providers,
    videos,
)
from broker.api import metrics as metrics_handlers
from broker.api import pricing as pricing_handlers
from broker.api import reports as report_handlers
from broker.api.edge import decoded_input
from broker.api.middleware import errors, request_context
from broker.appkeys import (
    ACCEPTANCE,
    ADAPTERS,
    ARTIFACTS,
    BATCHES,
    BOOKKEEPER,
    CLOCK,
    DEPLOYMENT,
    EXPIRY,
    HTTP,
    OBSERVERS,
    OUTBOUND,
    ROUTER,
    RUNNER,
    SETTINGS,
    STORE,
)
from broker.auth import Authenticator
from broker.config import BrokerConfig
from broker.deployment import Deployment
from broker.jobs.acceptance import Acceptance
from broker.jobs.batches import BatchAcceptance
from broker.jobs.budgets import budget_windows
from broker.jobs.context import RunnerOptions, StepContext
from broker.jobs.hosted_inputs import InputHosting
from broker.jobs.provider_health import ProviderHealth
from broker.jobs.queues import record_seat
from broker.jobs.reconcile import Bookkeeper
from broker.jobs.retention import Expiry
from broker.jobs.routing import Router
from broker.jobs.scheduler import Scheduler
from broker.jobs.slots import LocalSlots, Slots
from broker.jobs.team_webhooks import TeamWebhooks
from broker.observability import wiring
from broker.observability.logging import scrubber, secret_values
from broker.settings import Settings
from broker.store import JobRecord, open_store
from broker.store.artifacts import open_artifacts
from policies.model import Policy
from pricing.money import Money
from pricing.quote import Quote

# Every route of the API, one module per resource, each with its `routes` table.
HANDLERS = (
    jobs,
    batches,
    output_deletion,
    health,
    openapi,
    callbacks,
    report_handlers,
    metrics_handlers,
    policies,
    inputs,
    providers,
    dashboard,
    pricing_handlers,
    videos,
)


def default_factories() -> Mapping[str, AdapterFactory]:
    from adapters.registry import FACTORIES

    return FACTORIES


def build_adapters(
    app: web.Application, factories: Mapping[str, AdapterFactory], env: Mapping[str, str]
) -> dict[str, Adapter]:
    """One adapter per configured provider whose key is in the environment (or that needs none)."""
    settings, config = app[SETTINGS], app[DEPLOYMENT].config
    built: dict[str, Adapter] = {}
    for name, provider in config.providers.items():
        key = env.get(provider.api_key_env) if provider.api_key_env else None
        if (provider.api_key_env and not key) or name not in factories:
            continue
        secret = env.get(provider.webhook_secret_env) if provider.webhook_secret_env else None
        context = AdapterContext(
            provider=name,
            base_url=provider.base_url,
            api_key=key,
            session=app[HTTP],
            data_dir=settings.data_dir.resolve(),
            webhook_secret=secret,
            timeout_s=provider.timeout_s,
            max_concurrency=provider.max_concurrency or 1,
        )
        adapter = factories[name](context)
        if provider.task_deadline_s is not None:  # the operator's deadline overrides the adapter's
            schedule = replace(adapter.spec.poll_schedule, deadline_s=provider.task_deadline_s)
            adapter.spec = replace(adapter.spec, poll_schedule=schedule)
        built[name] = adapter
    return built


def create_app(
    settings: Settings,
    config: BrokerConfig,
    *,
    env: Mapping[str, str] | None = None,
    factories: Mapping[str, AdapterFactory] | None = None,
    clock: Clock | None = None,
    sleep: Sleep = asyncio.sleep,
    resolver: Resolver | None = None,
) -> web.Application:
    """The broker app. `env`, `factories`, `clock`, `sleep` and the DNS `resolver` of caller-given
    URLs are injectable for tests."""
    environment = os.environ if env is None else env
    middlewares = [request_context, errors, decoded_input]
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    offload.install(app)
    outbound = settings.outbound
    app[OUTBOUND] = outbound if resolver is None else dataclasses.replace(outbound, resolver=resolver)
    app[DEPLOYMENT] = Deployment(config, Authenticator(config, environment))
    app[CLOCK] = clock or time.time
    app[OBSERVERS] = []
    trace = wiring.install(app)  # metrics and transition logs observe jobs; provider calls traced

    async def resources(app: web.Application) -> AsyncIterator[None]:
        store = open_store(
            settings.store_url, redis_prefix=settings.redis_prefix, redis_cluster=settings.redis_cluster
        )
        await store.open()
        app[STORE] = store
        artifacts = open_artifacts(settings.artifacts_url, settings.data_dir)
        await artifacts.open()
        app[ARTIFACTS] = artifacts
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
        async with aiohttp.ClientSession(timeout=timeout, trace_configs=[trace]) as session:
            app[HTTP] = session
            webhooks = TeamWebhooks(store, settings.webhook_secret, app[OUTBOUND], clock=app[CLOCK])
            app[OBSERVERS].append(webhooks)
            app[ADAPTERS] = build_adapters(app, factories or default_factories(), environment)
            runner = _runner(app, sleep, environment)
            app[RUNNER] = runner
            app[ACCEPTANCE] = Acceptance(store, app[ROUTER], app[OBSERVERS], app[CLOCK], runner.wake)
            app[BATCHES] = BatchAcceptance(app[ACCEPTANCE])
            await runner.start()
            bookkeeper = Bookkeeper(runner.ctx)
            app[BOOKKEEPER] = bookkeeper
            bookkeeper.start()
            expiry = Expiry(store, artifacts, lambda: app[DEPLOYMENT].config, clock=app[CLOCK])
            app[EXPIRY] = expiry
            expiry.start()
            webhooks.start()
            try:
                yield
            finally:
                await bookkeeper.stop()
                await expiry.stop()
                await runner.stop()
                await webhooks.close()
                for adapter in app[ADAPTERS].values():
                    # Only adapters holding work of their own (local renders) have something to stop.
                    close = getattr(adapter, "close", None)
                    if close is not None:
                        await close()
                await store.close()
                await artifacts.close()

    app.cleanup_ctx.append(resources)
    for module in HANDLERS:
        app.router.add_routes(module.routes)
    return app


def _shared_state(app: web.Application) -> tuple[Slots, ProviderHealth]:
    """Capacity and circuit state where every replica sees them: in Redis with a Redis store, else in
    this process (SQLite serves one process)."""
    from broker.jobs.capacity import Capacity
    from broker.store.redis import RedisStore

    store, clock = app[STORE], app[CLOCK]
    if isinstance(store, RedisStore):
        from broker.jobs.redis_capacity import RedisSlots
        from broker.jobs.redis_circuits import RedisCircuits

        circuits = RedisCircuits(store, app[DEPLOYMENT].config.providers)
        return RedisSlots(store, clock), ProviderHealth(clock, shared=circuits)
    return LocalSlots(Capacity(clock)), ProviderHealth(clock)


def _runner(app: web.Application, sleep: Sleep, env: Mapping[str, str]) -> Scheduler:
    """The scheduler, and the router it and the API quote with (put on the app as `ROUTER`)."""
    settings, config = app[SETTINGS], app[DEPLOYMENT].config
    hosting = InputHosting.from_settings(settings)
    slots, health = _shared_state(app)
    slots.follow(config.providers, [team.name for team in config.teams])
    adapters: dict[str, Adapter] = app[ADAPTERS]
    router = Router(app[DEPLOYMENT], adapters, app[STORE], hosting, health, slots)
    app[ROUTER] = router

    async def accepted_policy(record: JobRecord) -> Policy:
        """The policy the job was accepted under (jobs stored before that was recorded: the current one)."""
        if record.policy is not None:
            return Policy.model_validate(record.policy)
        return await router.policy(record.job.team)

    async def requote(record: JobRecord, tried: Collection[str], *, patient: bool = False) -> Quote:
        policy = await accepted_policy(record)
        # Providers that failed the job at provider level are left for the rest of it (adapters.failures).
        gone = providers_to_exclude(record.job.attempts)
        return await router.quote(
            record.job.team,
            record.job.request,
            exclude_routes=tried,
            exclude_providers=gone,
            policy=policy,
            through_open_circuits=patient,
            seat=record_seat(record),
        )

    async def max_attempts(record: JobRecord) -> int:
        return (await accepted_policy(record)).max_attempts or 3

    async def reserve_more(record: JobRecord, amount: Money) -> bool:
        """Add `amount` to the job's reservation in the budget windows it was submitted into."""
        windows = budget_windows(record.job.team, await accepted_policy(record), record.job.created_at)
        return not windows or (await app[STORE].reserve_budget(record.id, amount.micros, windows)).ok

    context = StepContext(
        store=app[STORE],
        artifacts=app[ARTIFACTS],
        adapters=app[ADAPTERS],
        routes={route.key: route for route in config.routes},
        quote=requote,
        options=RunnerOptions(
            workers=settings.workers,
            lease_s=settings.lease_s,
            public_url=settings.public_url,
            input_hosting=hosting,
            outbound=app[OUTBOUND],
        ),
        clock=app[CLOCK],
        sleep=sleep,
        observers=app[OBSERVERS],
        health=health,
        capacity=slots.capacity if isinstance(slots, LocalSlots) else None,
        slots=slots,
        scrub=scrubber([*secret_values(config, env), settings.webhook_secret or ""]),
        reserve_more=reserve_more,
        max_attempts=max_attempts,
        output_retention_s={
            name: p.output_retention_s for name, p in config.providers.items() if p.output_retention_s
        },
    )
    return Scheduler(context)
