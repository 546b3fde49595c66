"""The shape of an output MP4 and how to bring one to the asked shape, with PyAV (FFmpeg).

`probe` reads what a provider delivered: container, video codec, pixel format, whether the `moov`
index comes before the media data (`faststart`: a player can start before the whole file arrived),
size, frame rate, duration, audio. `Target` is what the request asked for; `deviations` lists where a
probe misses it, and an empty list keeps the file byte for byte. `normalize` re-encodes one that
misses: scale and pad (letterbox) or crop (fill), resample the frame rate, trim to the asked duration,
H.264 yuv420p with `+faststart`; the audio a request asked for is kept (AAC), any other dropped. A
clip whose only fault is its index at the end is remuxed instead (`remux_faststart`: streams copied).

The frame rate rule: a provider's own 24, 25 or 30 fps is kept (each is a standard rate, and
resampling one to another judders); any other (16, 8, 60, 12.5 ...) is resampled to 24 fps.
"""

from __future__ import annotations

import hashlib
import io
import struct
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
from PIL import Image

from adapters.errors import OutputInvalid

Fit = Literal["pad", "crop"]
STANDARD_FPS = (24.0, 25.0, 30.0)
DEFAULT_FPS = 24
FPS_TOLERANCE = 0.01
CRF = 20  # visually lossless for generated footage at these sizes
PRESET = "veryfast"
AUDIO_RATE = 48_000
POSTER_QUALITY = 85


@dataclass(frozen=True, slots=True)
class Shape:
    """What a probe found in an MP4."""

    container: str
    codec: str
    pix_fmt: str
    faststart: bool
    width: int
    height: int
    fps: float
    duration_s: float
    audio: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Target:
    """The shape a request asks for: exact size, duration in seconds, and whether it wants audio."""

    width: int
    height: int
    duration_s: float
    audio: bool


def target_fps(shape: Shape) -> float:
    """The frame rate an output keeps: the provider's own when standard, else 24 (see module doc)."""
    for fps in STANDARD_FPS:
        if abs(shape.fps - fps) <= FPS_TOLERANCE:
            return fps
    return float(DEFAULT_FPS)


def deviations(shape: Shape, target: Target) -> list[str]:
    """Where `shape` misses `target`, in words; empty when the file can be kept as it is."""
    fps = target_fps(shape)
    found = []
    if shape.container != "mp4":
        found.append(f"container {shape.container}, not mp4")
    if shape.codec != "h264":
        found.append(f"codec {shape.codec}, not h264")
    if shape.pix_fmt != "yuv420p":
        found.append(f"pixel format {shape.pix_fmt}, not yuv420p")
    if not shape.faststart:
        found.append("moov after mdat (no faststart)")
    if (shape.width, shape.height) != (target.width, target.height):
        found.append(f"{shape.width}x{shape.height}, not {target.width}x{target.height}")
    if abs(shape.fps - fps) > FPS_TOLERANCE:
        found.append(f"{shape.fps:g} fps, not {fps:g}")
    if abs(shape.duration_s - target.duration_s) > 1.0 / fps:
        found.append(f"{shape.duration_s:g} s, not {target.duration_s:g}")
    return found


def only_index_misplaced(shape: Shape, target: Target) -> bool:
    """The clip misses the request only by its `moov` index after the media: a remux fixes it."""
    return not shape.faststart and not deviations(replace(shape, faststart=True), target)


def remux_faststart(source: Path, dest: Path) -> None:
    """Copy the streams of `source` into `dest` with the index moved to the front (no re-encode)."""
    try:
        with (
            av.open(str(source)) as inp,
            av.open(str(dest), "w", format="mp4", options={"movflags": "+faststart"}) as out,
        ):
            streams = {
                s.index: out.add_stream_from_template(s) for s in (*inp.streams.video, *inp.streams.audio)
            }
            for packet in inp.demux(*[inp.streams[i] for i in streams]):
                if packet.dts is None:  # the demuxer's empty flush packet
                    continue
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    except (av.error.FFmpegError, ValueError) as exc:
        dest.unlink(missing_ok=True)
        raise OutputInvalid(f"the provider's output could not be remuxed: {exc}") from exc


def _faststart(path: Path) -> bool:
    """Whether the top-level `moov` box comes before `mdat` (read from the box headers only)."""
    with path.open("rb") as handle:
        while True:
            header = handle.read(8)
            if len(header) < 8:
                return False
            size, kind = struct.unpack(">I4s", header)
            if kind == b"moov":
                return True
            if kind == b"mdat":
                return False
            if size == 1:
                size = struct.unpack(">Q", handle.read(8))[0] - 8
            elif size == 0:
                return False
            handle.seek(size - 8, io.SEEK_CUR)


