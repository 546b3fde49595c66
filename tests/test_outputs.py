"""Uniform outputs: every provider's clip comes out in the asked shape, recorded on the job; a clip that
already is that shape is kept byte for byte; one too small or short to use fails its attempt and the
job falls back."""

from __future__ import annotations

import hashlib
import io
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from adapters.emulators.doitong import DoitongEmulator
from adapters.emulators.emulator import ProviderEmulator
from adapters.emulators.fal import FalEmulator
from adapters.emulators.media import Delivery, clip, make_mp4
from adapters.emulators.muvi import MuviEmulator
from adapters.emulators.pixelapi import PixelApiEmulator
from adapters.emulators.runway import RunwayEmulator
from adapters.errors import OutputInvalid
from broker.jobs.output_media import Target, normalize, probe
from broker.jobs.outputs import Normalizer, accept_output
from broker.store.artifacts import FileArtifacts, output_key, poster_key
from tests.support.api import wait_for_status
from tests.support.deployment import ADMIN_KEY, STUDIO_KEY, auth
from tests.support.factories import job_record
from tests.support.fakes import FakeProvider

# What each emulated provider delivers for "5 s, 720p, 16:9", and what the broker must keep of it.
DEVIATING: list[tuple[type[ProviderEmulator], dict[str, Any], float]] = [
    (FalEmulator, {"height": 704, "duration_s": 5.042, "fps": 24.0}, 24.0),  # 32-row grid, 121 frames
    (MuviEmulator, {"fps": 16.0, "duration_s": 5.0}, 24.0),  # 16 fps: resampled to 24
    (DoitongEmulator, {"faststart": False, "fps": 25.0}, 25.0),  # moov at the end; 25 fps is kept
    (PixelApiEmulator, {"duration_s": 6.0, "audio": True, "fps": 30.0}, 30.0),  # a second too long
]


async def _artifacts(tmp_path: Path) -> FileArtifacts:
    artifacts = FileArtifacts(tmp_path / "artifacts")
    await artifacts.open()
    return artifacts


@pytest.mark.parametrize(
    ("emulator", "delivered", "fps"), DEVIATING, ids=lambda v: getattr(v, "provider", "")
)
async def test_each_providers_deviation_is_normalized_to_the_request_and_recorded(
    tmp_path: Path, emulator: type[ProviderEmulator], delivered: dict[str, Any], fps: float
) -> None:
    artifacts, record = await _artifacts(tmp_path), job_record(duration_s=5)  # 720p 16:9 by default
    partial = artifacts.partial_path("att_1")
    partial.write_bytes(clip(1280, 720, 5, emulator.delivery))

    output = await accept_output(artifacts, Normalizer(parallel=1), partial, record)

    stored = tmp_path / "artifacts" / output_key(record.id)
    shape = probe(stored)
    assert (shape.container, shape.codec, shape.pix_fmt, shape.faststart) == ("mp4", "h264", "yuv420p", True)
    assert (shape.width, shape.height, shape.fps, shape.audio) == (1280, 720, fps, False)
    assert shape.duration_s == pytest.approx(5.0, abs=1 / fps)
    assert output.normalized is True and output.normalized_from is not None
    assert {key: output.normalized_from[key] for key in delivered} == delivered
    assert (output.width, output.height, output.fps, output.codec) == (1280, 720, fps, "h264")
    assert output.sha256 == hashlib.sha256(stored.read_bytes()).hexdigest()
    assert output.bytes == stored.stat().st_size
    poster = Image.open(io.BytesIO(await artifacts.get_bytes(poster_key(record.id))))
    assert (poster.format, poster.size) == ("JPEG", (1280, 720))
    assert not partial.exists() and list(artifacts.scratch.iterdir()) == []


