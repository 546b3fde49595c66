"""The Replicate emulator speaks Replicate's protocol: problem-detail errors, Cancel-After, Prefer: wait,
and outputs removed an hour after the prediction ends."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from adapters.emulators.emulator import ProtocolError
from adapters.emulators.replicate import ReplicateEmulator, create_app, parse_cancel_after
from adapters.emulators.tasks import ManualClock

KEY = "r8_emulator_test"
HEADERS = {"Authorization": f"Bearer {KEY}"}
MINIMAX = "/v1/models/minimax/video-01/predictions"

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def client(aiohttp_client: MakeClient, clock: ManualClock) -> Client:
    return await aiohttp_client(
        create_app(ReplicateEmulator(api_keys=[KEY], render_seconds=100, clock=clock))
    )


async def create(client: Client, path: str = MINIMAX, **extra: Any) -> tuple[int, dict[str, Any]]:
    headers = {**HEADERS, **extra.pop("headers", {})}
    response = await client.post(path, json={"input": {"prompt": "a cat"}, **extra}, headers=headers)
    body: dict[str, Any] = await response.json()
    return response.status, body


async def test_errors_are_problem_details(client: Client) -> None:
    response = await client.post(MINIMAX, json={"input": {"prompt": "a cat"}})
    assert response.status == 401 and (await response.json())["status"] == 401
    assert (await create(client, "/v1/models/nobody/nothing/predictions"))[0] == 404
    status, body = await create(client, input={"prompt": "a cat", "duration": 7})
    assert status == 422 and body["title"] == "Input validation failed" and "duration" in body["detail"]
    status, body = await create(client, "/v1/predictions", version="0" * 64)
    assert status == 422 and body["title"].startswith("Invalid version")


async def test_a_prediction_ends_and_its_output_is_removed_after_an_hour(
    client: Client, clock: ManualClock
) -> None:
    status, created = await create(client)
    assert status == 201 and created["status"] == "starting" and created["output"] is None
    clock.advance(100)
    done = await (await client.get(f"/v1/predictions/{created['id']}", headers=HEADERS)).json()
    assert done["status"] == "succeeded" and done["metrics"]["predict_time"] == 75.0
    file = await client.get(done["output"].removeprefix(str(client.make_url(""))))
    assert file.status == 200 and file.content_type == "video/mp4"
    clock.advance(3600)
    removed = await (await client.get(f"/v1/predictions/{created['id']}", headers=HEADERS)).json()
    assert removed["data_removed"] is True and removed["output"] is None
    assert (await client.get(done["output"].removeprefix(str(client.make_url(""))))).status == 404


async def test_cancel_after_cancels_a_prediction_that_runs_too_long(
    client: Client, clock: ManualClock
) -> None:
    _, created = await create(client, headers={"Cancel-After": "1m"})
    clock.advance(61)
    late = await (await client.get(f"/v1/predictions/{created['id']}", headers=HEADERS)).json()
    assert late["status"] == "canceled"
    assert (await create(client, headers={"Cancel-After": "2s"}))[0] == 422


def test_cancel_after_durations() -> None:
    assert [parse_cancel_after(v) for v in ("90", "90s", "5m", "1h30m")] == [90, 90, 300, 5400]
    with pytest.raises(ProtocolError):
        parse_cancel_after("soon")


async def test_prefer_wait_holds_the_answer_until_the_prediction_ends(aiohttp_client: MakeClient) -> None:
    client = await aiohttp_client(create_app(ReplicateEmulator(api_keys=[KEY], render_seconds=0.05)))
    status, body = await create(client, headers={"Prefer": "wait=5"})
    assert status == 201 and body["status"] == "succeeded" and body["output"]
