"""Typed keys for the application's resources, opened and closed in `cleanup_ctx` (no globals)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from adapters.base import Adapter, Clock
from adapters.outbound import OutboundPolicy
from broker.deployment import Deployment
from broker.observability.events import JobObserver
from broker.settings import Settings
from broker.store import Store
from broker.store.artifacts import ArtifactStore

if TYPE_CHECKING:
    from broker.jobs.acceptance import Acceptance
    from broker.jobs.batches import BatchAcceptance
    from broker.jobs.reconcile import Bookkeeper
    from broker.jobs.retention import Expiry
    from broker.jobs.routing import Router
    from broker.jobs.scheduler import Scheduler

SETTINGS = web.AppKey("settings", Settings)
DEPLOYMENT = web.AppKey("deployment", Deployment)
STORE = web.AppKey("store", Store)
ARTIFACTS = web.AppKey("artifacts", ArtifactStore)
HTTP = web.AppKey("http", aiohttp.ClientSession)
ADAPTERS = web.AppKey("adapters", dict[str, Adapter])
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
RUNNER: web.AppKey[Scheduler] = web.AppKey("runner")
ROUTER: web.AppKey[Router] = web.AppKey("router")  # quotes jobs (broker.jobs.routing)
ACCEPTANCE: web.AppKey[Acceptance] = web.AppKey("acceptance")  # submits and cancels jobs
BATCHES: web.AppKey[BatchAcceptance] = web.AppKey("batches")  # submits and cancels batches
BOOKKEEPER: web.AppKey[Bookkeeper] = web.AppKey("bookkeeper")  # reconciliation and the budget sweep
EXPIRY: web.AppKey[Expiry] = web.AppKey("expiry")  # ended jobs expiring into the daily ledger
OBSERVERS = web.AppKey("observers", list[JobObserver])
OUTBOUND = web.AppKey("outbound", OutboundPolicy)  # where caller-given URLs may lead
