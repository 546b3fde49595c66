"""Render times drawn from a range, and the task timelines the admin endpoint lists (bench.fairness
reads slot-seconds from them)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.test_utils import TestClient

from adapters.emulators.__main__ import parse_args
from adapters.emulators.runway import RunwayEmulator, create_app
from adapters.emulators.tasks import ManualClock

KEY = "render-key"
HEADERS = {"Authorization": f"Bearer {KEY}", "X-Runway-Version": "2024-11-06"}
BODY = {"model": "gen4_turbo", "promptImage": "https://a.example/x.png", "ratio": "1280:720", "duration": 5}

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


def test_render_times_are_drawn_within_the_range_and_repeat_with_the_seed() -> None:
    draws = [RunwayEmulator(render_seconds=60, render_seconds_max=90, seed=3) for _ in range(2)]
    first = [draws[0].next_render_s() for _ in range(200)]
    assert first == [draws[1].next_render_s() for _ in range(200)]
    assert all(60 <= s <= 90 for s in first)
    assert max(first) - min(first) > 20  # spread over the range, not one value


def test_without_a_maximum_every_render_takes_render_seconds() -> None:
    emulator = RunwayEmulator(render_seconds=7)
    assert {emulator.next_render_s() for _ in range(20)} == {7}


def test_the_command_line_takes_the_range_and_seed() -> None:
    args = parse_args(["runway", "--render-seconds", "60", "--render-seconds-max", "90", "--seed", "5"])
    assert (args.render_seconds, args.render_seconds_max, args.seed) == (60, 90, 5)


async def test_admin_tasks_list_each_timeline(aiohttp_client: MakeClient) -> None:
    clock = ManualClock()
    emulator = RunwayEmulator(api_keys=[KEY], render_seconds=10, render_seconds_max=20, clock=clock)
    client = await aiohttp_client(create_app(emulator))
    assert (await client.post("/v1/image_to_video", json=BODY, headers=HEADERS)).status == 200
    [task] = emulator.tasks.values()
    [row] = await (await client.get("/_emulator/tasks")).json()
    assert (row["created_at"], row["begins_at"], row["finished_at"]) == (clock.now, clock.now, None)
    clock.advance(task.render_s)
    [row] = await (await client.get("/_emulator/tasks")).json()
    assert row["finished_at"] == clock.now and 10 <= row["finished_at"] - row["created_at"] <= 20
