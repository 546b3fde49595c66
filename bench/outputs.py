"""Benchmark output normalization: compute seconds per output second at 720p and 1080p, against
decoding the same clip alone, and the share of emulated providers' outputs kept untouched.

For each resolution it makes two 5 s "provider" clips from the bundled sample photo (a slow pan, so
the encoder sees real texture, not a flat gradient): one a few rows off on a 32-pixel grid at 24 fps
(fal-style), one at 16 fps (muvi-style). It normalizes each to the asked 16:9 size as the broker does
(`broker.jobs.output_media.normalize`, 2 encoder threads as `Normalizer` runs it) and prints the
process CPU seconds (all threads) per output second, and the ratio to the CPU of only decoding the
source (the least any normalization must spend). Last, for each emulated provider's delivery at 16:9
720p 5 s, whether the broker keeps its bytes. Bounded: four normalizations, about a minute on 2 cores.

    python -m bench.outputs [--resolutions 720p,1080p]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from adapters.emulators.doitong import DoitongEmulator
from adapters.emulators.fal import FalEmulator
from adapters.emulators.media import clip
from adapters.emulators.muvi import MuviEmulator
from adapters.emulators.pixelapi import PixelApiEmulator
from adapters.emulators.runway import RunwayEmulator
from broker.jobs.output_media import Target, deviations, normalize, probe
from local_backend.assets import SAMPLE_IMAGE
from local_backend.formats import frame_size

DURATION_S = 5
THREADS = 2


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measured(work: Callable[[], object]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of `work`."""
    cpu, wall = cpu_s(), time.perf_counter()
    work()
    return cpu_s() - cpu, time.perf_counter() - wall


def provider_clip(path: Path, width: int, height: int, fps: int) -> None:
    """A 5 s pan across the sample photo, H.264 at `fps`, as a provider might send it."""
    photo = Image.open(SAMPLE_IMAGE).convert("RGB")
    scale = max(width * 1.25 / photo.width, height / photo.height)
    photo = photo.resize((round(photo.width * scale) + 2, round(photo.height * scale) + 2))
    pixels = np.asarray(photo)
    travel = pixels.shape[1] - width
    frames = DURATION_S * fps
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.options = {"preset": "veryfast", "crf": "20"}
        for index in range(frames):
            left = round(travel * index / max(1, frames - 1))
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels[:height, left : left + width]))
            frame.pts = index
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def decode_only(path: Path) -> None:
    with av.open(str(path)) as container:
        for _ in container.decode(video=0):
            pass


def bench_resolution(resolution: str, folder: Path) -> None:
    width, height = frame_size("16:9", resolution)
    target = Target(width, height, float(DURATION_S), audio=False)
    for name, (src_w, src_h, fps) in {
        "rows off (32-px grid), 24 fps": (width, height // 32 * 32, 24),
        "16 fps": (width, height, 16),
    }.items():
        source, dest = folder / f"{resolution}-{fps}.mp4", folder / f"{resolution}-{fps}-out.mp4"
        provider_clip(source, src_w, src_h, fps)
        shape = probe(source)
        decode_cpu, _ = measured(lambda s=source: decode_only(s))
        cpu, wall = measured(lambda s=source, d=dest, sh=shape: normalize(s, d, sh, target, "pad", THREADS))
        out = probe(dest)
        print(
            f"{resolution} {src_w}x{src_h}@{fps} ({name}) -> {out.width}x{out.height}@{out.fps:g} "
            f"{out.duration_s:g}s: {cpu / DURATION_S:.3f} compute-s per output s "
            f"({wall:.2f} s wall), {cpu / decode_cpu:.1f}x decoding it alone ({decode_cpu / DURATION_S:.3f})"
        )


def untouched_share(folder: Path) -> None:
    width, height = frame_size("16:9", "720p")
    target = Target(width, height, float(DURATION_S), audio=False)
    kept = []
    for emulator in (RunwayEmulator, FalEmulator, MuviEmulator, DoitongEmulator, PixelApiEmulator):
        path = folder / f"{emulator.provider}.mp4"
        path.write_bytes(clip(width, height, DURATION_S, emulator.delivery))
        found = deviations(probe(path), target)
        kept.append(not found)
        verdict = "normalized: " + "; ".join(found) if found else "kept as delivered"
        print(f"  {emulator.provider:9} {verdict}")
    print(f"emulated outputs kept untouched: {sum(kept)}/{len(kept)} ({100 * sum(kept) / len(kept):.0f}%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--resolutions", default="720p,1080p")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-outputs-") as name:
        folder = Path(name)
        for resolution in args.resolutions.split(","):
            bench_resolution(resolution, folder)
        print("16:9 720p 5 s from each emulated provider:")
        untouched_share(folder)


if __name__ == "__main__":
    main()
