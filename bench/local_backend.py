"""Benchmark the local backend: 5 s clips at 720p and 1080p, against ffmpeg's zoompan on the same job.

For each resolution it renders the bundled sample as a 16:9 push-in (the default move) `--repeat`
times after one warm-up render, and prints the best and median wall time, frames per second, the
compute seconds per output second (what `compute_s_per_output_s` in `config.yaml` should hold) and
the peak resident memory so far. Then, when an `ffmpeg` with the zoompan filter is on PATH, it makes
the same eased push-in with `zoompan` from the same image at the same size, encoder and settings,
plainly and from a 4x enlarged input (the usual cure for zoompan's whole-pixel wobble, which the local
backend's sub-pixel sampling does not have), and prints how many times faster the local backend is;
last, it counts the frames in which a thin bar on a test card steps backwards during each push-in.
Run it on an idle machine:

    python -m bench.local_backend [--repeat 3] [--prompt "zoom in"] [--resolutions 720p,1080p]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

from local_backend.assets import SAMPLE_IMAGE
from local_backend.encode import EncodeSettings
from local_backend.formats import FPS, frame_size
from local_backend.generator import ClipRequest, RenderOptions, default_device, render_clip
from local_backend.image import decode_image
from local_backend.motion import Motion, choose_motion

DURATION_S = 5
ZOOM_END = 1.2  # what the default push-in reaches on a 5 s clip (the seed varies it by ±10%)


@dataclass(frozen=True, slots=True)
class Timing:
    """Wall and CPU seconds (all threads, or the child process) of each run."""

    width: int
    height: int
    walls: list[float]
    cpus: list[float]

    @property
    def best(self) -> float:
        return min(self.walls)

    @property
    def median(self) -> float:
        return statistics.median(self.walls)


def peak_rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident memory in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(who).ru_maxrss / 1024


def bench_local(resolution: str, prompt: str, repeat: int, workdir: Path) -> Timing:
    """Render the sample `repeat` times at `resolution` after one warm-up; wall and CPU time of each."""
    image = decode_image(SAMPLE_IMAGE.read_bytes())
    request = ClipRequest(prompt=prompt, duration_s=DURATION_S, resolution=resolution, seed=1)
    options = RenderOptions()
    render_clip(image, ClipRequest(duration_s=1, resolution=resolution), workdir / "warm.mp4", options)
    walls, cpus = [], []
    for run in range(repeat):
        started, cpu = time.perf_counter(), time.process_time()
        render_clip(image, request, workdir / f"local-{resolution}-{run}.mp4", options)
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
    width, height = frame_size("16:9", resolution)
    return Timing(width, height, walls, cpus)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def zoompan_command(
    source: Path, dest: Path, width: int, height: int, encode: EncodeSettings, supersample: int = 1
) -> list[str]:
    """ffmpeg making the same eased push-in: cover-crop with the same margin, zoompan, x264 as ours.

    zoompan places and sizes its crop in whole source pixels, so a slow zoom wobbles; the usual fix is
    to enlarge the input first (`supersample`), which shrinks each step to a fraction of an output pixel.
    """
    frames = FPS * DURATION_S
    t = f"(on/{frames - 1})"
    eased = f"({t}*{t}*{t}*({t}*({t}*6-15)+10))"  # smootherstep, as local_backend.motion.ease
    margin_w = 2 * round(width * ZOOM_END * supersample / 2)
    margin_h = 2 * round(height * ZOOM_END * supersample / 2)
    video_filter = (
        f"scale={margin_w}:{margin_h}:force_original_aspect_ratio=increase:flags=lanczos,"
        f"crop={margin_w}:{margin_h},"
        f"zoompan=z='1+{ZOOM_END - 1}*{eased}':x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)'"
        f":d={frames}:s={width}x{height}:fps={FPS},format=yuv420p"
    )
    return [
        "ffmpeg", "-v", "error", "-y", "-i", str(source), "-vf", video_filter, "-frames:v", str(frames),
        "-c:v", "libx264", "-preset", encode.preset, "-crf", str(encode.crf),
        "-movflags", "+faststart", str(dest),
    ]  # fmt: skip


def bench_zoompan(local: Timing, repeat: int, workdir: Path, supersample: int = 1) -> Timing | None:
    """ffmpeg's zoompan making the same clip, timed like `local`; None without ffmpeg or zoompan."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return None
    filters = subprocess.run(
        [ffmpeg, "-hide_banner", "-filters"], capture_output=True, text=True, check=False
    )
    if " zoompan " not in filters.stdout:
        return None
    dest = workdir / "zoompan.mp4"
    command = zoompan_command(SAMPLE_IMAGE, dest, local.width, local.height, EncodeSettings(), supersample)
    walls, cpus = [], []
    for _ in range(repeat):
        started, cpu = time.perf_counter(), _children_cpu()
        subprocess.run(command, check=True)
        walls.append(time.perf_counter() - started)
        cpus.append(_children_cpu() - cpu)
    return Timing(local.width, local.height, walls, cpus)


