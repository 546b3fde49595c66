"""A finished job is POSTed to its webhook_url, always signed, only where the outbound policy allows,
never following a redirect, retried with backoff; the job shows the last delivery."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.outbound import OutboundPolicy
from broker.jobs.team_webhooks import RETRY_DELAYS_S, TeamWebhooks, sign
from broker.schema import DeliveryStatus, JobStatus
from broker.store import JobRecord, Store
from tests.support.api import wait_for_status
from tests.support.deployment import auth
from tests.support.factories import job_record

SECRET = "team-webhook-secret-42"
LOOPBACK_ALLOWED = OutboundPolicy.parse("127.0.0.1")


class Receiver:
    """A webhook receiver on 127.0.0.1 that answers each POST with the next scripted status."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.received.append((request.path, dict(request.headers), await request.read()))
        self.arrived.set()
        status = self.statuses.pop(0) if self.statuses else 204
        if 300 <= status < 400:
            return web.Response(status=status, headers={"Location": "/elsewhere"})
        return web.Response(status=status)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, TestServer]]:
    hooks = Receiver()
    app = web.Application()
    app.router.add_post("/{path:.*}", hooks.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield hooks, server
    finally:
        await server.close()


async def test_finished_job_is_delivered_signed_and_the_job_says_so(
    make_client: Any, receiver: tuple[Receiver, TestServer]
) -> None:
    hooks, server = receiver
    client = await make_client(webhook_secret=SECRET, outbound_allow="127.0.0.1")
    body = {"prompt": "x", "webhook_url": f"http://127.0.0.1:{server.port}/hook"}
    job = await (await client.post("/v1/jobs", json=body, headers=auth())).json()
    await wait_for_status(client, job["id"], "succeeded")
    await asyncio.wait_for(hooks.arrived.wait(), 5)

    path, headers, raw = hooks.received[0]
    payload = json.loads(raw)
    assert path == "/hook" and payload["event"] == "job.succeeded" and payload["job"]["id"] == job["id"]
    timestamp = headers["X-Broker-Timestamp"]
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()
    assert headers["X-Broker-Signature"] == f"sha256={expected}"
    assert sign("another-secret", int(timestamp), raw) != headers["X-Broker-Signature"]
    for _ in range(200):
        shown = await (await client.get(f"/v1/jobs/{job['id']}", headers=auth())).json()
        if shown["webhook"] is not None:
            break
        await asyncio.sleep(0.01)
    assert shown["webhook"]["status"] == "delivered"
    assert shown["webhook"]["attempts"] == 1 and shown["webhook"]["http_status"] == 204
    assert len(hooks.received) == 1


async def test_without_a_secret_a_webhook_url_is_refused_at_submit(make_client: Any) -> None:
    client = await make_client(webhook_secret=None)
    body = {"prompt": "x", "webhook_url": "https://hooks.example.com/done"}
    response = await client.post("/v1/jobs", json=body, headers=auth())
    error = (await response.json())["error"]
    assert response.status == 400 and error["code"] == "invalid_request"
    assert error["details"][0]["field"] == "webhook_url" and "BROKER_WEBHOOK_SECRET" in error["message"]
    assert (await client.post("/v1/jobs", json={"prompt": "x"}, headers=auth())).status == 202


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/internal-admin/delete-everything",
        "https://127.0.0.1:{port}/hook",
        "https://localhost:{port}/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]:{port}/hook",
        "https://10.0.0.1/hook",
        "http://hooks.example.com/plain-http",
    ],
)
async def test_a_webhook_url_inside_is_refused_at_submit_and_nothing_is_sent(
    make_client: Any, receiver: tuple[Receiver, TestServer], url: str
) -> None:
    hooks, server = receiver
    client = await make_client(webhook_secret=SECRET)
    body = {"prompt": "x", "webhook_url": url.format(port=server.port)}
    response = await client.post("/v1/jobs", json=body, headers=auth())
    error = (await response.json())["error"]
    assert response.status == 400, error
    assert error["details"][0]["field"] == "webhook_url"
    assert (await client.post("/v1/jobs", json={"prompt": "x"}, headers=auth())).status == 202
    assert hooks.received == []