def probe(path: Path) -> Shape:
    """The shape of the MP4 at `path`; `OutputInvalid` if it is not a decodable video."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            context = stream.codec_context
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            else:
                duration = (container.duration or 0) / av.time_base
            formats = container.format.name.split(",")
            shape = Shape(
                container="mp4" if "mp4" in formats else formats[0],
                codec=context.name,
                pix_fmt=context.pix_fmt or "unknown",
                faststart=_faststart(path),
                width=context.width,
                height=context.height,
                fps=round(float(rate), 3) if rate else 0.0,
                duration_s=round(duration, 3),
                audio=bool(container.streams.audio),
            )
    except (av.error.FFmpegError, IndexError, OSError, struct.error) as exc:
        raise OutputInvalid(f"the provider's output is not a decodable video: {exc}") from exc
    if shape.width <= 0 or shape.height <= 0 or shape.fps <= 0 or shape.duration_s <= 0:
        raise OutputInvalid(f"the provider's output has no frames to show ({shape.width}x{shape.height})")
    return shape


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _video_filters(shape: Shape, target: Target, fps: float, fit: Fit) -> list[tuple[str, str]]:
    width, height = target.width, target.height
    if fit == "pad":
        scale = f"{width}:{height}:force_original_aspect_ratio=decrease:force_divisible_by=2"
        placed = ("pad", f"{width}:{height}:(ow-iw)/2:(oh-ih)/2:color=black")
    else:
        scale = f"{width}:{height}:force_original_aspect_ratio=increase"
        placed = ("crop", f"{width}:{height}")
    return [
        ("scale", f"{scale}:flags=bicubic"),
        placed,
        ("setsar", "1"),
        ("fps", f"{fps:g}"),
        ("format", "yuv420p"),
    ]


def _graph(stream: Any, filters: list[tuple[str, str]]) -> Any:
    graph = av.filter.Graph()
    nodes = [graph.add_buffer(template=stream)]
    nodes += [graph.add(name, args) for name, args in filters]
    nodes.append(graph.add("buffersink"))
    graph.link_nodes(*nodes).configure()
    return graph


def normalize(source: Path, dest: Path, shape: Shape, target: Target, fit: Fit, threads: int = 1) -> None:
    """Re-encode `source` into `dest` at `target` (see the module doc); `OutputInvalid` if it cannot be
    decoded. `threads` bounds the encoder's threads, so one normalization takes at most that many cores."""
    fps = target_fps(shape)
    frames_out = max(1, round(min(target.duration_s, shape.duration_s) * fps))
    try:
        with (
            av.open(str(source)) as inp,
            av.open(str(dest), "w", format="mp4", options={"movflags": "+faststart"}) as out,
        ):
            video_in = inp.streams.video[0]
            video_in.thread_type = "AUTO"
            video: Any = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            video.width, video.height, video.pix_fmt = target.width, target.height, "yuv420p"
            video.codec_context.time_base = 1 / Fraction(fps).limit_denominator(1001)
            video.codec_context.thread_count = threads
            video.options = {"crf": str(CRF), "preset": PRESET}
            audio_in = inp.streams.audio[0] if target.audio and inp.streams.audio else None
            audio: Any = out.add_stream("aac", rate=AUDIO_RATE) if audio_in is not None else None
            graph = _graph(video_in, _video_filters(shape, target, fps, fit))
            written = _encode_video(inp, video_in, graph, video, out, frames_out)
            if audio_in is not None:
                _encode_audio(inp, audio_in, audio, out, written / fps)
    except (av.error.FFmpegError, IndexError, ValueError) as exc:
        dest.unlink(missing_ok=True)
        raise OutputInvalid(f"the provider's output could not be normalized: {exc}") from exc


def _encode_video(inp: Any, video_in: Any, graph: Any, video: Any, out: Any, frames_out: int) -> int:
    """Decode, filter and encode frames until `frames_out` are written; the count written."""
    written = 0

    def drain() -> None:
        nonlocal written
        while written < frames_out:
            try:
                frame = graph.vpull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return
            frame.pts, frame.time_base = written, video.codec_context.time_base
            frame.pict_type = av.video.frame.PictureType.NONE
            for packet in video.encode(frame):
                out.mux(packet)
            written += 1

    for frame in inp.decode(video_in):
        graph.vpush(frame)
        drain()
        if written >= frames_out:
            break
    else:
        graph.vpush(None)  # end of input: the fps filter hands over the frames it held back
        drain()
    for packet in video.encode():
        out.mux(packet)
    return written


def _encode_audio(inp: Any, audio_in: Any, audio: Any, out: Any, duration_s: float) -> None:
    """Re-encode the audio as AAC up to `duration_s` (a rewind: the video pass read past it)."""
    inp.seek(0, stream=audio_in)
    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)
    limit = round(duration_s * AUDIO_RATE)
    samples = 0
    for frame in inp.decode(audio_in):
        for chunk in resampler.resample(frame):
            keep = min(chunk.samples, limit - samples)
            if keep <= 0:
                break
            if keep < chunk.samples:
                chunk = _head(chunk, keep)
            chunk.pts, samples = samples, samples + keep
            for packet in audio.encode(chunk):
                out.mux(packet)
        if samples >= limit:
            break
    for packet in audio.encode():
        out.mux(packet)


def _head(frame: Any, samples: int) -> Any:
    """The first `samples` of a planar float audio frame."""
    data = frame.to_ndarray()[:, :samples].copy()
    head = av.AudioFrame.from_ndarray(data, format=frame.format.name, layout=frame.layout.name)
    head.sample_rate = frame.sample_rate
    return head


def poster(path: Path, max_side: int = 1280) -> bytes:
    """The first frame of the MP4 at `path` as a JPEG, its long side at most `max_side`."""
    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
    except (av.error.FFmpegError, StopIteration, OSError) as exc:
        raise OutputInvalid(f"the output has no first frame to show: {exc}") from exc
    image = Image.fromarray(frame.to_ndarray(format="rgb24"))
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=POSTER_QUALITY)
    return buffer.getvalue()