def backward_steps(video: Path) -> int:
    """Frames in which the test card's bar moves against its overall travel: a smooth zoom has none."""
    positions = []
    with av.open(str(video)) as container:
        for frame in container.decode(video=0):
            rows = np.asarray(frame.to_ndarray(format="gray"), np.float64)
            profile = np.clip(
                rows[rows.shape[0] // 3 : 2 * rows.shape[0] // 3].mean(axis=0) - 140.0, 0.0, None
            )
            positions.append(float((profile * np.arange(profile.size)).sum() / profile.sum()))
    steps = np.diff(np.array(positions))
    return int((steps * np.sign(positions[-1] - positions[0]) < -0.05).sum())


def bench_wobble(workdir: Path) -> None:
    """Track a thin bar through the same push-in made by the local backend and by zoompan."""
    card = Image.new("RGB", (1280, 720), (128, 128, 128))
    ImageDraw.Draw(card).rectangle((200, 0, 203, 719), fill=(255, 255, 255))
    card_path = workdir / "card.png"
    card.save(card_path)
    local = render_clip(card, ClipRequest(duration_s=DURATION_S, seed=1), workdir / "card-local.mp4").path
    counts = [f"local {backward_steps(local)}"]
    if shutil.which("ffmpeg") is not None:
        for supersample in (1, 4):
            made = workdir / f"card-zoompan-{supersample}.mp4"
            subprocess.run(
                zoompan_command(card_path, made, 1280, 720, EncodeSettings(), supersample), check=True
            )
            counts.append(
                f"zoompan{'' if supersample == 1 else f' on a {supersample}x input'} {backward_steps(made)}"
            )
    frames = FPS * DURATION_S - 1
    print(f"wobble, frames (of {frames}) where a thin bar moves against the zoom: {', '.join(counts)}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print one block per resolution."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--prompt", default="zoom in")
    parser.add_argument("--resolutions", default="720p,1080p")
    parser.add_argument("--no-ffmpeg", action="store_true", help="skip the zoompan comparison")
    args = parser.parse_args(argv)
    motion = choose_motion(args.prompt).motion
    print(
        f"local backend on {default_device()}: {DURATION_S} s 16:9 {motion.value} clips, {args.repeat} runs"
    )
    # zoompan can only zoom: compare against it on a push-in, the move both make.
    compare = not args.no_ffmpeg and motion is Motion.PUSH_IN
    with tempfile.TemporaryDirectory(prefix="bench-local-") as folder:
        workdir = Path(folder)
        for resolution in args.resolutions.split(","):
            timing = bench_local(resolution, args.prompt, args.repeat, workdir)
            frames = FPS * DURATION_S
            print(
                f"{resolution} {timing.width}x{timing.height}: best {timing.best:.2f} s, "
                f"median {timing.median:.2f} s, {frames / timing.best:.0f} fps, "
                f"CPU {min(timing.cpus):.2f} s, {timing.best / DURATION_S:.3f} compute s per output s, "
                f"peak RSS {peak_rss_mib():.0f} MiB"
            )
            for supersample in (1, 4):
                zoompan = bench_zoompan(timing, args.repeat, workdir, supersample) if compare else None
                if zoompan is None:
                    print("  ffmpeg zoompan: skipped (not a push-in, --no-ffmpeg, or no ffmpeg with zoompan)")
                    break
                label = "zoompan" if supersample == 1 else f"zoompan on a {supersample}x input (smooth)"
                ratio, median_ratio = zoompan.best / timing.best, zoompan.median / timing.median
                cpu_ratio = min(zoompan.cpus) / min(timing.cpus)
                print(
                    f"  ffmpeg {label}: best {zoompan.best:.2f} s, median {zoompan.median:.2f} s, "
                    f"CPU {min(zoompan.cpus):.2f} s; local is {ratio:.2f}x faster (best), "
                    f"{median_ratio:.2f}x (median), {cpu_ratio:.2f}x in CPU"
                )
        if compare:
            bench_wobble(workdir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
