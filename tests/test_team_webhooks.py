"""A finished job is POSTed to its webhook_url, signed with BROKER_WEBHOOK_SECRET."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

from aiohttp import web

from broker.webhooks import sign
from tests.conftest import auth
from tests.test_api_jobs import wait_for_status

SECRET = "team-webhook-secret-42"


async def test_finished_job_is_delivered_signed(make_client: Any, aiohttp_server: Any) -> None:
    received: list[tuple[dict[str, str], bytes]] = []
    arrived = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        arrived.set()
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    server = await aiohttp_server(receiver)
    client = await make_client(webhook_secret=SECRET)
    body = {"prompt": "x", "webhook_url": f"http://127.0.0.1:{server.port}/hook"}
    job = await (await client.post("/v1/jobs", json=body, headers=auth())).json()
    await wait_for_status(client, job["id"], "succeeded")
    await asyncio.wait_for(arrived.wait(), 5)

    headers, raw = received[0]
    payload = json.loads(raw)
    assert payload["event"] == "job.succeeded" and payload["job"]["id"] == job["id"]
    timestamp = headers["X-Broker-Timestamp"]
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()
    assert headers["X-Broker-Signature"] == f"sha256={expected}"
    assert sign("another-secret", int(timestamp), raw) != headers["X-Broker-Signature"]
    assert len(received) == 1
