"""A finished job is POSTed to its webhook_url, always signed, only where the outbound policy allows,
never following a redirect, retried with backoff; the job shows the last delivery."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.outbound import OutboundPolicy
from broker.jobs.team_webhooks import RECHECK_S, RETRY_DELAYS_S, TeamWebhooks, enqueue, sign
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
    assert path == "/hook" and payload["type"] == "job.succeeded" and payload["data"]["id"] == job["id"]
    # Standard Webhooks: id, timestamp, and v1 = base64 HMAC-SHA256 of "<id>.<timestamp>.<body>".
    message_id, stamp = headers["webhook-id"], headers["webhook-timestamp"]
    assert message_id == f"msg_{job['id']}_succeeded"
    mac = hmac.new(SECRET.encode(), f"{message_id}.{stamp}.".encode() + raw, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(mac).decode()
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


class Clock:
    """The senders' clock: each test moves it past a retry's delay by hand."""

    def __init__(self, now: float = 1_790_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _finished(store: Store, url: str) -> JobRecord:
    record, _ = await store.create_job(job_record(webhook_url=url))
    done = record.evolve(status=JobStatus.SUCCEEDED)
    await enqueue(store, done)
    stored = await store.replace_job(done)
    assert stored is not None
    return stored


async def _deliver(store: Store, hooks: TeamWebhooks, clock: Clock, url: str, rounds: int = 10) -> JobRecord:
    """Send from the outbox until it is empty, moving the clock to each retry's due time."""
    done = await _finished(store, url)
    for _ in range(rounds):
        await hooks.send_due()
        clock.now += max(RETRY_DELAYS_S) + 1
    await hooks.close()
    final = await store.get_job(done.id)
    assert final is not None
    assert await store.claim_webhooks(clock.now + 10**6, 1.0) == []  # nothing left in the outbox
    return final


async def test_deliveries_retry_with_backoff_and_the_job_shows_the_last_one(
    store: Store, receiver: tuple[Receiver, TestServer]
) -> None:
    hooks, server = receiver
    hooks.statuses = [503, 500]
    clock = Clock()
    webhooks = TeamWebhooks(store, SECRET, LOOPBACK_ALLOWED, clock=clock)
    done = await _finished(store, f"http://127.0.0.1:{server.port}/hook")
    assert await webhooks.send_due() == 1 and len(hooks.received) == 1
    assert await webhooks.send_due() == 0  # due again only after the first delay
    clock.now += RETRY_DELAYS_S[0]
    assert await webhooks.send_due() == 1 and len(hooks.received) == 2
    clock.now += RETRY_DELAYS_S[1]
    assert await webhooks.send_due() == 1 and len(hooks.received) == 3
    await webhooks.close()
    final = await store.get_job(done.id)
    assert final is not None and final.job.webhook is not None
    assert final.job.webhook.status is DeliveryStatus.DELIVERED and final.job.webhook.attempts == 3
    ids = {headers["webhook-id"] for _, headers, _ in hooks.received}
    assert ids == {f"msg_{done.id}_succeeded"}  # one id on every retry: the receiver de-duplicates


async def test_retries_are_bounded(store: Store, receiver: tuple[Receiver, TestServer]) -> None:
    hooks, server = receiver
    hooks.statuses = [503] * 10
    clock = Clock()
    webhooks = TeamWebhooks(store, SECRET, LOOPBACK_ALLOWED, clock=clock)
    final = await _deliver(store, webhooks, clock, f"http://127.0.0.1:{server.port}/hook")
    assert len(hooks.received) == 1 + len(RETRY_DELAYS_S)
    assert final.job.webhook is not None and final.job.webhook.status is DeliveryStatus.FAILED
    assert final.job.webhook.http_status == 503


async def test_a_redirect_is_not_followed(store: Store, receiver: tuple[Receiver, TestServer]) -> None:
    hooks, server = receiver
    hooks.statuses = [307]
    clock = Clock()
    webhooks = TeamWebhooks(store, SECRET, LOOPBACK_ALLOWED, clock=clock)
    final = await _deliver(store, webhooks, clock, f"http://127.0.0.1:{server.port}/hook")
    assert [path for path, _, _ in hooks.received] == ["/hook"]
    assert final.job.webhook is not None and final.job.webhook.status is DeliveryStatus.FAILED
    assert "redirect" in (final.job.webhook.error or "")


async def test_a_loopback_receiver_is_refused_without_the_allow_list(
    store: Store, receiver: tuple[Receiver, TestServer]
) -> None:
    """A job stored with a URL the policy refuses (the allow-list changed since) is never sent."""
    hooks, server = receiver
    clock = Clock()
    webhooks = TeamWebhooks(store, SECRET, OutboundPolicy(), clock=clock)
    final = await _deliver(store, webhooks, clock, f"https://127.0.0.1:{server.port}/hook")
    assert hooks.received == []
    assert final.job.webhook is not None and final.job.webhook.status is DeliveryStatus.FAILED
    assert "loopback" in (final.job.webhook.error or "")


async def test_nothing_is_sent_unsigned(store: Store, receiver: tuple[Receiver, TestServer]) -> None:
    hooks, server = receiver
    clock = Clock()
    webhooks = TeamWebhooks(store, None, LOOPBACK_ALLOWED, clock=clock)
    final = await _deliver(store, webhooks, clock, f"http://127.0.0.1:{server.port}/hook")
    assert hooks.received == []
    assert final.job.webhook is not None and "BROKER_WEBHOOK_SECRET" in (final.job.webhook.error or "")


async def test_a_delivery_found_before_its_job_ended_waits_for_the_end(
    store: Store, receiver: tuple[Receiver, TestServer]
) -> None:
    """The end's delivery is queued before the end is written: a sender in between sends nothing."""
    hooks, server = receiver
    clock = Clock()
    record, _ = await store.create_job(job_record(webhook_url=f"http://127.0.0.1:{server.port}/hook"))
    await enqueue(store, record.evolve(status=JobStatus.SUCCEEDED))
    webhooks = TeamWebhooks(store, SECRET, LOOPBACK_ALLOWED, clock=clock)
    assert await webhooks.send_due() == 1 and hooks.received == []  # not ended yet: looked at later
    assert await store.replace_job(record.evolve(status=JobStatus.SUCCEEDED)) is not None
    clock.now += RECHECK_S
    assert await webhooks.send_due() == 1 and len(hooks.received) == 1
    await webhooks.close()


async def test_two_senders_never_take_one_delivery_at_once(
    store: Store, receiver: tuple[Receiver, TestServer]
) -> None:
    hooks, server = receiver
    clock = Clock()
    await _finished(store, f"http://127.0.0.1:{server.port}/hook")
    first = TeamWebhooks(store, SECRET, LOOPBACK_ALLOWED, clock=clock)
    second = TeamWebhooks(store, SECRET, LOOPBACK_ALLOWED, clock=clock)
    taken = await asyncio.gather(first.send_due(), second.send_due())
    assert sorted(taken) == [0, 1] and len(hooks.received) == 1
    await first.close()
    await second.close()
