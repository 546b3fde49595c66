"""The doitong emulator: GraphQL and REST, idempotent submits, credits, rate limits, signed webhooks."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from adapters.emulators.doitong import (
    CANCEL_MUTATION,
    GENERATE_MUTATION,
    JOB_QUERY,
    DoitongEmulator,
    create_app,
)
from adapters.emulators.tasks import ManualClock

KEY = "dt-test-key"
SECRET = "dt-secret"
BEARER = {"Authorization": f"Bearer {KEY}"}

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
MakeServer = Callable[[web.Application], Awaitable[TestServer]]


def generate_input(**options: Any) -> dict[str, Any]:
    return {
        "type": "VIDEO",
        "provider": "runway-i2v",
        "input": {"imageUrl": "https://images.example.com/p.jpg", "prompt": "turn"},
        "options": {
            "duration": 5,
            "motionIntensity": "medium",
            "version": "gen-4",
            "aspectRatio": "16:9",
            **options,
        },
    }


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emulator(clock: ManualClock) -> DoitongEmulator:
    return DoitongEmulator(
        api_keys=[KEY], render_seconds=60, clock=clock, webhook_secret=SECRET, webhook_tick_s=3600
    )


@pytest.fixture
async def client(aiohttp_client: MakeClient, emulator: DoitongEmulator) -> Client:
    return await aiohttp_client(create_app(emulator))


async def graphql(
    client: Client, query: str, variables: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    response = await client.post(
        "/graphql", json={"query": query, "variables": variables}, headers=headers or BEARER
    )
    return response.status, await response.json()


async def generate(client: Client, key: str | None = None, **options: Any) -> dict[str, Any]:
    headers = {**BEARER, **({"Idempotency-Key": key} if key else {})}
    status, body = await graphql(client, GENERATE_MUTATION, {"input": generate_input(**options)}, headers)
    assert status == 200, body
    job: dict[str, Any] = body["data"]["generate"]
    return job


async def job(client: Client, job_id: str) -> dict[str, Any]:
    status, body = await graphql(client, JOB_QUERY, {"id": job_id})
    assert status == 200, body
    found: dict[str, Any] = body["data"]["job"]
    return found


async def test_generate_then_job_query_until_completed(
    client: Client, emulator: DoitongEmulator, clock: ManualClock
) -> None:
    created = await generate(client)
    assert set(created) == {"id", "status", "type", "provider", "url", "metadata", "creditCost"}
    assert (created["status"], created["type"], created["provider"], created["url"]) == (
        "processing",
        "VIDEO",
        "runway-i2v",
        None,
    )
    assert created["creditCost"] == 50
    clock.advance(60)
    done = await job(client, created["id"])
    assert set(done) == {"id", "status", "url", "creditCost", "metadata"}  # only what was selected
    assert (done["status"], done["creditCost"], done["metadata"]["duration"]) == ("completed", 50, 5)
    video = await client.get(done["url"].removeprefix(str(client.make_url(""))))
    assert (video.status, video.content_type) == (200, "video/mp4")
    assert (emulator.recorder.count("submit"), emulator.recorder.count("status")) == (1, 1)


async def test_answers_carry_rate_limit_headers(client: Client) -> None:
    response = await client.post(
        "/graphql", json={"query": JOB_QUERY, "variables": {"id": "x"}}, headers=BEARER
    )
    assert response.status == 404
    assert response.headers["X-RateLimit-Limit"] == "60"
    assert response.headers["X-RateLimit-Remaining"] == "59"
    assert int(response.headers["X-RateLimit-Reset"]) > 0


async def test_same_idempotency_key_returns_the_same_job(client: Client, emulator: DoitongEmulator) -> None:
    first = await generate(client, key="attempt-1")
    again = await generate(client, key="attempt-1")
    assert again["id"] == first["id"]
    assert len(emulator.tasks) == 1
    status, body = await graphql(
        client,
        GENERATE_MUTATION,
        {"input": generate_input(duration=10)},
        {**BEARER, "Idempotency-Key": "attempt-1"},
    )
    assert (status, body["errors"][0]["extensions"]["code"]) == (409, "IDEMPOTENCY_KEY_REUSED")
    other = await generate(client, key="attempt-2")
    assert other["id"] != first["id"]


async def test_lost_answer_repeated_with_its_key_creates_nothing_new(
    client: Client, emulator: DoitongEmulator
) -> None:
    emulator.inject("lose_answer", "submit")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await generate(client, key="attempt-9")
    assert len(emulator.tasks) == 1
    repeated = await generate(client, key="attempt-9")
    assert list(emulator.tasks) == [repeated["id"]]
    assert emulator.submit_count() == 2


@pytest.mark.parametrize(
    ("query", "variables", "code"),
    [
        (GENERATE_MUTATION, {"input": generate_input(duration="5")}, "BAD_USER_INPUT"),
        (
            GENERATE_MUTATION,
            # doitong documents imageUrl as a URL it fetches: no data URI (the adapter sends URLs only)
            {"input": {**generate_input(), "input": {"imageUrl": "data:image/png;base64,iVBORw0KGgo="}}},
            "BAD_USER_INPUT",
        ),
        (GENERATE_MUTATION, {"input": {**generate_input(), "provider": "pika"}}, "BAD_USER_INPUT"),
        (JOB_QUERY.replace("creditCost", "price"), {"id": "x"}, "GRAPHQL_VALIDATION_FAILED"),
        (JOB_QUERY.replace("query", "mutation", 1), {"id": "x"}, "GRAPHQL_VALIDATION_FAILED"),
        ("{ me { id } }", {}, "GRAPHQL_VALIDATION_FAILED"),
    ],
)
async def test_bad_operations_are_400(
    client: Client, query: str, variables: dict[str, Any], code: str
) -> None:
    status, body = await graphql(client, query, variables)
    assert (status, body["errors"][0]["extensions"]["code"], body["data"]) == (400, code, None)


async def test_graphql_takes_bearer_and_rest_takes_x_api_key(client: Client) -> None:
    status, body = await graphql(client, JOB_QUERY, {"id": "x"}, {"X-API-Key": KEY})
    assert (status, body["errors"][0]["extensions"]["code"]) == (401, "UNAUTHENTICATED")
    rest = {
        "service": "runway-i2v",
        "prompt": "turn",
        "imageUrl": "https://images.example.com/p.jpg",
        "duration": 10,
    }
    assert (await client.post("/v1/image_to_video", json=rest, headers=BEARER)).status == 401
    created = await client.post("/v1/image_to_video", json=rest, headers={"X-API-Key": KEY})
    view = (await created.json())["data"]["imagevideo"]
    assert (created.status, view["status"], view["creditCost"], view["duration"]) == (
        200,
        "processing",
        100,
        10,
    )
    polled = await client.get(f"/v1/image_to_video/{view['id']}", headers={"X-API-Key": KEY})
    assert (await polled.json())["data"]["imagevideo"]["id"] == view["id"]


async def test_insufficient_credits_is_402_with_amounts(
    aiohttp_client: MakeClient, clock: ManualClock
) -> None:
    client = await aiohttp_client(create_app(DoitongEmulator(api_keys=[KEY], clock=clock, credits=70)))
    await generate(client)
    status, body = await graphql(client, GENERATE_MUTATION, {"input": generate_input()})
    extensions = body["errors"][0]["extensions"]
    assert (status, extensions) == (
        402,
        {"code": "INSUFFICIENT_CREDITS", "creditsRequired": 50, "creditsAvailable": 20},
    )


async def test_failed_job_is_refunded_and_cancel_works_once(
    client: Client, emulator: DoitongEmulator, clock: ManualClock
) -> None:
    emulator.inject("task_fail", code="CONTENT_MODERATION", message="flagged")
    failing = await generate(client)
    finished = await generate(client)
    clock.advance(60)
    status, body = await graphql(client, JOB_QUERY.replace("metadata", "error"), {"id": failing["id"]})
    assert body["data"]["job"]["status"] == "failed"
    assert (body["data"]["job"]["error"]["code"], body["data"]["job"]["creditCost"]) == (
        "CONTENT_MODERATION",
        0,
    )
    later = await generate(client)
    status, body = await graphql(client, CANCEL_MUTATION, {"id": later["id"]})
    assert (status, body["data"]["cancelJob"]["status"], body["data"]["cancelJob"]["creditCost"]) == (
        200,
        "cancelled",
        0,
    )
    status, body = await graphql(client, CANCEL_MUTATION, {"id": finished["id"]})
    assert (status, body["errors"][0]["extensions"]["code"]) == (400, "NOT_CANCELLABLE")
    assert emulator.recorder.count("cancel") == 2


async def test_requests_per_minute_limit_is_429_with_retry_after(
    aiohttp_client: MakeClient, clock: ManualClock
) -> None:
    emulator = DoitongEmulator(api_keys=[KEY], clock=clock, requests_per_minute=2)
    client = await aiohttp_client(create_app(emulator))
    await generate(client)
    clock.advance(10)
    await generate(client)
    response = await client.post(
        "/graphql", json={"query": JOB_QUERY, "variables": {"id": "x"}}, headers=BEARER
    )
    assert (response.status, response.headers["Retry-After"]) == (429, "50")
    assert response.headers["X-RateLimit-Remaining"] == "0"
    clock.advance(50)
    await generate(client)


async def test_webhook_is_signed_over_the_raw_body(
    aiohttp_client: MakeClient, aiohttp_server: MakeServer, emulator: DoitongEmulator, clock: ManualClock
) -> None:
    received: list[tuple[str, bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((request.headers["X-Doitong-Signature"], await request.read()))
        return web.Response(status=200)

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    hook_url = str((await aiohttp_server(receiver)).make_url("/hook"))
    client = await aiohttp_client(create_app(emulator))
    variables = {"input": {**generate_input(), "webhookUrl": hook_url}}
    status, body = await graphql(client, GENERATE_MUTATION, variables)
    assert status == 200
    clock.advance(60)
    [delivery] = await emulator.deliver_due_webhooks()
    [(signature, raw)] = received
    assert signature == "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
    assert delivery.json["id"] == body["data"]["generate"]["id"]
    assert (delivery.json["status"], delivery.json["service"]) == ("completed", "runway-i2v")
    assert set(delivery.json) == {"id", "status", "url", "service", "createdAt", "completedAt", "metadata"}


async def test_webhooks_go_out_on_their_own_and_failures_are_recorded(
    aiohttp_client: MakeClient, aiohttp_server: MakeServer
) -> None:
    arrived = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        arrived.set()
        return web.Response(status=200)

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    hook_url = str((await aiohttp_server(receiver)).make_url("/hook"))
    emulator = DoitongEmulator(api_keys=[KEY], render_seconds=0.05, webhook_tick_s=0.01)
    client = await aiohttp_client(create_app(emulator))
    for url in (hook_url, "http://127.0.0.1:9/unreachable"):
        status, _ = await graphql(
            client, GENERATE_MUTATION, {"input": {**generate_input(), "webhookUrl": url}}
        )
        assert status == 200
    await asyncio.wait_for(arrived.wait(), timeout=5)

    async def both_recorded() -> None:
        while len(emulator.webhooks) < 2:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(both_recorded(), timeout=5)
    outcomes = {d.url: (d.status, d.error is None) for d in emulator.webhooks}
    assert outcomes == {hook_url: (200, True), "http://127.0.0.1:9/unreachable": (None, False)}
