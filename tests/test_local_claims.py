"""Replicas sharing one data directory render each local clip once (`adapters.local_claims`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from adapters.base import TaskState
from adapters.local import LocalAdapter
from tests.test_local_adapter import finish, task


async def test_a_replica_polling_a_render_another_runs_sees_it_running_and_then_its_outcome(
    tmp_path: Path,
) -> None:
    owner, other = LocalAdapter(tmp_path / "data"), LocalAdapter(tmp_path / "data")
    try:
        submission = await owner.submit(task(duration_s=2))
        assert (await other.status(submission.handle)).state is TaskState.RUNNING
        assert other.scheduler.get(submission.handle.provider_job_id) is None  # no second render
        done = await finish(owner, submission.handle)
        seen = await finish(other, submission.handle)  # read from the outcome the owner left
        assert seen.state is TaskState.SUCCEEDED and seen.output_url == done.output_url
        assert seen.reported_cost == done.reported_cost
        dest = tmp_path / "out.mp4"
        await other.fetch_output(seen, dest)
        assert dest.stat().st_size > 1000
        assert sorted(p.name for p in owner.root.iterdir()) == []  # inputs, lock and outcome dropped
    finally:
        await owner.close()
        await other.close()


async def test_a_render_whose_owner_stopped_is_taken_over_once(tmp_path: Path) -> None:
    owner = LocalAdapter(tmp_path / "data")
    first, second = LocalAdapter(tmp_path / "data"), LocalAdapter(tmp_path / "data")
    try:
        submission = await owner.submit(task(duration_s=2))
        await owner.close()  # the owner's process stops mid-render: its lock goes with it
        statuses = await asyncio.gather(first.status(submission.handle), second.status(submission.handle))
        renders = [a for a in (first, second) if a.scheduler.get(submission.handle.provider_job_id)]
        assert len(renders) == 1  # exactly one replica took the render over
        assert all(not s.state.terminal for s in statuses)
        done = await finish(renders[0], submission.handle)
        assert done.state is TaskState.SUCCEEDED
        assert (await finish(first if renders[0] is second else second, submission.handle)).state is (
            TaskState.SUCCEEDED
        )
        outputs = [p for p in owner.root.iterdir() if p.suffix == ".mp4"]
        assert len(outputs) == 1  # each render writes its own file; the stopped one left none whole
    finally:
        await first.close()
        await second.close()


async def test_a_render_that_ends_between_the_outcome_read_and_the_take_is_not_rendered_again(
    tmp_path: Path,
) -> None:
    owner, other = LocalAdapter(tmp_path / "data"), LocalAdapter(tmp_path / "data")
    try:
        submission = await owner.submit(task(duration_s=2))
        render_id = submission.handle.provider_job_id
        read = other.claims.outcome
        reads: list[str] = []

        def outcome_read_before_the_owner_finished(rid: str) -> dict[str, object] | None:
            reads.append(rid)
            # The poller's first read comes while the render runs; the owner finishes right after.
            return None if len(reads) == 1 else read(rid)

        done = await finish(owner, submission.handle)  # the outcome is written, the lock let go
        other.claims.outcome = outcome_read_before_the_owner_finished  # type: ignore[method-assign]
        seen = await other.status(submission.handle)
        assert other.scheduler.get(render_id) is None  # the lock was free, but the render had ended
        assert seen.state is TaskState.SUCCEEDED and seen.output_url == done.output_url
        clips = [p.name for p in owner.root.iterdir() if p.suffix == ".mp4"]
        assert clips == [Path(done.output_url or "").name]
    finally:
        await owner.close()
        await other.close()
