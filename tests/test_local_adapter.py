"""The local adapter end to end: a real render through submit, status and fetch_output, and its refusals."""

from __future__ import annotations

import asyncio
import shutil
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from numpy.typing import NDArray

from adapters.base import AdapterContext, ImageInput, RenderTask, TaskHandle, TaskState, TaskStatus
from adapters.errors import ProviderUnavailable, Rejected
from adapters.local import MODEL, LocalAdapter, build
from broker.schema import JobRequest, Resolution
from local_backend.assets import SAMPLE_IMAGE
from pricing.rules import PriceRule, PriceUnit
from pricing.units import CostUnit
from tests.support.images import png_header_only

SAMPLE = SAMPLE_IMAGE.read_bytes()
UPLOAD = "0" * 64  # stands for the uploaded image's digest in the request


def task(image: bytes | None = SAMPLE, attempt: str = "att_1", **fields: Any) -> RenderTask:
    request = JobRequest.model_validate(
        {"image_upload": UPLOAD, "duration_s": 1, "aspect_ratio": "1:1", **fields}
    )
    picture = None if image is None else ImageInput(content_type="image/png", data=image)
    return RenderTask(attempt_id=attempt, model=MODEL, request=request, image=picture)


async def finish(adapter: LocalAdapter, handle: TaskHandle, timeout_s: float = 60) -> TaskStatus:
    async with asyncio.timeout(timeout_s):
        while True:
            status = await adapter.status(handle)
            if status.state.terminal:
                return status
            await asyncio.sleep(0.01)


async def render(adapter: LocalAdapter, dest: Path, **fields: Any) -> tuple[TaskStatus, Path]:
    submission = await adapter.submit(task(**fields))
    status = await finish(adapter, submission.handle)
    assert status.state is TaskState.SUCCEEDED, status.error
    await adapter.fetch_output(status, dest)
    return status, dest


