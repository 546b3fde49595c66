"""The render queue: a per-device concurrency limit, cancelling queued and running renders, metering."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from local_backend.failures import ProgressFn, RenderCancelled
from local_backend.generator import ClipResult
from local_backend.motion import Motion
from local_backend.scheduler import RenderJob, RenderScheduler, RenderState, RenderWork


class Gate:
    """A render stand-in that runs until the test opens its gate (or the job is told to stop)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def work(self, seconds: list[float] | None = None) -> RenderWork:
        def run(progress: ProgressFn, stop: threading.Event) -> ClipResult:
            self.started.set()
            progress(0.5)
            while not self.release.wait(0.005):
                if stop.is_set():
                    raise RenderCancelled("stopped")
            if seconds is not None:
                seconds.append(1.0)
            return ClipResult(Path("clip.mp4"), 16, 16, 24, 24, Motion.STATIC, 0.0)

        return run


def finished(job: RenderJob) -> Callable[[], bool]:
    return lambda: job.state.terminal


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.002)


async def test_a_second_render_waits_for_the_first_on_the_same_device() -> None:
    scheduler = RenderScheduler(concurrency=1)
    first_gate, second_gate = Gate(), Gate()
    first = scheduler.submit("a", "cpu", first_gate.work())
    second = scheduler.submit("b", "cpu", second_gate.work())
    await asyncio.to_thread(first_gate.started.wait, 5)
    await asyncio.sleep(0.05)
    assert (first.state, second.state) == (RenderState.RUNNING, RenderState.QUEUED)
    assert not second_gate.started.is_set()
    assert scheduler.count("cpu", RenderState.QUEUED) == 1
    first_gate.release.set()
    await _until(lambda: second.state is RenderState.RUNNING)
    assert first.state is RenderState.SUCCEEDED and first.progress == 1.0
    second_gate.release.set()
    await _until(lambda: second.state.terminal)
    assert second.state is RenderState.SUCCEEDED


async def test_the_limit_is_per_device_and_configurable() -> None:
    scheduler = RenderScheduler(concurrency=2)
    gates = [Gate() for _ in range(4)]
    jobs = [scheduler.submit(str(i), "cpu" if i < 3 else "cuda", gate.work()) for i, gate in enumerate(gates)]
    await _until(
        lambda: scheduler.count("cpu", RenderState.RUNNING) == 2 and jobs[3].state is RenderState.RUNNING
    )
    assert jobs[2].state is RenderState.QUEUED
    for gate in gates:
        gate.release.set()
    await _until(lambda: all(job.state is RenderState.SUCCEEDED for job in jobs))


async def test_cancelling_a_queued_render_never_starts_it() -> None:
    scheduler = RenderScheduler()
    first_gate, second_gate = Gate(), Gate()
    scheduler.submit("a", "cpu", first_gate.work())
    second = scheduler.submit("b", "cpu", second_gate.work())
    assert scheduler.cancel("b") is True
    await _until(lambda: second.state is RenderState.CANCELLED)
    first_gate.release.set()
    await scheduler.close()
    assert not second_gate.started.is_set()
    assert scheduler.cancel("b") is False and scheduler.cancel("unknown") is False


async def test_cancelling_a_running_render_stops_it_at_its_next_batch() -> None:
    scheduler = RenderScheduler()
    gate = Gate()
    job = scheduler.submit("a", "cpu", gate.work())
    await asyncio.to_thread(gate.started.wait, 5)
    assert scheduler.cancel("a") is True
    await _until(lambda: job.state.terminal)
    assert job.state is RenderState.CANCELLED and job.result is None


async def test_compute_time_is_metered_by_the_clock_around_the_work_only() -> None:
    ticks = iter([100.0, 103.25])
    scheduler = RenderScheduler(clock=lambda: next(ticks))
    gate = Gate()
    gate.release.set()
    job = scheduler.submit("a", "cpu", gate.work())
    await _until(lambda: job.state.terminal)
    assert job.compute_s == pytest.approx(3.25)


async def test_a_failing_render_is_recorded_not_raised() -> None:
    def broken(progress: ProgressFn, stop: threading.Event) -> ClipResult:
        raise OSError("disk full")

    scheduler = RenderScheduler()
    job = scheduler.submit("a", "cpu", broken)
    await _until(lambda: job.state.terminal)
    assert job.state is RenderState.FAILED and isinstance(job.error, OSError)
    with pytest.raises(ValueError, match="already exists"):
        scheduler.submit("a", "cpu", broken)


async def test_old_finished_jobs_are_forgotten() -> None:
    scheduler = RenderScheduler(history=2)
    for index in range(4):
        gate = Gate()
        gate.release.set()
        job = scheduler.submit(str(index), "cpu", gate.work())
        await _until(finished(job))
    scheduler.submit("last", "cpu", Gate().work())
    assert scheduler.get("0") is None and scheduler.get("3") is not None
    await scheduler.close()
