"""The chaos bench's reading of a double fetch: only the killed replica's unfinished download, fetched
again after the kill, is explained; two live fetches, a finished first fetch, or a fetch the logs do
not show stay a broken invariant."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from bench.refetches import Fetch, classify, downloads_by_attempt, fetches_in_log

KILL = datetime(2025, 5, 1, 12, 0, 0, tzinfo=UTC)


def fetch(replica: int, seconds: float, outcome: str | None, owner: str = "") -> Fetch:
    """A fetch of attempt "a1" started `seconds` after the kill (negative: before it)."""
    return Fetch(replica, "a1", owner or f"runner-{replica}-1", KILL + timedelta(seconds=seconds), outcome)


def test_the_killed_replicas_unfinished_fetch_redone_after_the_kill_is_explained() -> None:
    found = classify({"a1": 2}, [fetch(0, -30, None), fetch(1, 40, "fetched")], killed=0, killed_at=KILL)
    assert found.after_kill == ["a1"] and found.unexplained == {}


def test_two_fetches_by_live_replicas_are_not_explained() -> None:
    logged = [fetch(1, 10, "fetched"), fetch(2, 80, "fetched")]
    found = classify({"a1": 2}, logged, killed=0, killed_at=KILL)
    assert found.after_kill == [] and found.unexplained == {"a1": logged}


def test_a_fetch_the_killed_replica_finished_is_not_explained() -> None:
    found = classify({"a1": 2}, [fetch(0, -30, "fetched"), fetch(1, 40, "fetched")], killed=0, killed_at=KILL)
    assert list(found.unexplained) == ["a1"]


def test_a_second_fetch_while_the_first_replica_still_lived_is_not_explained() -> None:
    found = classify({"a1": 2}, [fetch(0, -30, None), fetch(1, -5, "fetched")], killed=0, killed_at=KILL)
    assert list(found.unexplained) == ["a1"]


def test_more_downloads_than_logged_fetches_are_not_explained() -> None:
    found = classify({"a1": 3}, [fetch(0, -30, None), fetch(1, 40, "fetched")], killed=0, killed_at=KILL)
    assert list(found.unexplained) == ["a1"]


def test_outputs_fetched_once_are_left_out() -> None:
    found = classify({"a1": 1, "a2": 1}, [fetch(1, 5, "fetched")], killed=0, killed_at=KILL)
    assert found.after_kill == [] and found.unexplained == {}


def test_a_replicas_log_pairs_each_start_with_its_end_by_attempt_and_owner() -> None:
    def line(event: str, owner: str, seconds: int, **more: str) -> str:
        at = (KILL + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
        return json.dumps({"event": event, "attempt_id": "a1", "owner": owner, "timestamp": at, **more})

    lines = [
        line("output_fetch_started", "runner-x-3", 0),
        "Traceback (most recent call last):",  # a raw line among the JSON ones
        line("output_fetch_ended", "runner-x-3", 2, outcome="failed"),
        line("job_succeeded", "runner-x-9", 3),
        line("output_fetch_started", "runner-x-9", 9),
    ]
    assert fetches_in_log(2, lines) == [
        Fetch(2, "a1", "runner-x-3", KILL, "failed"),
        Fetch(2, "a1", "runner-x-9", KILL + timedelta(seconds=9), None),
    ]


def test_download_paths_count_under_their_tasks_attempt_or_else_the_path() -> None:
    paths = ["/_emulator/media/t1.mp4", "/_emulator/media/t1.mp4", "/_emulator/media/t9.mp4"]
    assert downloads_by_attempt(paths, {"t1": "a1"}) == {"a1": 2, "/_emulator/media/t9.mp4": 1}