class Sleeps:
    def __init__(self) -> None:
        self.seen: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seen.append(seconds)
        await asyncio.sleep(0)


async def _finished(store: Store, url: str) -> tuple[JobRecord, JobRecord]:
    record, _ = await store.create_job(job_record(webhook_url=url))
    done = record.evolve(status=JobStatus.SUCCEEDED)
    stored = await store.replace_job(done)
    assert stored is not None
    return record, stored


async def _deliver(store: Store, hooks: TeamWebhooks, url: str) -> JobRecord:
    _, after = await _finished(store, url)
    await hooks.deliver(after)
    await hooks.close()
    final = await store.get_job(after.id)
    assert final is not None
    return final


async def test_deliveries_retry_with_backoff_and_the_job_shows_the_last_one(
    store: Store, receiver: tuple[Receiver, TestServer]
) -> None:
    hooks, server = receiver
    hooks.statuses = [503, 500]
    sleeps = Sleeps()
    webhooks = TeamWebhooks(store, SECRET, LOOPBACK_ALLOWED, sleep=sleeps, clock=lambda: 1_790_000_000.0)
    final = await _deliver(store, webhooks, f"http://127.0.0.1:{server.port}/hook")
    assert len(hooks.received) == 3 and sleeps.seen == [0.0, *RETRY_DELAYS_S[:2]]
    assert final.job.webhook is not None
    assert final.job.webhook.status is DeliveryStatus.DELIVERED and final.job.webhook.attempts == 3


async def test_retries_are_bounded(store: Store, receiver: tuple[Receiver, TestServer]) -> None:
    hooks, server = receiver
    hooks.statuses = [503] * 10
    webhooks = TeamWebhooks(store, SECRET, LOOPBACK_ALLOWED, sleep=Sleeps(), clock=lambda: 0.0)
    final = await _deliver(store, webhooks, f"http://127.0.0.1:{server.port}/hook")
    assert len(hooks.received) == 1 + len(RETRY_DELAYS_S)
    assert final.job.webhook is not None and final.job.webhook.status is DeliveryStatus.FAILED
    assert final.job.webhook.http_status == 503


async def test_a_redirect_is_not_followed(store: Store, receiver: tuple[Receiver, TestServer]) -> None:
    hooks, server = receiver
    hooks.statuses = [307]
    webhooks = TeamWebhooks(store, SECRET, LOOPBACK_ALLOWED, sleep=Sleeps(), clock=lambda: 0.0)
    final = await _deliver(store, webhooks, f"http://127.0.0.1:{server.port}/hook")
    assert [path for path, _, _ in hooks.received] == ["/hook"]
    assert final.job.webhook is not None and final.job.webhook.status is DeliveryStatus.FAILED
    assert "redirect" in (final.job.webhook.error or "")


async def test_a_loopback_receiver_is_refused_without_the_allow_list(
    store: Store, receiver: tuple[Receiver, TestServer]
) -> None:
    """A job stored with a URL the policy refuses (the allow-list changed since) is never sent."""
    hooks, server = receiver
    webhooks = TeamWebhooks(store, SECRET, OutboundPolicy(), sleep=Sleeps(), clock=lambda: 0.0)
    final = await _deliver(store, webhooks, f"https://127.0.0.1:{server.port}/hook")
    assert hooks.received == []
    assert final.job.webhook is not None and final.job.webhook.status is DeliveryStatus.FAILED
    assert "loopback" in (final.job.webhook.error or "")


async def test_nothing_is_sent_unsigned(store: Store, receiver: tuple[Receiver, TestServer]) -> None:
    hooks, server = receiver
    webhooks = TeamWebhooks(store, None, LOOPBACK_ALLOWED, sleep=Sleeps(), clock=lambda: 0.0)
    final = await _deliver(store, webhooks, f"http://127.0.0.1:{server.port}/hook")
    assert hooks.received == []
    assert final.job.webhook is not None and "BROKER_WEBHOOK_SECRET" in (final.job.webhook.error or "")
