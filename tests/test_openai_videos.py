"""/v1/videos driven by the official `openai` package against the provider emulators: what a team that
points its existing OpenAI client at the broker gets — videos made on the cheapest or a pinned route,
downloads, pages, cancels, and errors in the SDK's own exception classes. One job, two views: each
video is the same job /v1/jobs shows, with its cost."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import av
import openai
import pytest
from PIL import Image

from adapters.emulators.tasks import Phase
from tests.support.adapters import png_bytes as png
from tests.support.deployment import ADMIN_KEY, GROWTH_KEY, STUDIO_KEY, auth
from tests.support.openai_rig import IMAGE_HOST, Rig, catalog, openai_rig

POLL_MS = 20


def probe(data: bytes, path: Path) -> tuple[str, int, int, float]:
    """(container format, width, height, seconds) of an MP4, read back with PyAV."""
    path.write_bytes(data)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        seconds = float(container.duration or 0) / av.time_base
        return container.format.name, stream.codec_context.width, stream.codec_context.height, seconds


async def job_of(rig: Rig, video_id: str, key: str = STUDIO_KEY) -> dict[str, Any]:
    response = await rig.http.get(f"/v1/jobs/{video_id}", headers=auth(key))
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_auto_text_to_video_completes_on_the_cheapest_route_and_downloads(tmp_path: Path) -> None:
    async with openai_rig(tmp_path) as rig:
        quote = await rig.http.post(
            "/v1/quotes", json={"prompt": "a lighthouse at dusk", "duration_s": 5}, headers=auth(STUDIO_KEY)
        )
        cheapest = (await quote.json())["chosen"]

        video = await rig.openai.videos.create_and_poll(
            prompt="a lighthouse at dusk",
            model="auto",
            seconds="5",
            size="1280x720",
            poll_interval_ms=POLL_MS,
        )

        assert video.status == "completed" and video.object == "video" and video.progress == 100, video
        assert video.model == f"{cheapest['provider']}/{cheapest['model']}"
        assert (video.seconds, video.size, video.prompt) == ("5", "1280x720", "a lighthouse at dusk")
        assert video.completed_at is not None and video.completed_at >= video.created_at
        extra = video.model_extra or {}
        assert extra["mode"] == "text_to_video" and extra["broker_status"] == "succeeded"
        content = await rig.openai.videos.download_content(video.id)
        fmt, width, height, seconds = probe(content.content, tmp_path / "clip.mp4")
        # The same job, through /v1/jobs, with the output and the cost the video reports.
        job = await job_of(rig, video.id)
        assert job["status"] == "succeeded" and job["output"]["bytes"] == len(content.content)
        assert "mp4" in fmt and (width, height) == (job["output"]["width"], job["output"]["height"])
        assert seconds > 0 and width > 0
        poster = await rig.openai.videos.download_content(video.id, variant="thumbnail")
        assert Image.open(io.BytesIO(poster.content)).size == (width, height)
        assert job["cost_usd"] == extra["cost_usd"] != "0.000000"
        assert len(job["attempts"]) == len(extra["attempts"]) == 1


async def test_input_reference_file_makes_an_image_to_video_job_with_extra_body(tmp_path: Path) -> None:
    async with openai_rig(tmp_path) as rig:
        video = await rig.openai.videos.create_and_poll(
            prompt="slow push in",
            input_reference=("still.png", png(1280, 720), "image/png"),
            size="1280x720",
            extra_body={
                "constraints": {"max_cost_usd": "0.50", "min_quality": "basic"},
                "metadata": {"t": "A-1"},
            },
            poll_interval_ms=POLL_MS,
        )
        assert video.status == "completed", video
        job = await job_of(rig, video.id)
        request = job["request"]
        assert request["mode"] == "image_to_video" and request["image_upload"] is not None
        assert request["constraints"]["max_cost_usd"] == "0.50" and request["metadata"] == {"t": "A-1"}
        content = (await rig.openai.videos.download_content(video.id)).content
        fmt, width, height, _ = probe(content, tmp_path / "i.mp4")
        assert "mp4" in fmt and (width, height) == (job["output"]["width"], job["output"]["height"])


async def test_a_pinned_provider_model_is_the_only_route_tried(tmp_path: Path) -> None:
    async with openai_rig(tmp_path) as rig:
        video = await rig.openai.videos.create_and_poll(
            prompt="waves", model="runway/gen4.5", seconds="4", size="720x1280", poll_interval_ms=POLL_MS
        )
        assert video.status == "completed" and video.model == "runway/gen4.5", video
        assert (video.seconds, video.size) == ("4", "720x1280")
        job = await job_of(rig, video.id)
        assert [(a["provider"], a["model"]) for a in job["attempts"]] == [("runway", "gen4.5")]
        request = job["request"]
        assert (request["duration_s"], request["aspect_ratio"], request["resolution"]) == (4, "9:16", "720p")
        assert request["constraints"]["models"] == ["runway/gen4.5"]
        assert rig.sandbox.endpoints["runway"].emulator.submit_count() == 1


async def test_json_body_with_an_image_url_reference(tmp_path: Path) -> None:
    """What other OpenAI-shaped clients send: JSON, `input_reference` as `{"image_url": ...}` (the
    `openai` package itself sends only files there), the broker's fields beside OpenAI's."""
    async with openai_rig(tmp_path) as rig:
        body = {
            "prompt": "waves",
            "model": "runway/gen4_turbo",
            "seconds": 5,
            "input_reference": {"image_url": f"https://{IMAGE_HOST}/waves.png"},
            "metadata": {"ticket": "B-2"},
        }
        response = await rig.http.post("/v1/videos", json=body, headers=auth(STUDIO_KEY))
        assert response.status == 200, await response.text()
        created = await response.json()
        assert created["status"] == "queued" and created["model"] == "runway/gen4_turbo"
        done = await rig.openai.videos.poll(created["id"], poll_interval_ms=POLL_MS)
        assert done.status == "completed" and (done.model_extra or {})["mode"] == "image_to_video"
        job = await job_of(rig, done.id)
        assert job["request"]["image_url"] == body["input_reference"]["image_url"]  # type: ignore[index]
        unknown = await rig.http.post("/v1/videos", json={**body, "quality": "hd"}, headers=auth(STUDIO_KEY))
        error = (await unknown.json())["error"]
        assert (
            unknown.status == 400 and error["param"] == "quality" and "unknown parameter" in error["message"]
        )


async def test_list_pages_through_newest_first_and_oldest_first(tmp_path: Path) -> None:
    async with openai_rig(tmp_path) as rig:
        made = []
        for n in range(5):
            made.append((await rig.openai.videos.create(prompt=f"clip {n}", seconds="5")).id)
            await asyncio.sleep(0.002)  # ids sort by creation time to the millisecond
        first = await rig.openai.videos.list(limit=2)
        assert [v.id for v in first.data] == made[::-1][:2] and first.has_more is True
        newest_first = [video.id async for video in await rig.openai.videos.list(limit=2)]
        assert newest_first == made[::-1]
        oldest_first = [video.id async for video in await rig.openai.videos.list(limit=2, order="asc")]
        assert oldest_first == made
        last = await rig.openai.videos.list(limit=2, after=made[1])
        assert [v.id for v in last.data] == [made[0]] and last.has_more is False
        # Another team sees none of them.
        assert (await rig.client(GROWTH_KEY).videos.list()).data == []


async def test_delete_cancels_a_running_job_at_its_provider(tmp_path: Path) -> None:
    async with openai_rig(tmp_path, render_seconds=60) as rig:
        video = await rig.openai.videos.create(prompt="a long take", model="runway/gen4.5", seconds="5")
        for _ in range(1500):  # until the provider holds the task
            seen = await rig.openai.videos.retrieve(video.id)
            attempts = (seen.model_extra or {})["attempts"]
            if attempts and attempts[0]["provider_job_id"]:
                break
            await asyncio.sleep(0.01)
        assert seen.status == "in_progress", seen

        deleted = await rig.openai.videos.delete(video.id)

        assert deleted.id == video.id and deleted.deleted is True and deleted.object == "video.deleted"
        emulator = rig.sandbox.endpoints["runway"].emulator
        for _ in range(1500):
            ended = await rig.openai.videos.retrieve(video.id)
            if ended.status == "failed":
                break
            await asyncio.sleep(0.01)
        assert ended.status == "failed" and ended.error is not None and ended.error.code == "cancelled"
        assert (ended.model_extra or {})["broker_status"] == "cancelled"
        assert emulator.recorder.count("cancel") == 1
        (task,) = emulator.tasks.values()
        assert emulator.phase(task) is Phase.CANCELLED
        assert (await job_of(rig, video.id))["status"] == "cancelled"
        # Deleting it again is harmless; a finished video is kept (deleted false), not an error.
        again = await rig.openai.videos.delete(video.id)
        assert again.deleted is True


async def test_bad_model_size_and_seconds_are_bad_requests_that_say_what_to_send(tmp_path: Path) -> None:
    async with openai_rig(tmp_path) as rig:
        with pytest.raises(openai.BadRequestError) as bad_model:
            await rig.openai.videos.create(prompt="x", model="sora-2")
        message = str(bad_model.value)
        assert "'sora-2'" in message and "'auto'" in message and "provider/model" in message
        assert bad_model.value.param == "model" and bad_model.value.type == "invalid_request_error"
        with pytest.raises(openai.BadRequestError) as bad_size:
            await rig.openai.videos.create(prompt="x", size="1792x1024")
        assert bad_size.value.param == "size" and "1280x720" in str(bad_size.value)
        with pytest.raises(openai.BadRequestError) as bad_seconds:
            await rig.openai.videos.create(prompt="x", seconds="12")
        assert bad_seconds.value.param == "seconds" and "10" in str(bad_seconds.value)
        # Served sizes and durations that no one route combines: 400 with the routes' reasons.
        with pytest.raises(openai.BadRequestError) as no_route:
            await rig.openai.videos.create(prompt="x", model="runway/gen4_turbo")
        assert no_route.value.code == "no_feasible_route"
        assert "runway/gen4_turbo: mode text_to_video not supported" in no_route.value.message
        assert "pixelapi" not in no_route.value.message  # only the pinned route's reasons
        assert (await rig.openai.videos.list()).data == []


async def test_wrong_key_admin_key_and_missing_video(tmp_path: Path) -> None:
    async with openai_rig(tmp_path) as rig:
        with pytest.raises(openai.AuthenticationError) as refused:
            await rig.client("not-a-key").videos.list()
        assert refused.value.code == "invalid_api_key"
        with pytest.raises(openai.PermissionDeniedError):
            await rig.client(ADMIN_KEY).videos.create(prompt="x")
        with pytest.raises(openai.NotFoundError):
            await rig.openai.videos.retrieve("job_nope")


async def test_over_budget_is_insufficient_quota_with_the_figures(tmp_path: Path) -> None:
    config = catalog(studio={"min_quality": "basic", "daily_budget_usd": "0.05"})
    async with openai_rig(tmp_path, config=config) as rig:
        quote = await rig.http.post(
            "/v1/quotes", json={"prompt": "a city at night"}, headers=auth(STUDIO_KEY)
        )
        estimate = (await quote.json())["chosen"]["cost_usd"]
        with pytest.raises(openai.RateLimitError) as over:
            await rig.openai.videos.create(prompt="a city at night", seconds="5")
        error = over.value
        assert error.status_code == 429 and error.code == "insufficient_quota"
        assert error.response.headers["x-should-retry"] == "false"  # the SDK does not retry it
        assert "does not fit the team's budget" in error.message and "0.050000 USD" in error.message
        assert f"estimate of {estimate} USD" in error.message  # the cheapest route's
        jobs = await (await rig.http.get("/v1/jobs", headers=auth(STUDIO_KEY))).json()
        assert jobs["jobs"] == []


async def test_content_before_completion_and_unknown_variant(tmp_path: Path) -> None:
    async with openai_rig(tmp_path, render_seconds=60) as rig:
        video = await rig.openai.videos.create(prompt="waiting", seconds="5")
        assert video.status == "queued"
        with pytest.raises(openai.ConflictError) as early:
            await rig.openai.videos.download_content(video.id)
        assert "no content yet" in str(early.value)
        raw = await rig.http.get(f"/v1/videos/{video.id}/content?variant=poster", headers=auth(STUDIO_KEY))
        body = await raw.json()
        assert raw.status == 400 and body["error"]["param"] == "variant"
        assert set(body["error"]) >= {"message", "type", "param", "code"}
        await rig.openai.videos.delete(video.id)
