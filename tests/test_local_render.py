"""The generator end to end below the adapter: sizes, cover-crop, depth, the locked camera, encoding."""

from __future__ import annotations

import threading
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from local_backend.assets import SAMPLE_IMAGE
from local_backend.depth import estimate_nearness
from local_backend.encode import Mp4Writer
from local_backend.failures import RenderCancelled
from local_backend.formats import ASPECT_RATIOS, RESOLUTIONS, FormatError, frame_count, frame_size
from local_backend.generator import ClipRequest, render_clip
from local_backend.motion import Motion
from local_backend.source import cover_box

Frames = list[NDArray[np.uint8]]


def decode_luma(path: Path) -> Frames:
    """Every frame's Y plane, as the file stores it."""
    with av.open(str(path)) as container:
        return [np.asarray(frame.to_ndarray(format="gray"), np.uint8) for frame in container.decode(video=0)]


def motion_between(frames: Frames) -> float:
    return float(np.abs(frames[0].astype(np.int16) - frames[-1].astype(np.int16)).mean())


@pytest.fixture(scope="module")
def sample() -> Image.Image:
    return Image.open(SAMPLE_IMAGE).convert("RGB")


def test_frame_sizes_for_every_aspect_ratio_and_resolution() -> None:
    expected = {
        "720p": [(1280, 720), (720, 1280), (720, 720), (960, 720), (720, 960), (1680, 720)],
        "1080p": [(1920, 1080), (1080, 1920), (1080, 1080), (1440, 1080), (1080, 1440), (2520, 1080)],
    }
    for resolution in RESOLUTIONS:
        sizes = [frame_size(aspect, resolution) for aspect in ASPECT_RATIOS]
        assert sizes == expected[resolution]
        assert all(w % 2 == 0 and h % 2 == 0 for w, h in sizes)
    assert frame_count(1) == 24 and frame_count(10) == 240
    with pytest.raises(FormatError):
        frame_count(11)
    with pytest.raises(FormatError):
        frame_size("2:1", "720p")


def test_cover_box_crops_the_long_side_only() -> None:
    assert cover_box(2000, 1000, 1.0) == (500.0, 0.0, 1500.0, 1000.0)
    assert cover_box(1000, 2000, 16 / 9) == pytest.approx((0.0, 718.75, 1000.0, 1281.25))


def test_cover_crop_keeps_shapes_round(tmp_path: Path) -> None:
    # A circle on a 2:1 picture, filmed for a 9:16 frame: stretching would squash it to an ellipse.
    picture = Image.new("RGB", (800, 400), "white")
    ImageDraw.Draw(picture).ellipse((300, 100, 500, 300), fill="black")
    request = ClipRequest(aspect_ratio="9:16", duration_s=1, camera_fixed=True, seed=1)
    result = render_clip(picture, request, tmp_path / "round.mp4")
    first = decode_luma(result.path)[0]
    assert first.shape == (1280, 720)
    rows, cols = np.nonzero(first < 60)
    width, height = cols.max() - cols.min() + 1, rows.max() - rows.min() + 1
    assert width == pytest.approx(height, rel=0.03)
    assert width == pytest.approx(200 * 1280 / 400, rel=0.03)  # the crop kept the full height


def test_the_nearness_estimate_puts_the_ground_in_front_of_the_sky(sample: Image.Image) -> None:
    thumb = torch.from_numpy(np.array(sample.resize((160, 90)))).permute(2, 0, 1).float() / 255
    nearness = estimate_nearness(thumb)
    assert nearness.shape == (90, 160)
    assert float(nearness[:20].mean()) + 0.4 < float(nearness[-20:].mean())


def _far_and_near_shift(sample: Image.Image, prompt: str, tmp_path: Path) -> tuple[int, int, Motion]:
    result = render_clip(sample, ClipRequest(prompt=prompt, duration_s=1, seed=2), tmp_path / "depth.mp4")
    frames = decode_luma(result.path)
    far = _horizontal_shift(frames[0][250:330], frames[-1][250:330])  # the distant ridges
    near = _horizontal_shift(frames[0][560:700], frames[-1][560:700])  # the meadow and trees in front
    return far, near, result.motion