async def test_a_clip_whose_only_fault_is_its_index_is_remuxed_not_reencoded(tmp_path: Path) -> None:
    artifacts, record = await _artifacts(tmp_path), job_record(duration_s=5)
    partial = artifacts.partial_path("att_1")
    partial.write_bytes(clip(1280, 720, 5, Delivery(fps=25, faststart=False)))
    with av.open(str(partial)) as container:
        delivered = [bytes(p) for p in container.demux(video=0) if p.size]
    output = await accept_output(artifacts, Normalizer(parallel=1), partial, record)
    stored = tmp_path / "artifacts" / output_key(record.id)
    assert probe(stored).faststart and output.normalized is True
    with av.open(str(stored)) as container:
        assert [bytes(p) for p in container.demux(video=0) if p.size] == delivered  # the same frames


async def test_asked_audio_is_kept_through_normalization(tmp_path: Path) -> None:
    artifacts, record = await _artifacts(tmp_path), job_record(duration_s=5, audio=True)
    partial = artifacts.partial_path("att_1")
    partial.write_bytes(clip(1280, 720, 5, PixelApiEmulator.delivery))
    output = await accept_output(artifacts, Normalizer(parallel=1), partial, record)
    shape = probe(tmp_path / "artifacts" / output_key(record.id))
    assert shape.audio is True and output.normalized_from is not None
    assert shape.duration_s == pytest.approx(5.0, abs=1 / 30)


async def test_a_conforming_clip_is_kept_byte_for_byte(tmp_path: Path) -> None:
    artifacts, record = await _artifacts(tmp_path), job_record(duration_s=5, aspect_ratio="9:16")
    delivered = clip(720, 1280, 5, RunwayEmulator.delivery)
    partial = artifacts.partial_path("att_1")
    partial.write_bytes(delivered)
    output = await accept_output(artifacts, Normalizer(parallel=1), partial, record)
    assert (tmp_path / "artifacts" / output_key(record.id)).read_bytes() == delivered
    assert output.normalized is False and output.normalized_from is None
    assert output.sha256 == hashlib.sha256(delivered).hexdigest()
    assert (output.width, output.height, output.fps) == (720, 1280, 24.0)


@pytest.mark.parametrize(
    ("delivered", "reason"),
    [(make_mp4(64, 36, 5), "too small"), (make_mp4(1280, 720, 2), "shorter than the 4 s")],
    ids=["placeholder", "short"],
)
async def test_a_clip_too_small_or_short_is_invalid(tmp_path: Path, delivered: bytes, reason: str) -> None:
    artifacts, record = await _artifacts(tmp_path), job_record(duration_s=5)
    partial = artifacts.partial_path("att_1")
    partial.write_bytes(delivered)
    with pytest.raises(OutputInvalid, match=reason):
        await accept_output(artifacts, Normalizer(parallel=1), partial, record)
    assert not await artifacts.exists(output_key(record.id))
    assert list(artifacts.scratch.iterdir()) == []


async def test_the_policy_minimum_decides_what_is_too_short(tmp_path: Path) -> None:
    artifacts = await _artifacts(tmp_path)
    record = job_record(duration_s=5).model_copy(update={"policy": {"output_min_duration_ratio": 0.3}})
    partial = artifacts.partial_path("att_1")
    partial.write_bytes(make_mp4(1280, 720, 2, fps=16))
    output = await accept_output(artifacts, Normalizer(parallel=1), partial, record)
    assert output.normalized is True and output.fps == 24.0
    assert output.duration_s == pytest.approx(2.0, abs=1 / 24)  # a short clip is not stretched


