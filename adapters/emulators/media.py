"""Real, tiny H.264 MP4s for emulated outputs: encoded once per shape with PyAV and cached."""

from __future__ import annotations

import io
from fractions import Fraction
from functools import lru_cache

import av
import numpy as np

MAX_SIDE = 64  # outputs keep the requested shape, scaled down so tests download a few kilobytes
FPS = 8


def size_for_ratio(width: int, height: int, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """Scale `width:height` so the long side is `max_side`; both even, as H.264 4:2:0 needs."""
    scale = max_side / max(width, height)
    return _even(width * scale), _even(height * scale)


def _even(value: float) -> int:
    return max(2, round(value / 2) * 2)


@lru_cache(maxsize=32)
def make_mp4(width: int, height: int, duration_s: int) -> bytes:
    """An H.264 MP4 of `duration_s` seconds at `width`x`height`, a moving gradient."""
    buffer = io.BytesIO()
    frames = max(1, duration_s * FPS)
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, FPS)
        ramp = np.linspace(0, 255, width, dtype=np.float32)
        for index in range(frames):
            shade = (ramp + index * 255 / frames) % 256
            rgb = np.empty((height, width, 3), dtype=np.uint8)
            rgb[..., 0] = shade
            rgb[..., 1] = 255 - shade
            rgb[..., 2] = index * 255 // frames
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def probe(data: bytes) -> tuple[str, int, int, float]:
    """Codec name, width, height and duration in seconds of an MP4, for tests to check outputs."""
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        duration = (container.duration or 0) / av.time_base
        return stream.codec_context.name, stream.codec_context.width, stream.codec_context.height, duration