def decode(path: Path) -> tuple[list[NDArray[np.uint8]], tuple[int, int, Fraction]]:
    """Every frame as RGB, and the stream's (width, height, duration in seconds)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [
            np.asarray(frame.to_ndarray(format="rgb24"), np.uint8) for frame in container.decode(video=0)
        ]
        assert stream.duration is not None and stream.time_base is not None
        duration = Fraction(stream.duration) * stream.time_base
        return frames, (stream.codec_context.width, stream.codec_context.height, duration)


# Two encodes of the same frames decode this close (CRF 23); another seed's clip is far below it.
SAME_PICTURE_DB = 40.0


def psnr(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> float:
    """Peak signal-to-noise ratio of two 8-bit pictures in dB (infinite when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture
def adapter(tmp_path: Path) -> LocalAdapter:
    return LocalAdapter(tmp_path / "data")


async def test_a_render_comes_back_as_a_decodable_mp4_of_the_requested_shape(
    adapter: LocalAdapter, tmp_path: Path
) -> None:
    status, path = await render(adapter, tmp_path / "out.mp4", prompt="slow zoom in", duration_s=2, seed=9)
    frames, (width, height, duration) = decode(path)
    assert (width, height) == (720, 720)
    assert len(frames) == 48 and frames[0].shape == (720, 720, 3)
    assert duration == Fraction(2)
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 3  # the camera moved
    assert status.progress == 1.0
    assert status.reported_cost is not None and status.reported_cost.unit is CostUnit.COMPUTE_SECONDS
    assert Decimal(0) < status.reported_cost.amount < Decimal(60)
    assert list((tmp_path / "data" / "local").iterdir()) == []  # moved, not copied


async def test_each_size_follows_the_aspect_ratio(adapter: LocalAdapter, tmp_path: Path) -> None:
    _, path = await render(adapter, tmp_path / "tall.mp4", aspect_ratio="9:16")
    frames, (width, height, _) = decode(path)
    assert (width, height) == (720, 1280) and len(frames) == 24


async def test_the_same_seed_renders_the_same_clip(adapter: LocalAdapter, tmp_path: Path) -> None:
    # The rendered frames are bit-identical (tests/test_local_render.py); x264 may now and then spend
    # its bits differently on them, so the decoded pictures are compared as pictures.
    fields = {"prompt": "orbit around the trees", "seed": 1234}
    first, _ = decode((await render(adapter, tmp_path / "a.mp4", **fields))[1])
    again, _ = decode((await render(adapter, tmp_path / "b.mp4", **fields))[1])
    other, _ = decode(
        (await render(adapter, tmp_path / "c.mp4", prompt="orbit around the trees", seed=99))[1]
    )
    assert min(psnr(a, b) for a, b in zip(first, again, strict=True)) >= SAME_PICTURE_DB
    assert min(psnr(a, c) for a, c in zip(first, other, strict=True)) < SAME_PICTURE_DB


async def test_the_metered_seconds_price_through_the_compute_rule(
    adapter: LocalAdapter, tmp_path: Path
) -> None:
    status, _ = await render(adapter, tmp_path / "a.mp4")
    rule = PriceRule(
        unit=PriceUnit.USD_PER_COMPUTE_HOUR,
        amount=Decimal("2.10"),
        compute_s_per_output_s={Resolution.HD: Decimal("0.4")},
    )
    assert status.reported_cost is not None
    money = rule.reported_to_money(status.reported_cost)
    usd = status.reported_cost.amount * Decimal("2.10") / 3600  # rounded once, halves up (pricing.money)
    assert money.micros == int((usd * 1_000_000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


async def test_a_second_render_is_queued_behind_the_first(adapter: LocalAdapter) -> None:
    first = await adapter.submit(task(attempt="one", duration_s=2))
    second = await adapter.submit(task(attempt="two"))
    assert second.estimated_seconds is not None and first.estimated_seconds is not None
    assert second.estimated_seconds > first.estimated_seconds / 2  # it waits for the first
    seen: set[tuple[TaskState, TaskState]] = set()
    async with asyncio.timeout(60):
        while True:
            pair = ((await adapter.status(first.handle)).state, (await adapter.status(second.handle)).state)
            seen.add(pair)
            if pair[1].terminal:
                break
            await asyncio.sleep(0.005)
    assert (TaskState.RUNNING, TaskState.QUEUED) in seen
    assert (TaskState.RUNNING, TaskState.RUNNING) not in seen
    assert pair == (TaskState.SUCCEEDED, TaskState.SUCCEEDED)


@pytest.mark.parametrize(
    ("image", "code"),
    [
        (b"this is a text file, not a picture", "invalid_image"),
        (SAMPLE[: len(SAMPLE) // 2], "invalid_image"),
        # A PNG header that claims 30000x30000 pixels: refused before any pixel is decoded.
        (png_header_only(30_000, 30_000), "image_too_large"),
    ],
    ids=["not-an-image", "truncated", "bomb"],
)
async def test_a_bad_image_is_rejected_with_its_code(adapter: LocalAdapter, image: bytes, code: str) -> None:
    with pytest.raises(Rejected) as caught:
        await adapter.submit(task(image=image))
    assert caught.value.provider_code == code and caught.value.provider == "local"
    assert caught.value.fallback is False


async def test_a_render_that_breaks_fails_as_unavailable_so_the_router_can_fall_back(
    adapter: LocalAdapter,
) -> None:
    submission = await adapter.submit(task())
    # The render has not started yet (nothing awaited since): take its output directory away.
    shutil.rmtree(adapter.root)
    adapter.root.write_bytes(b"a file where the render directory was")
    status = await finish(adapter, submission.handle)
    assert status.state is TaskState.FAILED
    assert isinstance(status.error, ProviderUnavailable) and status.error.provider_code == "render_failed"
    assert status.reported_cost is not None  # the compute it used is still reported


async def test_text_to_video_audio_and_missing_bytes_are_rejected(adapter: LocalAdapter) -> None:
    text_only = RenderTask(attempt_id="t", model=MODEL, request=JobRequest(prompt="a cat surfing"))
    with pytest.raises(Rejected) as caught:
        await adapter.submit(text_only)
    assert caught.value.provider_code == "text_to_video_unsupported"
    with pytest.raises(Rejected) as caught:
        await adapter.submit(task(audio=True))
    assert caught.value.provider_code == "audio_unsupported"
    with pytest.raises(Rejected) as caught:
        await adapter.submit(task(image=None))
    assert caught.value.provider_code == "image_required"


async def test_after_a_restart_a_lost_render_is_rendered_again_from_its_kept_inputs(tmp_path: Path) -> None:
    first = LocalAdapter(tmp_path)
    submission = await first.submit(task(seed=7))
    await first.close()  # the process dies mid-render
    restarted = LocalAdapter(tmp_path)
    status = await finish(restarted, submission.handle)
    assert status.state is TaskState.SUCCEEDED, status.error
    await restarted.fetch_output(status, tmp_path / "resumed.mp4")
    _, reference = await render(LocalAdapter(tmp_path / "other"), tmp_path / "reference.mp4", seed=7)
    assert psnr(decode(tmp_path / "resumed.mp4")[0][-1], decode(reference)[0][-1]) >= SAME_PICTURE_DB
    assert sorted(p.name for p in (tmp_path / "local").iterdir()) == []  # inputs dropped once delivered


async def test_after_a_restart_a_render_without_inputs_fails_as_unavailable(tmp_path: Path) -> None:
    first = LocalAdapter(tmp_path)
    submission = await first.submit(task())
    await first.close()
    for kept in (tmp_path / "local").glob(f"{submission.handle.provider_job_id}.*"):
        kept.unlink()
    status = await LocalAdapter(tmp_path).status(submission.handle)
    assert status.state is TaskState.FAILED
    assert isinstance(status.error, ProviderUnavailable) and status.error.fallback is True


async def test_cancel_stops_queued_and_running_renders(adapter: LocalAdapter) -> None:
    running = await adapter.submit(task(attempt="r", duration_s=10, resolution="1080p"))
    queued = await adapter.submit(task(attempt="q"))
    async with asyncio.timeout(30):
        while (await adapter.status(running.handle)).state is not TaskState.RUNNING:
            await asyncio.sleep(0.005)
    assert await adapter.cancel(queued.handle) is True
    assert await adapter.cancel(running.handle) is True
    assert (await finish(adapter, queued.handle)).state is TaskState.CANCELLED
    assert (await finish(adapter, running.handle)).state is TaskState.CANCELLED
    assert await adapter.cancel(running.handle) is False
    assert list((adapter.root).iterdir()) == []  # the partial file is gone


async def test_fetch_output_moves_only_its_own_renders(adapter: LocalAdapter, tmp_path: Path) -> None:
    elsewhere = tmp_path / "secret.mp4"
    elsewhere.write_bytes(b"not yours")
    forged = TaskStatus(TaskState.SUCCEEDED, output_url=elsewhere.as_uri())
    with pytest.raises(Rejected):
        await adapter.fetch_output(forged, tmp_path / "out.mp4")
    assert elsewhere.exists()


async def test_webhooks_are_refused(adapter: LocalAdapter) -> None:
    with pytest.raises(Rejected):
        adapter.parse_webhook({}, b"{}")


async def test_build_renders_under_the_data_dir(tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as session:
        ctx = AdapterContext(provider="local", base_url="", api_key=None, session=session, data_dir=tmp_path)
        adapter = build(ctx)
    assert adapter.provider == "local" and adapter.root == tmp_path / "local"
    assert adapter.spec.image_acceptance.url is False and adapter.spec.image_acceptance.file_max_bytes


async def test_the_event_loop_keeps_running_while_a_clip_renders(adapter: LocalAdapter) -> None:
    # About a second of rendering: a render on the loop would show up as one gap that long.
    submission = await adapter.submit(task(duration_s=3, resolution="1080p", prompt="orbit"))
    loop = asyncio.get_running_loop()
    gaps, last = [], loop.time()
    async with asyncio.timeout(60):
        while not (await adapter.status(submission.handle)).state.terminal:
            await asyncio.sleep(0.005)
            now = loop.time()
            gaps.append(now - last)
            last = now
    assert len(gaps) > 10  # the loop ticked all through the render
    assert max(gaps) < 0.15  # the render never held it for long