def _flat(path: Path, width: int, height: int, luma: int) -> None:
    """A one-second clip of one flat grey."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, 24)
        planes = np.full((height * 3 // 2, width), 128, dtype=np.uint8)
        planes[:height] = luma
        for index in range(24):
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _first_luma(path: Path) -> np.ndarray[Any, Any]:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return frame.to_ndarray(format="gray")


@pytest.mark.parametrize("fit", ["pad", "crop"])
def test_pad_letterboxes_and_crop_fills(tmp_path: Path, fit: Any) -> None:
    source, dest = tmp_path / "portrait.mp4", tmp_path / "out.mp4"
    _flat(source, 720, 1280, luma=200)  # a 9:16 clip for a 16:9 request
    normalize(source, dest, probe(source), Target(1280, 720, 1.0, audio=False), fit)
    luma = _first_luma(dest)
    assert luma.shape == (720, 1280)
    centre, edge = luma[:, 600:680].mean(), luma[:, :200].mean()
    assert centre > 180  # the grey picture (read back as full-range grey)
    if fit == "pad":
        assert edge < 10  # black bars left and right
    else:
        assert edge == pytest.approx(centre, abs=2)  # the picture fills the frame


async def test_an_unusable_clip_fails_its_attempt_and_the_job_falls_back(
    make_client: Any, providers: dict[str, FakeProvider], tmp_path: Path
) -> None:
    providers["cheap"].script.output = make_mp4(64, 36, 1)  # a placeholder for a 5 s 720p clip
    client = await make_client()
    response = await client.post("/v1/jobs", json={"prompt": "a slow pan"}, headers=auth())
    done = await wait_for_status(client, (await response.json())["id"], "succeeded", "failed")
    assert done["status"] == "succeeded", done
    attempts = [(a["provider"], a["status"], (a["error"] or {}).get("code")) for a in done["attempts"]]
    assert attempts == [("cheap", "failed", "output_invalid"), ("dear", "succeeded", None)]
    assert "too small" in done["attempts"][0]["error"]["message"]
    assert (done["output"]["width"], done["output"]["height"], done["output"]["normalized"]) == (
        1280,
        720,
        False,
    )


async def test_a_local_render_conforms_and_is_kept_as_rendered(tmp_path: Path) -> None:
    from local_backend.assets import SAMPLE_IMAGE
    from local_backend.generator import ClipRequest, render_clip

    artifacts, record = await _artifacts(tmp_path), job_record(duration_s=1, aspect_ratio="21:9")
    partial = artifacts.partial_path("att_1")
    render_clip(
        Image.open(SAMPLE_IMAGE).convert("RGB"), ClipRequest(duration_s=1, aspect_ratio="21:9"), partial
    )
    rendered = partial.read_bytes()
    output = await accept_output(artifacts, Normalizer(parallel=1), partial, record)
    assert output.normalized is False and (output.width, output.height, output.fps) == (1680, 720, 24.0)
    assert (tmp_path / "artifacts" / output_key(record.id)).read_bytes() == rendered


async def test_deleting_an_output_removes_its_files_and_keeps_the_books(
    make_client: Any, providers: dict[str, FakeProvider], tmp_path: Path
) -> None:
    client = await make_client()
    response = await client.post("/v1/jobs", json={"prompt": "a slow pan"}, headers=auth())
    job_id = (await response.json())["id"]
    done = await wait_for_status(client, job_id, "succeeded", "failed")
    assert done["status"] == "succeeded"
    other_team = await client.delete(f"/v1/jobs/{job_id}/output", headers=auth(STUDIO_KEY))
    assert other_team.status == 404  # another team's job does not exist for it
    for _ in range(2):  # the second time there is nothing left: still 204
        deleted = await client.delete(f"/v1/jobs/{job_id}/output", headers=auth())
        assert deleted.status == 204
    assert list((tmp_path / "data").rglob(f"{job_id}.*")) == []  # output and poster
    after = await (await client.get(f"/v1/jobs/{job_id}", headers=auth())).json()
    assert after["output"] is None
    assert (after["cost_usd"], after["attempts"]) == (done["cost_usd"], done["attempts"])
    gone = await client.get(f"/v1/jobs/{job_id}/output", headers=auth())
    assert gone.status == 404 and "deleted" in (await gone.json())["error"]["message"]
    report = await client.get("/v1/reports/costs?group_by=team", headers=auth(ADMIN_KEY))
    assert report.status == 200 and done["cost_usd"] in await report.text()


async def test_the_admin_may_delete_an_output_but_not_of_a_job_still_running(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    providers["cheap"].script.polls_to_finish = 10_000  # it never finishes during the test
    client = await make_client()
    job_id = (await (await client.post("/v1/jobs", json={"prompt": "x"}, headers=auth())).json())["id"]
    refused = await client.delete(f"/v1/jobs/{job_id}/output", headers=auth(ADMIN_KEY))
    assert refused.status == 409 and "no output to delete" in (await refused.json())["error"]["message"]