def test_orbit_moves_near_and_far_parts_in_opposite_directions(sample: Image.Image, tmp_path: Path) -> None:
    far, near, motion = _far_and_near_shift(sample, "orbit", tmp_path)
    assert motion is Motion.ORBIT
    assert far * near < 0 and abs(near) >= 8 and abs(far) >= 4


def test_parallax_slides_the_foreground_further_than_the_distance(
    sample: Image.Image, tmp_path: Path
) -> None:
    far, near, motion = _far_and_near_shift(sample, "parallax", tmp_path)
    assert motion is Motion.PARALLAX
    assert far * near >= 0 and abs(near) >= abs(far) + 10


def _horizontal_shift(before: NDArray[np.uint8], after: NDArray[np.uint8]) -> int:
    """The whole-pixel horizontal shift that best lines up two bands of rows."""
    a, b = before.astype(np.float32), after.astype(np.float32)
    margin = 100
    errors = {
        s: float(np.abs(a[:, margin + s : -margin + s] - b[:, margin:-margin]).mean())
        for s in range(-margin + 1, margin)
    }
    return -min(errors, key=lambda s: errors[s])


def test_the_same_seed_renders_bit_identical_frames(
    sample: Image.Image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[list[bytes]] = []
    encode = Mp4Writer.write

    def keep(writer: Mp4Writer, frames: NDArray[np.uint8]) -> None:
        written[-1].append(frames.tobytes())  # what the renderer handed the encoder
        encode(writer, frames)

    monkeypatch.setattr(Mp4Writer, "write", keep)
    for seed, name in ((1234, "a"), (1234, "b"), (99, "c")):
        written.append([])
        render_clip(sample, ClipRequest(prompt="orbit", duration_s=1, seed=seed), tmp_path / f"{name}.mp4")
    assert written[0] == written[1] and len(written[0]) > 1
    assert written[0] != written[2]


def test_a_locked_camera_moves_little_and_keeps_its_edges(sample: Image.Image, tmp_path: Path) -> None:
    request = ClipRequest(prompt="zoom in", duration_s=1, aspect_ratio="1:1", seed=4)
    moving = decode_luma(render_clip(sample, request, tmp_path / "moving.mp4").path)
    fixed_request = ClipRequest(prompt="zoom in", duration_s=1, aspect_ratio="1:1", seed=4, camera_fixed=True)
    fixed = decode_luma(render_clip(sample, fixed_request, tmp_path / "fixed.mp4").path)
    assert motion_between(fixed) * 4 < motion_between(moving)
    assert motion_between(fixed) > 0.05  # subtle, but alive
    border = np.abs(fixed[0][:, :2].astype(int) - fixed[-1][:, :2].astype(int)).mean()
    assert border < 1.5


def test_cancelling_stops_the_render_and_leaves_no_file(sample: Image.Image, tmp_path: Path) -> None:
    stop = threading.Event()
    seen: list[float] = []

    def progress(fraction: float) -> None:
        seen.append(fraction)
        stop.set()

    with pytest.raises(RenderCancelled):
        render_clip(sample, ClipRequest(duration_s=3), tmp_path / "gone.mp4", None, progress, stop)
    assert seen and seen[-1] < 1.0
    assert list(tmp_path.iterdir()) == []


def test_the_file_is_h264_yuv420p_with_faststart(sample: Image.Image, tmp_path: Path) -> None:
    result = render_clip(sample, ClipRequest(duration_s=1, aspect_ratio="21:9"), tmp_path / "wide.mp4")
    data = result.path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # faststart: the index comes first
    with av.open(str(result.path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert (stream.codec_context.width, stream.codec_context.height) == (1680, 720)
        assert stream.average_rate == 24
