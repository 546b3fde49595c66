"""Real H.264 MP4s for emulated outputs, shaped the way each provider really delivers them.

Providers do not agree on what a "5 s 720p 16:9" clip is, and the broker normalizes what they send, so
the emulators deviate as real ones do (`Delivery`), deterministically per provider: another frame rate
(16 fps, as Wan-family models render), a few rows off (a height rounded down to the model's 32-pixel
latent grid: 704 for 720), a longer clip (4k+1 frames: 5.04 s; or a whole extra second), an audio
track nobody asked for, the `moov` index at the end (no faststart). Clips are encoded once per shape
with PyAV (ultrafast: a moving gradient compresses to a few hundred kilobytes) and cached.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import av
import numpy as np

SHORT_SIDE = 720  # what every emulated provider renders unless told a resolution
AUDIO_RATE = 48_000


@dataclass(frozen=True, slots=True)
class Delivery:
    """How a provider's clip differs from the request: the default is a conforming clip."""

    fps: int = 24
    row_multiple: int = 0  # the height rounded down to this multiple (0: exact)
    extra_frames: int = 0  # frames past the asked duration
    extra_s: int = 0  # whole seconds past the asked duration
    audio: bool = False
    faststart: bool = True

    def shape(self, width: int, height: int, duration_s: int) -> tuple[int, int, int]:
        """(width, height, frames) of the clip delivered for an asked size and duration."""
        if self.row_multiple:
            height = height // self.row_multiple * self.row_multiple
        return width, height, (duration_s + self.extra_s) * self.fps + self.extra_frames


CONFORMING = Delivery()


def size_for_ratio(width: int, height: int, short_side: int = SHORT_SIDE) -> tuple[int, int]:
    """Scale `width:height` so the short side is `short_side`; both even, as H.264 4:2:0 needs."""
    scale = short_side / min(width, height)
    return _even(width * scale), _even(height * scale)


def _even(value: float) -> int:
    return max(2, round(value / 2) * 2)


def clip(width: int, height: int, duration_s: int, delivery: Delivery = CONFORMING) -> bytes:
    """The MP4 a provider with `delivery` hands over for a `width`x`height` clip of `duration_s`."""
    out_w, out_h, frames = delivery.shape(width, height, duration_s)
    return make_mp4(
        out_w,
        out_h,
        duration_s,
        fps=delivery.fps,
        frames=frames,
        audio=delivery.audio,
        faststart=delivery.faststart,
    )


@lru_cache(maxsize=32)
def make_mp4(
    width: int,
    height: int,
    duration_s: int,
    *,
    fps: int = 24,
    frames: int | None = None,
    audio: bool = False,
    faststart: bool = True,
) -> bytes:
    """An H.264 yuv420p MP4 of `duration_s` seconds (or `frames` frames) at `width`x`height`, a moving
    gradient; with `audio`, a stereo AAC tone as long as the video."""
    count = frames if frames is not None else max(1, duration_s * fps)
    options = {"movflags": "+faststart"} if faststart else {}
    # `+faststart` rewrites the file to move the index forward, which FFmpeg does only on a real file.
    with tempfile.TemporaryDirectory(prefix="emulated-mp4-") as folder:
        path = Path(folder) / "clip.mp4"
        _encode(path, width, height, fps, count, audio, options)
        return path.read_bytes()


def _encode(
    path: Path, width: int, height: int, fps: int, count: int, audio: bool, options: dict[str, str]
) -> None:
    with av.open(str(path), "w", format="mp4", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.options = {"preset": "ultrafast", "crf": "30"}
        sound = container.add_stream("aac", rate=AUDIO_RATE) if audio else None
        ramp = np.linspace(0, 255, width, dtype=np.float32)
        for index in range(count):
            shade = (ramp + index * 255 / count).astype(np.uint16) % 256
            planes = np.empty((height * 3 // 2, width), dtype=np.uint8)
            planes[:height] = shade.astype(np.uint8)
            planes[height:] = 128 + (index * 64 // count)
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None:
            _tone(container, sound, count / fps)


def _tone(container: Any, sound: Any, seconds: float) -> None:
    """A 440 Hz stereo tone of `seconds`, in 1024-sample frames (AAC's frame size)."""
    total, done = round(seconds * AUDIO_RATE), 0
    while done < total:
        size = min(1024, total - done)
        t = (np.arange(done, done + size, dtype=np.float32)) / AUDIO_RATE
        wave = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.stack([wave, wave]), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = AUDIO_RATE, done
        for packet in sound.encode(frame):
            container.mux(packet)
        done += size
    for packet in sound.encode():
        container.mux(packet)


def probe(data: bytes) -> tuple[str, int, int, float]:
    """Codec name, width, height and duration in seconds of an MP4, for tests to check outputs."""
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        duration = (container.duration or 0) / av.time_base
        return stream.codec_context.name, stream.codec_context.width, stream.codec_context.height, duration
