"""Renders off the event loop, at most `concurrency` at a time per device, the rest waiting in order.

Each job runs its work function in a worker thread; the loop only awaits it. A queued job can be
cancelled outright; a running one is asked to stop at its next batch through a threading.Event.
Compute time is metered by the injected clock around the work itself, not the wait in the queue.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from broker.schema import Lifecycle
from local_backend.failures import RENDER_FAILURES, ProgressFn, RenderCancelled

if TYPE_CHECKING:
    from local_backend.generator import ClipResult

RenderWork = Callable[[ProgressFn, threading.Event], "ClipResult"]
Clock = Callable[[], float]


class RenderState(Lifecycle):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(slots=True)
class RenderJob:
    """One render's live state; the worker thread writes `progress`, the loop everything else."""

    id: str
    device: str
    state: RenderState = RenderState.QUEUED
    progress: float = 0.0
    compute_s: float = 0.0
    result: ClipResult | None = None
    error: BaseException | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    task: asyncio.Task[None] | None = None


class RenderScheduler:
    """Runs render jobs with a per-device concurrency limit; keeps the last `history` finished jobs."""

    def __init__(self, concurrency: int = 1, clock: Clock = time.monotonic, history: int = 1024) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self._clock = clock
        self._history = history
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._jobs: OrderedDict[str, RenderJob] = OrderedDict()

    def submit(self, job_id: str, device: str, work: RenderWork) -> RenderJob:
        """Queue `work` on `device`; returns at once with the job in state QUEUED."""
        if job_id in self._jobs:
            raise ValueError(f"render {job_id} already exists")
        job = RenderJob(id=job_id, device=device)
        self._jobs[job_id] = job
        job.task = asyncio.get_running_loop().create_task(self._run(job, work), name=f"render-{job_id}")
        self._forget_old()
        return job

    def get(self, job_id: str) -> RenderJob | None:
        """The job, or None when this process never saw it (or forgot it long after it finished)."""
        return self._jobs.get(job_id)

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job; False when unknown or already finished."""
        job = self._jobs.get(job_id)
        if job is None or job.state.terminal:
            return False
        job.stop.set()
        if job.state is RenderState.QUEUED:
            # Settled here: a task cancelled before its first step never runs its own handler.
            job.state = RenderState.CANCELLED
            if job.task is not None:
                job.task.cancel()
        return True

    def count(self, device: str, state: RenderState) -> int:
        """How many jobs on `device` are in `state` now."""
        return sum(1 for job in self._jobs.values() if job.device == device and job.state is state)

    async def close(self) -> None:
        """Cancel everything unfinished and wait for the workers to stop."""
        tasks = [job.task for job in self._jobs.values() if job.task is not None and not job.task.done()]
        for job in self._jobs.values():
            if not job.state.terminal:
                self.cancel(job.id)
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, job: RenderJob, work: RenderWork) -> None:
        slot = self._slots.setdefault(job.device, asyncio.Semaphore(self.concurrency))
        try:
            async with slot:
                if job.stop.is_set():
                    job.state = RenderState.CANCELLED
                    return
                job.state = RenderState.RUNNING
                await self._work(job, work)
        except asyncio.CancelledError:
            job.stop.set()
            job.state = RenderState.CANCELLED

    async def _work(self, job: RenderJob, work: RenderWork) -> None:
        def report(fraction: float) -> None:
            job.progress = fraction

        def metered() -> ClipResult:
            started = self._clock()
            try:
                return work(report, job.stop)
            finally:
                job.compute_s = self._clock() - started

        # shield: cancelling the task must not abandon a thread that still holds the device.
        future = asyncio.ensure_future(asyncio.to_thread(metered))
        try:
            job.result = await asyncio.shield(future)
            job.progress, job.state = 1.0, RenderState.SUCCEEDED
        except asyncio.CancelledError:
            job.stop.set()
            await asyncio.gather(future, return_exceptions=True)
            job.state = RenderState.CANCELLED
            raise
        except RenderCancelled:
            job.state = RenderState.CANCELLED
        except RENDER_FAILURES as exc:
            job.error, job.state = exc, RenderState.FAILED
        finally:
            if job.state is RenderState.RUNNING:  # a bug escaped: never leave the job looking alive
                job.state = RenderState.FAILED

    def _forget_old(self) -> None:
        finished = [key for key, job in self._jobs.items() if job.state.terminal]
        for key in finished[: max(0, len(self._jobs) - self._history)]:
            del self._jobs[key]
