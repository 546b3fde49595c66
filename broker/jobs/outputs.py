"""Accepting a downloaded output: probe it, keep it or normalize it to the request, store it with a
poster, and describe it on the job (`Output`). The media work is in `broker.jobs.output_media`.

Normalization is CPU work: it runs in threads, at most `Normalizer.parallel` at once per process
(each encoder held to `threads` threads), so a burst of deviating outputs cannot starve the event loop
or the machine. Probing, hashing and the poster are short and run in threads too. All of it can
outlast a lease: `keep_alive` (the step's lease renewal) is called every `KEEP_ALIVE_TICK_S` while it
runs, and if it raises (the lease is lost) the work is abandoned and the error goes up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from adapters.errors import OutputInvalid
from broker.jobs.output_media import (
    Fit,
    Shape,
    Target,
    deviations,
    normalize,
    only_index_misplaced,
    poster,
    probe,
    remux_faststart,
    sha256_file,
)
from broker.schema import JobRequest, Output
from broker.store import JobRecord
from broker.store.artifacts import ArtifactStore, output_key, poster_key
from local_backend.formats import frame_size
from policies.model import Policy

T = TypeVar("T")
KeepAlive = Callable[[], Awaitable[None]]
KEEP_ALIVE_TICK_S = 0.05  # a renewal writes only when half the lease is gone; looking is free
DEFAULT_FIT: Fit = "pad"
DEFAULT_MIN_SCALE = 0.5
DEFAULT_MIN_DURATION_RATIO = 0.8


class Normalizer:
    """Runs normalizations in threads, at most `parallel` at once."""

    def __init__(self, parallel: int | None = None, threads: int = 2) -> None:
        self.parallel = parallel or max(1, (os.cpu_count() or 2) // threads)
        self.threads = threads
        self._slots = asyncio.Semaphore(self.parallel)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        async with self._slots:
            return await asyncio.to_thread(fn, *args)


def target_of(request: JobRequest) -> Target:
    """The exact shape a request asks for: 720p 16:9 is 1280x720 (short side = the resolution)."""
    width, height = frame_size(request.aspect_ratio.value, request.resolution.value)
    return Target(width, height, float(request.duration_s), request.audio)


def check_usable(shape: Shape, target: Target, policy: Policy) -> None:
    """`OutputInvalid` when the clip is too small or too short to be made into what was asked."""
    min_scale = policy.output_min_scale or DEFAULT_MIN_SCALE
    min_duration = (policy.output_min_duration_ratio or DEFAULT_MIN_DURATION_RATIO) * target.duration_s
    if shape.width < min_scale * target.width or shape.height < min_scale * target.height:
        raise OutputInvalid(
            f"the provider's output is {shape.width}x{shape.height}, too small for the asked "
            f"{target.width}x{target.height} (the policy's output_min_scale is {min_scale:g})"
        )
    if shape.duration_s < min_duration:
        raise OutputInvalid(
            f"the provider's output lasts {shape.duration_s:g} s, shorter than the {min_duration:g} s "
            f"the policy accepts for {target.duration_s:g} s asked (output_min_duration_ratio)"
        )


def _check_normalized(shape: Shape, target: Target) -> None:
    """Only a clip shorter than asked (yet long enough to use) may differ from the request now."""
    if (shape.codec, shape.pix_fmt, shape.faststart, shape.width, shape.height) != (
        "h264",
        "yuv420p",
        True,
        target.width,
        target.height,
    ):
        raise OutputInvalid(f"the normalized output still misses the request: {deviations(shape, target)}")


def policy_of(record: JobRecord) -> Policy:
    """The policy the job was accepted under (a job stored before that was recorded: the defaults)."""
    return Policy.model_validate(record.policy) if record.policy is not None else Policy()


async def alive_while(
    work: Awaitable[T], keep_alive: KeepAlive | None, tick_s: float = KEEP_ALIVE_TICK_S
) -> T:
    """Await `work`, calling `keep_alive` every `tick_s`; if that raises, cancel `work` and re-raise."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=tick_s)
            if done:
                return task.result()
            if keep_alive is not None:
                await keep_alive()
    except BaseException:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise


async def accept_output(
    artifacts: ArtifactStore,
    normalizer: Normalizer,
    partial: Path,
    record: JobRecord,
    keep_alive: KeepAlive | None = None,
) -> Output:
    """Check the download at `partial`, normalize it if it misses the request, store it and its
    poster under the job, and describe it; `OutputInvalid` (the attempt fails, the job falls back) if
    it is no video or too small or short to use. `partial` is consumed either way. `keep_alive` is
    called while this runs (see the module doc)."""
    # This run's own files: a step that lost its lease and one that took the job over never share one.
    own = partial.with_name(f"{partial.stem}-{uuid.uuid4().hex[:8]}.mp4")
    try:
        os.replace(partial, own)
    except OSError as exc:
        raise OutputInvalid(f"the downloaded output is gone: {exc}") from exc
    return await alive_while(_accept(artifacts, normalizer, own, record), keep_alive)


async def _accept(
    artifacts: ArtifactStore, normalizer: Normalizer, partial: Path, record: JobRecord
) -> Output:
    job_id, target, policy = record.id, target_of(record.job.request), policy_of(record)
    normalized = partial.with_name(f"{partial.stem}.normalized.mp4")
    try:
        found = await asyncio.to_thread(probe, partial)
        final, shape = partial, found
        if deviations(found, target):
            check_usable(found, target, policy)
            if only_index_misplaced(found, target):
                await normalizer.run(remux_faststart, partial, normalized)
            else:
                fit = policy.output_fit or DEFAULT_FIT
                await normalizer.run(normalize, partial, normalized, found, target, fit, normalizer.threads)
            final, shape = normalized, await asyncio.to_thread(probe, normalized)
            _check_normalized(shape, target)
        picture = await asyncio.to_thread(poster, final)
        digest, size = await asyncio.to_thread(sha256_file, final), final.stat().st_size
        await artifacts.put_bytes(poster_key(job_id), picture, "image/jpeg")
        await artifacts.put_file(output_key(job_id), final, "video/mp4")
    finally:
        partial.unlink(missing_ok=True)
        normalized.unlink(missing_ok=True)
    return Output(
        url=f"/v1/jobs/{job_id}/output",
        bytes=size,
        width=shape.width,
        height=shape.height,
        duration_s=shape.duration_s,
        sha256=digest,
        fps=shape.fps,
        codec=shape.codec,
        normalized=final is normalized,
        normalized_from=found.as_dict() if final is normalized else None,
    )
