"""The bundled local backend as a provider: renders on this machine, metered in compute seconds.

Renders run in-process (see `local_backend.scheduler`). Each render's inputs (request and image) are
written under `data_dir/local` before it is queued, so a broker restarted mid-render renders the same
clip again when asked about it (the output is deterministic and costs nothing external); only a render
whose inputs are gone reports FAILED with `ProviderUnavailable`, and the router may fall back.
Replicas sharing the data directory render each clip once: a render is owned (`adapters.local_claims`)
by the process running it, and another replica asked about it reads its outcome, sees it running, or
takes it over only once its owner is gone. Text-to-video
needs model weights and is refused; so is audio. A bad image is `Rejected` with the image error's
machine code (`invalid_image`, `image_too_large`) as `provider_code`. No webhooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from adapters.base import (
    AdapterContext,
    ImageAcceptance,
    ImageInput,
    PollSchedule,
    RenderTask,
    Submission,
    TaskHandle,
    TaskState,
    TaskStatus,
    WebhookEvent,
)
from adapters.errors import ProviderError, ProviderUnavailable, Rejected
from adapters.http import NO_RETRY
from adapters.images import IMAGE_MAX_BYTES
from adapters.local_claims import RenderClaims
from adapters.spec import CancelTerms, ProviderSpec, Webhooks
from broker.schema import JobRequest, Mode
from local_backend.formats import FormatError, expected_render_seconds, frame_count, frame_size
from local_backend.image import DEFAULT_MAX_PIXELS, ImageError, decode_image, probe_image

if TYPE_CHECKING:
    from local_backend.failures import ProgressFn
    from local_backend.generator import ClipRequest, ClipResult, RenderOptions
from local_backend.scheduler import RenderJob, RenderScheduler, RenderState
from pricing.units import CostUnit, ReportedCost

PROVIDER = "local"
MODEL = "camera-motion"
# Renders take seconds: poll often, and give up long after any sane render would have finished.
POLL_SCHEDULE = PollSchedule(min_interval_s=0.5, max_interval_s=2.0)

SPEC = ProviderSpec(
    name=PROVIDER,
    # The output is a file this process wrote: a fetch that fails finds it gone, nothing to wait for.
    output_retention_s=0.0,
    poll_schedule=POLL_SCHEDULE,
    image_acceptance=ImageAcceptance(url=False, file_max_bytes=IMAGE_MAX_BYTES),
    submit_retry=NO_RETRY,  # a local submit is refused only for a bad request: nothing to wait out
    billing_unit=CostUnit.COMPUTE_SECONDS,
    # Sending a lost submit again renders the same clip for free: nothing can be paid twice.
    idempotent_submit=True,
    webhooks=Webhooks.NONE,
    # A queued render is dropped unmetered; a running one stops at its next batch, metered so far.
    cancel=CancelTerms(
        stops=frozenset({TaskState.QUEUED, TaskState.RUNNING}), refunds=frozenset({TaskState.QUEUED})
    ),
)

_STATES = {
    RenderState.QUEUED: TaskState.QUEUED,
    RenderState.RUNNING: TaskState.RUNNING,
    RenderState.SUCCEEDED: TaskState.SUCCEEDED,
    RenderState.FAILED: TaskState.FAILED,
    RenderState.CANCELLED: TaskState.CANCELLED,
}
_MILLI = Decimal("0.001")


def seed_for(attempt_id: str) -> int:
    """A stable seed for a request that gave none: the same attempt renders the same clip."""
    return int.from_bytes(hashlib.sha256(attempt_id.encode()).digest()[:4], "big")


class LocalAdapter:
    """Renders image-to-video jobs with `local_backend` under `data_dir/local`."""

    spec = SPEC
    provider = PROVIDER

    def __init__(
        self,
        data_dir: Path,
        *,
        options: RenderOptions | None = None,
        concurrency: int = 1,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = data_dir / "local"
        # Built on the first render: torch is imported then, not when the broker starts (the API
        # process of a deployment that never renders locally stays small).
        self._options = options
        self.max_pixels = max_pixels
        self.scheduler = RenderScheduler(concurrency, clock)
        self.claims = RenderClaims(self.root)
        self._writing: dict[str, asyncio.Future[None]] = {}  # render id -> its outcome file being written
        self._closing = False

    @property
    def options(self) -> RenderOptions:
        if self._options is None:
            from local_backend.generator import RenderOptions

            self._options = RenderOptions()
        return self._options

    async def submit(self, task: RenderTask) -> Submission:
        """Check the request and the image, then queue the render; returns at once."""
        clip = self._clip_request(task)
        data = self._image_bytes(task)
        try:
            await asyncio.to_thread(probe_image, data, self.max_pixels)
        except ImageError as exc:
            raise Rejected(exc.message, provider=PROVIDER, provider_code=exc.code, status=422) from exc
        self.root.mkdir(parents=True, exist_ok=True)
        job_id = uuid.uuid4().hex
        await asyncio.to_thread(self._keep_inputs, job_id, task, data)
        await asyncio.to_thread(self.claims.take, job_id)  # a new id: nobody else can hold it
        estimate = self._enqueue(job_id, clip, data)
        return Submission(handle=TaskHandle(job_id, task.model), estimated_seconds=estimate)

    def _inputs(self, job_id: str) -> tuple[Path, Path]:
        return self.root / f"{job_id}.task.json", self.root / f"{job_id}.image"

    def _keep_inputs(self, job_id: str, task: RenderTask, data: bytes) -> None:
        """Write what the render needs, so a restarted process can render it again."""
        spec, image = self._inputs(job_id)
        image.write_bytes(data)
        body = {
            "attempt_id": task.attempt_id,
            "model": task.model,
            "request": task.request.model_dump(mode="json"),
        }
        spec.write_text(json.dumps(body))

    def _drop_inputs(self, job_id: str) -> None:
        for path in self._inputs(job_id):
            # Clean-up only: a file that cannot be removed must not fail the render's answer.
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)

    async def _resume(self, job_id: str) -> bool:
        """Queue again a render a previous process accepted; False if its inputs are gone."""
        spec, image = self._inputs(job_id)
        try:
            body = json.loads(await asyncio.to_thread(spec.read_text))
            data = await asyncio.to_thread(image.read_bytes)
        except (OSError, ValueError):
            return False
        request = JobRequest.model_validate(body["request"])
        task = RenderTask(body["attempt_id"], body["model"], request, ImageInput("image/*", data=data))
        self._enqueue(job_id, self._clip_request(task), data)
        return True

    def _enqueue(self, job_id: str, clip: ClipRequest, data: bytes) -> float:
        """Queue the render (owned by this process) on its device; returns the expected wait in seconds."""
        dest = self.root / f"{job_id}.{secrets.token_hex(4)}.mp4"  # this render's own file

        def work(progress: ProgressFn, stop: threading.Event) -> ClipResult:
            from local_backend.generator import render_clip

            image = decode_image(data, self.max_pixels)
            return render_clip(image, clip, dest, self.options, progress, stop)

        device = self.options.device.type
        ahead = sum(
            self.scheduler.count(device, state) for state in (RenderState.RUNNING, RenderState.QUEUED)
        )
        job = self.scheduler.submit(job_id, device, work)
        assert job.task is not None
        job.task.add_done_callback(lambda _: self._ended(job))
        # Renders ahead of this one share the device's slots; assume they are like this one.
        rounds = 1 + ahead // self.scheduler.concurrency
        return expected_render_seconds(clip.duration_s, clip.resolution) * rounds

    def _ended(self, job: RenderJob) -> None:
        """Leave the render's outcome for every replica, then let the render go (off the loop)."""
        if self._closing and job.state is RenderState.CANCELLED:
            self.claims.release(job.id)  # stopped by a shutdown, not by its owner: anyone may resume it
            return
        outcome: dict[str, object] = {"state": job.state.value, "compute_s": job.compute_s}
        if job.result is not None:
            outcome["output"] = job.result.path.name
        if job.state is RenderState.FAILED:
            failure = _failure(job)
            outcome["error"] = {"code": failure.provider_code, "message": failure.message}
            outcome["rejected"] = isinstance(failure, Rejected)
        writing = asyncio.ensure_future(asyncio.to_thread(self.claims.finish, job.id, outcome))
        self._writing[job.id] = writing
        writing.add_done_callback(lambda _: self._writing.pop(job.id, None))

    async def status(self, handle: TaskHandle) -> TaskStatus:
        """The render's state and progress; FAILED with ProviderUnavailable if no process can run it."""
        render_id = handle.provider_job_id
        job = self.scheduler.get(render_id)
        if job is None:
            if (outcome := await asyncio.to_thread(self.claims.outcome, render_id)) is not None:
                return await self._outcome_status(render_id, outcome)
            if not await asyncio.to_thread(self.claims.take, render_id):
                return TaskStatus(TaskState.RUNNING)  # a live replica renders it
            # The owner writes the outcome before it lets go of the lock: one that finished between
            # the read above and the take has left its outcome, and must not be rendered again.
            if (outcome := await asyncio.to_thread(self.claims.outcome, render_id)) is not None:
                self.claims.release(render_id)
                return await self._outcome_status(render_id, outcome)
            if await self._resume(render_id):
                job = self.scheduler.get(render_id)
            else:
                self.claims.release(render_id)
        if job is None:
            error = ProviderUnavailable(
                "the local render is unknown to this process and its inputs are gone",
                provider=PROVIDER,
                provider_code="render_lost",
            )
            return TaskStatus(TaskState.FAILED, error=error)
        state = _STATES[job.state]
        cost = _metered(job) if state.terminal else None
        if state is TaskState.SUCCEEDED:
            assert job.result is not None
            return TaskStatus(state, progress=1.0, output_url=job.result.path.as_uri(), reported_cost=cost)
        if state.terminal:  # failed or cancelled: nothing will be fetched, nothing is left to resume
            await self._forget(render_id)
        if state is TaskState.FAILED:
            return TaskStatus(state, progress=job.progress, reported_cost=cost, error=_failure(job))
        return TaskStatus(state, progress=job.progress, reported_cost=cost)

    async def _outcome_status(self, render_id: str, outcome: dict[str, Any]) -> TaskStatus:
        """The status a finished render's outcome file gives; an unsuccessful one is forgotten."""
        ended = self._ended_status(outcome)
        if ended.state is not TaskState.SUCCEEDED:
            await self._forget(render_id)
        return ended

    async def _forget(self, render_id: str) -> None:
        """Drop an ended render's inputs, lock and outcome (once its outcome is written)."""
        if (writing := self._writing.get(render_id)) is not None:
            await asyncio.gather(writing, return_exceptions=True)
        await asyncio.to_thread(self._drop_inputs, render_id)
        await asyncio.to_thread(self.claims.forget, render_id)

    def _ended_status(self, outcome: dict[str, Any]) -> TaskStatus:
        """The status of a render another process finished, from the outcome it left."""
        state = TaskState(outcome.get("state", "failed"))
        cost = _compute_cost(float(outcome.get("compute_s", 0.0)))
        if state is TaskState.SUCCEEDED and isinstance(name := outcome.get("output"), str):
            return TaskStatus(state, progress=1.0, output_url=(self.root / name).as_uri(), reported_cost=cost)
        error = outcome.get("error") or {}
        kind = Rejected if outcome.get("rejected") else ProviderUnavailable
        failure = kind(
            str(error.get("message", "the local render failed")),
            provider=PROVIDER,
            provider_code=error.get("code") or "render_failed",
        )
        return TaskStatus(state, reported_cost=cost, error=failure if state is TaskState.FAILED else None)

    async def cancel(self, handle: TaskHandle) -> bool:
        """Cancel a queued render, or stop a running one at its next batch."""
        cancelled = self.scheduler.cancel(handle.provider_job_id)
        await asyncio.to_thread(self._drop_inputs, handle.provider_job_id)
        return cancelled

    async def fetch_output(self, status: TaskStatus, dest: Path) -> None:
        """Move the finished MP4 to `dest`; the render directory keeps no copy."""
        source = self._output_path(status)
        if not source.is_file():
            raise ProviderUnavailable(
                "the rendered file is gone", provider=PROVIDER, provider_code="output_missing"
            )
        await asyncio.to_thread(shutil.move, source, dest)
        # Once its outcome file is written (it may still be on its way): nothing of it is left behind.
        await self._forget(source.name.split(".")[0])

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """The local backend sends no webhooks, so every callback is refused."""
        raise Rejected("the local backend sends no webhooks", provider=PROVIDER, provider_code="no_webhooks")

    async def close(self) -> None:
        """Stop unfinished renders; the app calls this when it shuts down."""
        self._closing = True
        await self.scheduler.close()
        await asyncio.gather(*self._writing.values(), return_exceptions=True)
        self.claims.close()

    def _clip_request(self, task: RenderTask) -> ClipRequest:
        request = task.request
        if request.resolved_mode is not Mode.IMAGE_TO_VIDEO:
            raise Rejected(
                "the local backend animates an image; text-to-video needs model weights it does not ship",
                provider=PROVIDER,
                provider_code="text_to_video_unsupported",
            )
        if request.audio:
            raise Rejected(
                "the local backend renders no audio", provider=PROVIDER, provider_code="audio_unsupported"
            )
        if task.model != MODEL:
            raise Rejected(
                f"unknown local model {task.model!r}", provider=PROVIDER, provider_code="unknown_model"
            )
        from local_backend.generator import ClipRequest

        clip = ClipRequest(
            prompt=request.prompt,
            duration_s=request.duration_s,
            aspect_ratio=request.aspect_ratio.value,
            resolution=request.resolution.value,
            camera_fixed=request.camera_fixed,
            seed=request.seed if request.seed is not None else seed_for(task.attempt_id),
        )
        try:
            frame_size(clip.aspect_ratio, clip.resolution)
            frame_count(clip.duration_s)
        except FormatError as exc:
            raise Rejected(str(exc), provider=PROVIDER, provider_code="unsupported_format") from exc
        return clip

    @staticmethod
    def _image_bytes(task: RenderTask) -> bytes:
        if task.image is None or task.image.data is None:
            raise Rejected(
                "the local backend needs the image's bytes", provider=PROVIDER, provider_code="image_required"
            )
        if len(task.image.data) > IMAGE_MAX_BYTES:
            raise Rejected(
                f"the image is over {IMAGE_MAX_BYTES} bytes",
                provider=PROVIDER,
                provider_code="image_too_large",
            )
        return task.image.data

    def _output_path(self, status: TaskStatus) -> Path:
        url = urlparse(status.output_url or "")
        path = Path(unquote(url.path)).resolve()
        # Only ever move files this adapter rendered, whatever a status object claims.
        if url.scheme != "file" or path.parent != self.root.resolve():
            raise Rejected(
                "not an output of the local backend", provider=PROVIDER, provider_code="foreign_output"
            )
        return path


def _metered(job: RenderJob) -> ReportedCost:
    return _compute_cost(job.compute_s)


def _compute_cost(compute_s: float) -> ReportedCost:
    seconds = Decimal(repr(compute_s)).quantize(_MILLI, rounding=ROUND_HALF_UP)
    return ReportedCost(seconds, CostUnit.COMPUTE_SECONDS)


def _failure(job: RenderJob) -> ProviderError:
    error = job.error
    if isinstance(error, ImageError):
        return Rejected(error.message, provider=PROVIDER, provider_code=error.code, status=422)
    if isinstance(error, FormatError):
        return Rejected(str(error), provider=PROVIDER, provider_code="unsupported_format")
    kind = type(error).__name__ if error is not None else "an unexpected error"
    return ProviderUnavailable(
        f"the local render failed: {kind}", provider=PROVIDER, provider_code="render_failed"
    )


def build(ctx: AdapterContext) -> LocalAdapter:
    """The adapter for the app: renders under `ctx.data_dir/local`, metered by `ctx.clock`."""
    return LocalAdapter(ctx.data_dir, clock=ctx.clock, concurrency=ctx.max_concurrency)
