"""The catalog and the adapters checked against the official clients, not against the seed pages.

Every Runway route of config.yaml, in every mode, duration, aspect ratio and resolution it claims,
is turned into the body the adapter would send and checked against `runwayml`'s request types; the
Runway emulator's per-model rules must be the SDK's. Every fal route's submit must go on the wire
exactly as `fal_client` sends the same input (path, query, auth header, bare JSON body).
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import fal_client
import fal_client.client
import pytest

from adapters import runway as runway_adapter
from adapters.base import ImageInput, RenderTask
from adapters.emulators import runway as runway_emulator
from adapters.emulators.fal import FalEmulator
from adapters.emulators.fal import create_app as create_fal
from adapters.errors import Rejected
from adapters.fal import FalAdapter, request_body
from broker.config import load_config
from broker.schema import JobRequest, Mode
from pricing.catalog import RouteSpec
from tests.support import runway_sdk
from tests.support.adapters import CONFIG_PATH, FakeTime, context, serving

IMAGE = ImageInput(content_type="image/png", url="https://img.example/cat.png")
ROUTES = load_config(CONFIG_PATH).routes


def _routes(provider: str) -> list[RouteSpec]:
    return [route for route in ROUTES if route.provider == provider]


def _task(route: RouteSpec, mode: Mode, **fields: object) -> RenderTask:
    body: dict[str, object] = {"prompt": "a lighthouse at dusk", "mode": mode.value, "seed": 7, **fields}
    image = IMAGE if mode is Mode.IMAGE_TO_VIDEO else None
    if image is not None:
        body["image_url"] = IMAGE.url
    return RenderTask(
        attempt_id="att-1", model=route.model, request=JobRequest.model_validate(body), image=image
    )


def _runway_problems(route: RouteSpec) -> list[str]:
    found: list[str] = []
    for mode in route.modes:
        for duration in route.durations.all():
            for ratio in route.aspect_ratios_for(mode):
                for resolution in route.resolutions:
                    audios = [False, True] if "audio" in route.features else [False]
                    for audio in audios:
                        what = f"{route.model} {mode.value} {duration}s {ratio.value} {resolution.value}"
                        what += f" audio={audio}"
                        task = _task(
                            route,
                            mode,
                            duration_s=duration,
                            aspect_ratio=ratio.value,
                            resolution=resolution.value,
                            audio=audio,
                        )
                        try:
                            body = runway_adapter.request_body(task)
                        except Rejected as exc:
                            found.append(f"{what}: the adapter cannot send it ({exc})")
                            continue
                        found += [f"{what}: {p}" for p in runway_sdk.problems(mode.value, body)]
    return found


def test_every_runway_route_is_a_request_the_sdk_accepts() -> None:
    found = [problem for route in _routes("runway") for problem in _runway_problems(route)]
    assert not found, "\n".join(found)


def test_the_runway_emulator_accepts_per_model_what_the_sdk_accepts() -> None:
    for endpoint, models in runway_emulator.MODELS_BY_ENDPOINT.items():
        sdk = runway_sdk.BY_ENDPOINT[endpoint]
        assert set(models) <= set(sdk), f"{endpoint}: the emulator takes models the SDK does not have"
        for name, model in models.items():
            facts = sdk[name]
            assert model.ratios == facts.ratios, f"{endpoint} {name} ratios"
            if facts.durations is not None:
                assert model.durations == facts.durations, f"{endpoint} {name} durations"
            assert model.prompt_text_required == ("promptText" in facts.required), (
                f"{endpoint} {name} promptText"
            )
            assert (model.default_duration is None) == ("duration" in facts.required), (
                f"{endpoint} {name} duration"
            )
            assert (model.credits_per_second_silent is not None) == ("audio" in facts.fields), f"{name} audio"


@pytest.mark.parametrize("endpoint", ["image_to_video", "text_to_video"])
def test_the_runway_emulator_refuses_a_model_the_sdk_dropped(endpoint: str) -> None:
    body = {"model": "gen3a_turbo", "promptImage": IMAGE.url, "ratio": "1280:768", "duration": 5}
    with pytest.raises(runway_emulator.ProtocolError) as raised:
        runway_emulator.validate(endpoint, body)
    assert raised.value.status == 400
    assert raised.value.message == "Validation of body failed"
    assert raised.value.extra["issues"][0]["path"] == ["model"]


def test_the_runway_emulator_refuses_a_ratio_another_model_takes() -> None:
    body = {"model": "gen4.5", "promptText": "x", "ratio": "1920:1080", "duration": 5}
    with pytest.raises(runway_emulator.ProtocolError) as raised:
        runway_emulator.validate("text_to_video", body)
    assert [issue["path"] for issue in raised.value.extra["issues"]] == [["ratio"]]


def _fal_task(route: RouteSpec) -> RenderTask:
    mode = route.modes[0]
    fields: dict[str, object] = {
        "duration_s": route.durations.all()[0],
        "aspect_ratio": route.aspect_ratios_for(mode)[0].value,
        "resolution": route.resolutions[0].value,
        "audio": "audio" in route.features,
    }
    task = _task(route, mode, **fields)
    return RenderTask(
        attempt_id=task.attempt_id,
        model=task.model,
        request=task.request,
        image=task.image,
        webhook_url="https://broker.example/v1/callbacks/fal",
    )


@pytest.mark.parametrize("route", _routes("fal"), ids=lambda route: route.model)
async def test_every_fal_route_submits_as_fal_client_does(
    route: RouteSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = FalEmulator(api_keys=("fal-key",), render_seconds=60)
    task = _fal_task(route)
    async with serving(create_fal(emulator)) as server, aiohttp.ClientSession() as session:
        base_url = str(server.make_url(""))
        adapter = FalAdapter(context("fal", base_url, session, tmp_path, FakeTime(), api_key="fal-key"))
        submission = await adapter.submit(task)
        monkeypatch.setattr(fal_client.client, "QUEUE_URL_FORMAT", str(server.make_url("/")))
        client = fal_client.AsyncClient(key="fal-key")
        handle = await client.submit(route.model, arguments=request_body(task), webhook_url=task.webhook_url)
    ours, theirs = emulator.recorder.of("submit")
    assert (ours.method, ours.path, ours.query) == (theirs.method, theirs.path, theirs.query)
    assert ours.headers["Authorization"] == theirs.headers["Authorization"]
    assert ours.json == theirs.json
    # The fields fal_client requires of the answer are the ones the adapter keeps.
    assert set(submission.handle.data) == {"status_url", "response_url", "cancel_url"}
    assert handle.request_id != submission.handle.provider_job_id
