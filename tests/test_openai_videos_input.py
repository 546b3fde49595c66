"""/v1/videos at its edges, on the fake two-route deployment: the broker's fields through the SDK's
`extra_body` (multipart brackets), hostile and malformed bodies answered in OpenAI's error body with a
4xx, idempotent retries, another team's videos, and how a job's states read as a `Video`."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request
from openai import AsyncOpenAI

from broker.api.video_views import video_body
from broker.api.videos import speaks_openai
from broker.schema import JobError, JobStatus
from broker.store.base import PollState, StoreUnavailable
from tests.support.adapters import png_bytes as png
from tests.support.api import wait_for_status
from tests.support.deployment import GROWTH_KEY, STUDIO_KEY, auth
from tests.support.factories import job_record
from tests.support.fakes import FakeProvider

Client = TestClient[Any, Any]


def sdk(server: Client, key: str = GROWTH_KEY) -> AsyncOpenAI:
    return AsyncOpenAI(api_key=key, base_url=str(server.make_url("/v1")), max_retries=0)


async def openai_error(response: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    """The OpenAI error object of a response that must have `status`."""
    body = await response.json()
    assert response.status == status, body
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"]), body
    error: dict[str, Any] = body["error"]
    return error


async def test_extra_body_reaches_the_job_through_multipart_brackets(make_client: Any) -> None:
    server = await make_client()
    async with sdk(server) as client:
        video = await client.videos.create(
            prompt="a pan",
            seconds="3",
            size="1080x1920",
            extra_body={
                "constraints": {"providers": ["dear"], "max_latency_s": 600},
                "seed": 7,
                "camera_fixed": True,
                "metadata": {"ticket": "C-3"},
            },
        )
    assert (video.seconds, video.size, video.model) == ("3", "1080x1920", "dear/d1")
    job = await wait_for_status(server, video.id, "succeeded")
    request = job["request"]
    assert request["constraints"]["providers"] == ["dear"] and request["constraints"]["max_latency_s"] == 600
    assert (request["seed"], request["camera_fixed"], request["metadata"]) == (7, True, {"ticket": "C-3"})
    assert (request["aspect_ratio"], request["resolution"], request["duration_s"]) == ("9:16", "1080p", 3)


async def test_an_idempotency_key_replays_the_same_video(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    server = await make_client()
    async with sdk(server) as client:
        headers = {"Idempotency-Key": "retry-1"}
        first = await client.videos.create(prompt="once", extra_headers=headers)
        again = await client.videos.create(prompt="once", extra_headers=headers)
        assert again.id == first.id
        with pytest.raises(openai.ConflictError) as other_body:
            await client.videos.create(prompt="twice", extra_headers=headers)
        assert other_body.value.code == "idempotency_conflict"
    await wait_for_status(server, first.id, "succeeded")
    assert len(providers["cheap"].submits) == 1


def form(*fields: tuple[str, str], image: bytes | None = None) -> aiohttp.FormData:
    data = aiohttp.FormData(default_to_multipart=True)
    for name, value in fields:
        data.add_field(name, value)
    if image is not None:
        data.add_field("input_reference", image, filename="still.png", content_type="image/png")
    return data


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ((("prompt", "a"), ("prompt", "b")), "prompt"),
        ((("prompt", "a"), ("constraints[providers][][x]", "b")), "constraints[providers][][x]"),
        (
            (("prompt", "a"), ("constraints[]", "b"), ("constraints[max_cost_usd]", "1")),
            "constraints[max_cost_usd]",
        ),
        ((("prompt", "a"), ("a.b", "c")), "a.b"),
        ((("prompt", "a"), ("input_reference", "not a file")), "input_reference"),
        ((("prompt", "a"), ("seconds", "five")), "seconds"),
        ((("prompt", "a"), ("constraints[max_latency_s]", "soon")), "constraints.max_latency_s"),
        ((("prompt", "a"), ("model", "cheap")), "model"),
        ((("prompt", "a"), ("metadata", "{not json")), None),
    ],
)
async def test_malformed_forms_are_400s_that_name_the_field(
    make_client: Any, fields: tuple[tuple[str, str], ...], param: str | None
) -> None:
    server = await make_client()
    response = await server.post("/v1/videos", data=form(*fields), headers=auth())
    error = await openai_error(response, 400)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert response.headers["x-should-retry"] == "false"
    listed = await (await server.get("/v1/videos", headers=auth())).json()
    assert listed["data"] == []  # nothing half-made


async def test_bad_images_bad_bodies_and_no_key(make_client: Any) -> None:
    server = await make_client(max_image_bytes=4096)
    not_image = await server.post(
        "/v1/videos", data=form(("prompt", "a"), image=b"GIF89a-not-really"), headers=auth()
    )
    assert (await openai_error(not_image, 422))["code"] == "invalid_image"
    too_big = await server.post(
        "/v1/videos", data=form(("prompt", "a"), image=b"\x89PNG" + b"0" * 5000), headers=auth()
    )
    assert (await openai_error(too_big, 413))["code"] == "image_too_large"
    empty = await server.post("/v1/videos", data=form(("prompt", "a"), image=b""), headers=auth())
    assert (await openai_error(empty, 422))["code"] == "invalid_image"
    broken = await server.post(
        "/v1/videos", data=b'{"prompt": ', headers={**auth(), "Content-Type": "application/json"}
    )
    assert (await openai_error(broken, 400))["code"] == "invalid_json"
    array = await server.post("/v1/videos", json=["prompt"], headers=auth())
    assert "JSON object" in (await openai_error(array, 400))["message"]
    text = await server.post("/v1/videos", data="prompt=a", headers={**auth(), "Content-Type": "text/plain"})
    await openai_error(text, 415)
    file_id = await server.post(
        "/v1/videos", json={"prompt": "a", "input_reference": {"file_id": "f"}}, headers=auth()
    )
    assert "Files API" in (await openai_error(file_id, 400))["message"]
    anonymous = await server.get("/v1/videos")
    assert (await openai_error(anonymous, 401))["code"] == "invalid_api_key"
    bad_list = await server.get("/v1/videos?limit=0&order=sideways", headers=auth())
    assert (await openai_error(bad_list, 400))["param"] == "limit"
    bad_after = await server.get("/v1/videos?order=asc&after=job_nope", headers=auth())
    assert (await openai_error(bad_after, 400))["param"] == "after"


async def test_an_uploaded_image_makes_an_image_to_video_job(make_client: Any) -> None:
    server = await make_client()
    response = await server.post(
        "/v1/videos", data=form(("prompt", "pan"), image=png(320, 180)), headers=auth()
    )
    assert response.status == 200, await response.text()
    video = await response.json()
    assert video["mode"] == "image_to_video" and video["status"] == "queued"
    assert "openai-poll-after-ms" in response.headers
    job = await wait_for_status(server, video["id"], "succeeded")
    assert job["request"]["image_upload"] is not None


async def test_another_teams_video_is_not_found_and_a_finished_one_is_kept(make_client: Any) -> None:
    server = await make_client()
    async with sdk(server) as growth, sdk(server, STUDIO_KEY) as studio:
        video = await growth.videos.create(prompt="ours")
        await wait_for_status(server, video.id, "succeeded")
        for call in (studio.videos.retrieve, studio.videos.delete, studio.videos.download_content):
            with pytest.raises(openai.NotFoundError):
                await call(video.id)
        kept = await growth.videos.delete(video.id)
        assert kept.deleted is False and (kept.model_extra or {})["broker_status"] == "succeeded"
        assert (await growth.videos.retrieve(video.id)).status == "completed"
        with pytest.raises(openai.NotFoundError) as sprites:
            await growth.videos.download_content(video.id, variant="spritesheet")
        assert "spritesheet" in str(sprites.value)


def test_states_read_as_openai_statuses_with_the_providers_progress() -> None:
    queued = job_record()
    assert (video_body(queued)["status"], video_body(queued)["progress"]) == ("queued", 0)
    running = job_record(status=JobStatus.RUNNING).model_copy(
        update={"poll": PollState(delay_s=1, progress=0.42)}
    )
    assert (video_body(running)["status"], video_body(running)["progress"]) == ("in_progress", 42)
    silent = job_record(status=JobStatus.RUNNING)  # a provider that reports no progress
    assert video_body(silent)["progress"] == 0
    done = job_record(status=JobStatus.SUCCEEDED)
    assert (video_body(done)["status"], video_body(done)["progress"]) == ("completed", 100)
    failed = job_record(status=JobStatus.FAILED).evolve(error=JobError(code="content_rejected", message="no"))
    assert video_body(failed)["error"] == {"code": "content_rejected", "message": "no"}
    cancelled = video_body(job_record(status=JobStatus.CANCELLED))
    assert cancelled["status"] == "failed" and cancelled["error"]["code"] == "cancelled"
    assert cancelled["broker_status"] == "cancelled"
    # Every body is a valid `openai.types.Video`.
    for record in (queued, running, done, failed):
        assert openai.types.Video.model_validate(video_body(record)).id == record.id


async def test_a_url_encoded_form_is_read_like_multipart(make_client: Any) -> None:
    server = await make_client()
    body = "prompt=a+pan&seconds=2&size=720x720&constraints%5Bproviders%5D%5B%5D=dear"
    headers = {**auth(), "Content-Type": "application/x-www-form-urlencoded"}
    response = await server.post("/v1/videos", data=body, headers=headers)
    video = await response.json()
    assert response.status == 200, video
    assert (video["seconds"], video["size"], video["model"]) == ("2", "720x720", "dear/d1")


async def test_a_broker_outage_answers_in_openais_body_and_may_be_retried() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise StoreUnavailable("the store did not answer in time")

    response = await speaks_openai(handler)(make_mocked_request("GET", "/v1/videos"))
    assert isinstance(response, web.Response) and response.status == 503
    assert "x-should-retry" not in response.headers  # the SDK retries a 5xx, as it should here
    error = json.loads(response.text or "")["error"]
    assert (error["type"], error["code"]) == ("server_error", "store_unavailable")
