"""The PixelAPI emulator: multipart seedance, JSON or multipart video, credits, refunds, concurrency cap."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from PIL import Image

from adapters.emulators.media import probe
from adapters.emulators.pixelapi import PixelApiEmulator, create_app
from adapters.emulators.tasks import ManualClock

KEY = "px-test-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


def png(width: int = 320, height: int = 240) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def seedance_form(image: bytes | None = None, **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    values = {"prompt": "slow zoom", "resolution": "1080p", "duration": "5", "camera_fixed": "true", **fields}
    for name, value in values.items():
        form.add_field(name, value)
    form.add_field("image", png() if image is None else image, filename="cat.png", content_type="image/png")
    return form


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emulator(clock: ManualClock) -> PixelApiEmulator:
    return PixelApiEmulator(api_keys=[KEY], render_seconds=120, clock=clock, credits=1000)


@pytest.fixture
async def client(aiohttp_client: MakeClient, emulator: PixelApiEmulator) -> Client:
    return await aiohttp_client(create_app(emulator))


async def generate(client: Client, data: Any = None, path: str = "/v1/seedance/generate") -> dict[str, Any]:
    kwargs = {"json": data} if isinstance(data, dict) else {"data": data or seedance_form()}
    response = await client.post(path, headers=HEADERS, **kwargs)
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def poll(client: Client, generation_id: str, kind: str = "seedance") -> dict[str, Any]:
    response = await client.get(f"/v1/{kind}/{generation_id}", headers=HEADERS)
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


async def test_seedance_generation_completes_with_credits(
    client: Client, emulator: PixelApiEmulator, clock: ManualClock
) -> None:
    submitted = await generate(client)
    assert (submitted["status"], submitted["estimated_seconds"]) == ("processing", 120)
    assert (submitted["credits_used"], submitted["credits_remaining"]) == (55, 945)
    clock.advance(60)
    halfway = await poll(client, submitted["generation_id"])
    assert (halfway["status"], halfway["estimated_seconds"], halfway["output_url"]) == (
        "processing",
        60,
        None,
    )
    clock.advance(60)
    done = await poll(client, submitted["generation_id"])
    assert (done["status"], done["credits_used"], done["processing_ms"]) == ("completed", 55, 120_000)
    video = await client.get(done["output_url"].removeprefix(str(client.make_url(""))))
    codec, width, height, duration = probe(await video.read())
    assert (codec, width, height) == ("h264", 960, 720)  # the 320x240 image's 4:3, at 720p
    assert duration == pytest.approx(6, abs=0.1)  # a second longer than asked, as PixelAPI delivers
    recorded = emulator.recorder.of("submit")[0]
    assert recorded.form == {
        "prompt": "slow zoom",
        "resolution": "1080p",
        "duration": "5",
        "camera_fixed": "true",
    }
    assert recorded.files["image"].data == png()
    assert recorded.files["image"].filename == "cat.png"


@pytest.mark.parametrize(
    ("form", "field"),
    [
        (seedance_form(resolution="4k"), "resolution"),
        (seedance_form(duration="10"), "duration"),
        (seedance_form(camera_fixed="yes"), "camera_fixed"),
        (seedance_form(image=b"not an image"), "image"),
    ],
)
async def test_seedance_rejects_bad_fields(client: Client, form: aiohttp.FormData, field: str) -> None:
    response = await client.post("/v1/seedance/generate", data=form, headers=HEADERS)
    assert response.status == 422
    assert (await response.json())["field"] == field


async def test_seedance_needs_multipart_with_an_image(client: Client, emulator: PixelApiEmulator) -> None:
    as_json = await client.post("/v1/seedance/generate", json={"prompt": "x"}, headers=HEADERS)
    assert as_json.status == 415
    no_image = aiohttp.FormData({"prompt": "x", "resolution": "720p"}, default_to_multipart=True)
    response = await client.post("/v1/seedance/generate", data=no_image, headers=HEADERS)
    assert (response.status, (await response.json())["field"]) == (422, "image")
    assert emulator.tasks == {}


async def test_video_endpoint_takes_json_or_multipart_at_90_credits(client: Client) -> None:
    text = await generate(
        client, {"prompt": "a valley", "resolution": "720p", "duration": 5}, "/v1/video/generate"
    )
    assert text["credits_used"] == 90
    animated = await generate(client, seedance_form(), "/v1/video/generate")
    assert (animated["credits_used"], animated["credits_remaining"]) == (90, 820)
    assert (await client.get(f"/v1/seedance/{text['generation_id']}", headers=HEADERS)).status == 404
    assert (await poll(client, text["generation_id"], "video"))["status"] == "processing"


async def test_failed_generation_is_refunded_with_only_an_error_message(
    client: Client, emulator: PixelApiEmulator, clock: ManualClock
) -> None:
    emulator.inject("task_fail", code="content_blocked", message="blocked by the safety filter")
    submitted = await generate(client)
    assert submitted["credits_remaining"] == 945
    clock.advance(120)
    failed = await poll(client, submitted["generation_id"])
    assert failed["status"] == "failed" and "error_code" not in failed  # PixelAPI documents none
    assert failed["error_message"] == "blocked by the safety filter"
    assert (failed["credits_used"], failed["credits_remaining"]) == (0, 1000)


async def test_sixth_concurrent_job_is_429_with_retry_after(client: Client, clock: ManualClock) -> None:
    for _ in range(5):
        await generate(client)
    refused = await client.post("/v1/seedance/generate", data=seedance_form(), headers=HEADERS)
    assert (refused.status, refused.headers["Retry-After"]) == (429, "30")
    assert (await refused.json())["error"] == "concurrent_limit"
    clock.advance(120)
    await generate(client)


async def test_out_of_credits_is_402(aiohttp_client: MakeClient, clock: ManualClock) -> None:
    client = await aiohttp_client(create_app(PixelApiEmulator(api_keys=[KEY], credits=100, clock=clock)))
    await generate(client)
    refused = await client.post("/v1/seedance/generate", data=seedance_form(), headers=HEADERS)
    assert (refused.status, (await refused.json())["error"]) == (402, "insufficient_credits")


async def test_bad_key_is_401_and_there_is_no_cancel(client: Client) -> None:
    response = await client.post(
        "/v1/seedance/generate", data=seedance_form(), headers={"Authorization": "Bearer x"}
    )
    assert (response.status, (await response.json())["error"]) == (401, "unauthorized")
    generation_id = (await generate(client))["generation_id"]
    cancel = await client.post(f"/v1/seedance/{generation_id}/cancel", headers=HEADERS)
    assert cancel.status in (404, 405)
