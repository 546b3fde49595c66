"""One still in, one MP4 out: plan the camera, render frames in batches, encode them as they come.

Rendering (torch) and encoding (x264) overlap: while the encoder thread compresses batch k, this thread
renders batch k+1. Both release the GIL in their heavy loops, so two cores stay busy.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from local_backend.encode import EncodeSettings, Mp4Writer
from local_backend.failures import ProgressFn, RenderCancelled
from local_backend.formats import FPS, frame_count, frame_size
from local_backend.motion import Motion, choose_motion, plan_path
from local_backend.render import FrameRenderer, batch_size
from local_backend.source import analyse, prepare_source


@dataclass(frozen=True, slots=True)
class ClipRequest:
    """What to make of the still; string values match the broker's schema ("16:9", "720p")."""

    prompt: str = ""
    duration_s: int = 5
    aspect_ratio: str = "16:9"
    resolution: str = "720p"
    camera_fixed: bool = False
    seed: int = 0


@dataclass(frozen=True, slots=True)
class ClipResult:
    """The finished clip and how it was made."""

    path: Path
    width: int
    height: int
    frames: int
    fps: int
    motion: Motion
    render_s: float  # wall time of the whole render, encoding included


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """Where and how to render: the device, the encoder settings, CPU threads."""

    device: torch.device = field(default_factory=lambda: default_device())
    encode: EncodeSettings = field(default_factory=EncodeSettings)
    # One intra-op thread renders while x264 takes the other core; two torch threads contending
    # with the encoder spin in OpenMP barriers and measured several times slower on 2 cores.
    cpu_threads: int = 1


def default_device() -> torch.device:
    """The GPU when torch sees one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def render_clip(
    image: Image.Image,
    request: ClipRequest,
    dest: Path,
    options: RenderOptions | None = None,
    on_progress: ProgressFn | None = None,
    cancelled: threading.Event | None = None,
) -> ClipResult:
    """Render `request` from an RGB still into an MP4 at `dest` (written whole, or not at all)."""
    options = options or RenderOptions()
    started = time.perf_counter()
    if options.device.type == "cpu" and torch.get_num_threads() != options.cpu_threads:
        torch.set_num_threads(options.cpu_threads)  # process-wide: this backend is torch's only user
    width, height = frame_size(request.aspect_ratio, request.resolution)
    frames = frame_count(request.duration_s)
    choice = choose_motion(request.prompt, request.camera_fixed)
    with torch.inference_mode():
        analysis = analyse(image, width / height, options.device)
        path = plan_path(choice, frames, request.duration_s, request.seed, analysis.focus)
        source = prepare_source(image, width, height, path.max_zoom, options.device)
        renderer = FrameRenderer(source, path, width, height, analysis.nearness, request.seed)
        partial = dest.with_name(dest.name + ".part")
        with Mp4Writer(partial, width, height, FPS, options.encode) as writer:
            _pipeline(renderer, writer, frames, batch_size(width, height), on_progress, cancelled)
    os.replace(partial, dest)
    return ClipResult(dest, width, height, frames, FPS, choice.motion, time.perf_counter() - started)


def _pipeline(
    renderer: FrameRenderer,
    writer: Mp4Writer,
    frames: int,
    batch: int,
    on_progress: ProgressFn | None,
    cancelled: threading.Event | None,
) -> None:
    """Render batch k+1 here while the encoder thread writes batch k."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-encode") as encoder:
        pending: Future[None] | None = None
        for start in range(0, frames, batch):
            if cancelled is not None and cancelled.is_set():
                raise RenderCancelled("render cancelled")
            pixels = renderer.render(start, min(start + batch, frames)).numpy()
            if pending is not None:
                pending.result()
                _report(on_progress, start, frames)
            pending = encoder.submit(writer.write, pixels)
        if pending is not None:
            pending.result()
        writer.close()
    _report(on_progress, frames, frames)


def _report(on_progress: ProgressFn | None, done: int, total: int) -> None:
    if on_progress is not None:
        on_progress(done / total)
