"""Faults every emulator can inject, from tests and over HTTP, in each provider's own error format."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from adapters.emulators.doitong import GENERATE_MUTATION
from adapters.emulators.emulator import ProviderEmulator
from adapters.emulators.faults import Endpoint, Fault, FaultKind
from adapters.emulators.media import make_mp4, probe, size_for_ratio
from adapters.emulators.runway import RunwayEmulator, create_app
from adapters.emulators.sandbox import PROVIDERS
from adapters.emulators.tasks import ManualClock

KEY = "fault-key"
RUNWAY_HEADERS = {"Authorization": f"Bearer {KEY}", "X-Runway-Version": "2024-11-06"}
BODY = {"model": "gen4_turbo", "promptImage": "https://a.example/x.png", "ratio": "1280:720", "duration": 5}

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emulator(clock: ManualClock) -> RunwayEmulator:
    return RunwayEmulator(api_keys=[KEY], render_seconds=10, clock=clock)


@pytest.fixture
async def client(aiohttp_client: MakeClient, emulator: RunwayEmulator) -> Client:
    return await aiohttp_client(create_app(emulator))


async def submit(client: Client) -> aiohttp.ClientResponse:
    return await client.post("/v1/image_to_video", json=BODY, headers=RUNWAY_HEADERS)


async def test_rate_limit_answers_429_with_retry_after_once(client: Client, emulator: RunwayEmulator) -> None:
    emulator.inject("rate_limit", "submit", retry_after_s=2.5)
    limited = await submit(client)
    assert (limited.status, limited.headers["Retry-After"]) == (429, "3")
    assert "error" in await limited.json()
    assert (await submit(client)).status == 200
    assert emulator.submit_count() == 2
    assert len(emulator.tasks) == 1


async def test_server_errors_fire_count_times(client: Client, emulator: RunwayEmulator) -> None:
    emulator.inject("server_error", "submit", count=2, status=502)
    statuses = [(await submit(client)).status for _ in range(3)]
    assert statuses == [502, 502, 200]
    assert emulator.faults.pending == []


async def test_faults_target_their_endpoint_only(client: Client, emulator: RunwayEmulator) -> None:
    emulator.inject("server_error", "status", count=None)
    created = await submit(client)
    assert created.status == 200
    task_id = (await created.json())["id"]
    for _ in range(3):
        assert (await client.get(f"/v1/tasks/{task_id}", headers=RUNWAY_HEADERS)).status == 503
    emulator.faults.clear()
    assert (await client.get(f"/v1/tasks/{task_id}", headers=RUNWAY_HEADERS)).status == 200


async def test_slow_answer_trips_a_client_timeout(client: Client, emulator: RunwayEmulator) -> None:
    emulator.inject("slow", "submit", delay_s=0.5)
    with pytest.raises(asyncio.TimeoutError):
        await client.post(
            "/v1/image_to_video", json=BODY, headers=RUNWAY_HEADERS, timeout=aiohttp.ClientTimeout(total=0.1)
        )
    emulator.inject("slow", "submit", delay_s=0.2)
    started = time.monotonic()
    assert (await submit(client)).status == 200
    assert time.monotonic() - started >= 0.2


async def test_drop_closes_the_connection_before_handling(client: Client, emulator: RunwayEmulator) -> None:
    emulator.inject("drop", "submit")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await submit(client)
    assert emulator.tasks == {}
    assert emulator.submit_count() == 1


async def test_lost_answer_still_creates_the_task(client: Client, emulator: RunwayEmulator) -> None:
    emulator.inject("lose_answer", "submit")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await submit(client)
    assert len(emulator.tasks) == 1


async def test_malformed_json_keeps_the_status(client: Client, emulator: RunwayEmulator) -> None:
    task_id = (await (await submit(client)).json())["id"]
    emulator.inject("malformed", "status")
    response = await client.get(f"/v1/tasks/{task_id}", headers=RUNWAY_HEADERS)
    assert (response.status, response.content_type) == (200, "application/json")
    with pytest.raises(ValueError):
        await response.json()


async def test_download_can_fail_too(client: Client, emulator: RunwayEmulator, clock: ManualClock) -> None:
    task_id = (await (await submit(client)).json())["id"]
    clock.advance(10)
    emulator.inject("server_error", "download")
    path = f"/_emulator/media/{task_id}.mp4"
    assert (await client.get(path)).status == 503
    assert (await client.get(path)).status == 200


async def test_admin_endpoint_sets_lists_and_clears_faults(client: Client, emulator: RunwayEmulator) -> None:
    faults = [
        {"kind": "rate_limit", "endpoint": "submit", "retry_after_s": 7},
        {"kind": "task_fail", "code": "SAFETY.INPUT.TEXT", "count": 2},
    ]
    added = await client.post("/_emulator/faults", json=faults)
    assert added.status == 201
    listed = await (await client.get("/_emulator/faults")).json()
    assert [(f["kind"], f["count"]) for f in listed] == [("rate_limit", 1), ("task_fail", 2)]
    limited = await submit(client)
    assert (limited.status, limited.headers["Retry-After"]) == (429, "7")
    created = await submit(client)
    assert emulator.tasks[(await created.json())["id"]].fail_code == "SAFETY.INPUT.TEXT"
    assert (await client.delete("/_emulator/faults")).status == 204
    assert await (await client.get("/_emulator/faults")).json() == []
    assert emulator.faults.pending == []


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "explode"},
        {"kind": "slow", "endpoint": "nowhere"},
        {"kind": "slow", "count": 0},
        {"kind": "slow", "x": 1},
        [1],
    ],
)
async def test_admin_endpoint_refuses_bad_faults(client: Client, bad: Any) -> None:
    response = await client.post("/_emulator/faults", json=bad)
    assert response.status == 400


async def test_admin_endpoint_lists_requests_but_never_itself(
    client: Client, emulator: RunwayEmulator
) -> None:
    await submit(client)
    await client.get("/_emulator/faults")
    recorded = await (await client.get("/_emulator/requests")).json()
    assert [(r["method"], r["path"], r["endpoint"]) for r in recorded] == [
        ("POST", "/v1/image_to_video", "submit")
    ]
    assert recorded[0]["json"] == BODY
    assert recorded[0]["headers"]["X-Runway-Version"] == "2024-11-06"
    assert recorded[0]["headers"]["Authorization"] == "Bearer ***"  # the key never leaves over HTTP
    assert emulator.requests[0].headers["Authorization"] == f"Bearer {KEY}"  # tests in-process see it
    tasks = await (await client.get("/_emulator/tasks")).json()
    assert [t["phase"] for t in tasks] == ["queued"]
    assert (await client.delete("/_emulator/requests")).status == 204
    assert emulator.requests == []


async def test_unknown_paths_are_recorded(client: Client, emulator: RunwayEmulator) -> None:
    assert (await client.post("/v1/image-to-video", json=BODY, headers=RUNWAY_HEADERS)).status == 404
    assert [(r.path, r.endpoint) for r in emulator.requests] == [("/v1/image-to-video", Endpoint.ANY)]


def test_fault_json_round_trip() -> None:
    fault = Fault(FaultKind.HTTP_ERROR, Endpoint.CANCEL, count=None, status=402, code="INSUFFICIENT_BALANCE")
    assert Fault.from_json(fault.to_json()) == fault


SUBMITS: dict[str, tuple[str, dict[str, Any]]] = {
    "runway": ("/v1/image_to_video", BODY),
    "fal": ("/fal-ai/veo3", {"prompt": "x"}),
    "muvi": ("/v1/jobs/submit", {}),
    "pixelapi": ("/v1/video/generate", {}),
    "doitong": ("/graphql", {"query": GENERATE_MUTATION, "variables": {}}),
    "replicate": ("/v1/models/minimax/video-01/predictions", {"input": {"prompt": "x"}}),
}
RATE_LIMIT_BODIES: dict[str, Callable[[Any], Any]] = {
    "runway": lambda body: isinstance(body["error"], str),
    "fal": lambda body: body["error_type"] == "rate_limited",
    "muvi": lambda body: (body["success"], body["error"]["code"]) == (False, "CONCURRENT_JOBS_EXCEEDED"),
    "pixelapi": lambda body: body["error"] == "rate_limited",
    "doitong": lambda body: body["errors"][0]["extensions"]["code"] == "RATE_LIMITED",
    # RFC 7807 problem details, as the `replicate` client reads them.
    "replicate": lambda body: (body["status"], body["title"]) == (429, "Request was throttled."),
}


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
async def test_each_provider_answers_faults_in_its_own_format(
    aiohttp_client: MakeClient, provider: str
) -> None:
    spec = PROVIDERS[provider]
    emulator: ProviderEmulator = spec.make_emulator(api_keys=[KEY])
    client = await aiohttp_client(spec.make_app(emulator))
    emulator.inject("rate_limit", "submit", retry_after_s=4)
    emulator.inject("http_error", "submit", status=402, code="OUT_OF_MONEY", message="pay up")
    path, body = SUBMITS[provider]
    limited = await client.post(path, json=body)
    assert (limited.status, limited.headers["Retry-After"]) == (429, "4")
    assert RATE_LIMIT_BODIES[provider](await limited.json())
    unpaid = await client.post(path, json=body)
    assert unpaid.status == 402
    assert "pay up" in await unpaid.text()
    assert emulator.recorder.count("submit") == 2


@pytest.mark.parametrize(
    ("ratio", "size"), [((16, 9), (1280, 720)), ((9, 16), (720, 1280)), ((1584, 672), (1698, 720))]
)
def test_outputs_keep_the_ratio_at_720p_and_even(ratio: tuple[int, int], size: tuple[int, int]) -> None:
    assert size_for_ratio(*ratio) == size
    codec, width, height, duration = probe(make_mp4(*size, 2))
    assert (codec, width, height) == ("h264", *size)
    assert duration == pytest.approx(2, abs=0.3)
