"""Why the chaos bench saw an output fetched more than once, read from the replicas' logs.

The broker logs `output_fetch_started` and `output_fetch_ended` around every download, naming the
attempt and the step's owner (`broker.jobs.download`); each replica writes its own log file. An output
fetched twice is explained by the kill only when every fetch but one was started by the killed replica
before it died and never logged as ended (the bytes never arrived, so another replica had to fetch
again once the lease lapsed), and the one left started after the kill. Anything else (two fetches by
live replicas, a fetch the logs do not show) is a broken invariant.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

FETCH_EVENTS = ("output_fetch_started", "output_fetch_ended")
MEDIA_PATH = re.compile(r"/media/(?P<task>[^/]+)\.mp4$")  # the emulators' download route


@dataclass(frozen=True, slots=True)
class Fetch:
    """One download as a replica logged it; `outcome` is None when it never logged the end."""

    replica: int
    attempt_id: str
    owner: str
    started_at: datetime
    outcome: str | None

    def describe(self) -> str:
        ended = self.outcome or "no end logged"
        return f"replica {self.replica} ({self.owner}) from {self.started_at:%H:%M:%S.%f}: {ended}"


@dataclass
class Refetches:
    """Outputs fetched more than once: by attempt id, those the kill explains and the rest."""

    after_kill: list[str] = field(default_factory=list)
    unexplained: dict[str, list[Fetch]] = field(default_factory=dict)


def fetches_in_log(replica: int, lines: Iterable[str]) -> list[Fetch]:
    """The downloads one replica's JSON log lines show, each with how it ended (if it did)."""
    started: dict[tuple[str, str], datetime] = {}
    ended: dict[tuple[str, str], str] = {}
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue  # not a structured line (a crash's raw output)
        if not isinstance(event, dict) or event.get("event") not in FETCH_EVENTS:
            continue
        key = (str(event["attempt_id"]), str(event["owner"]))
        if event["event"] == "output_fetch_started":
            started[key] = datetime.fromisoformat(event["timestamp"])
        else:
            ended[key] = str(event["outcome"])
    return [
        Fetch(replica, attempt_id, owner, at, ended.get((attempt_id, owner)))
        for (attempt_id, owner), at in started.items()
    ]


def fetches_in_logs(logs: Mapping[int, Path]) -> list[Fetch]:
    """Every replica's downloads, from its log file."""
    found: list[Fetch] = []
    for replica, path in logs.items():
        with path.open(errors="replace") as lines:
            found += fetches_in_log(replica, lines)
    return found


def downloads_by_attempt(paths: Iterable[str], attempt_of_task: Mapping[str, str]) -> dict[str, int]:
    """How many download requests an emulator received per attempt (by the task its path names); a
    path no attempt owns counts under the path itself."""
    counts: dict[str, int] = {}
    for path in paths:
        match = MEDIA_PATH.search(path)
        key = attempt_of_task.get(match["task"], path) if match else path
        counts[key] = counts.get(key, 0) + 1
    return counts


def classify(
    downloads: Mapping[str, int], fetches: Iterable[Fetch], killed: int, killed_at: datetime
) -> Refetches:
    """Sort the outputs downloaded more than once into those the kill of replica `killed` at
    `killed_at` explains and the rest."""
    by_attempt: dict[str, list[Fetch]] = {}
    for fetch in fetches:
        by_attempt.setdefault(fetch.attempt_id, []).append(fetch)
    result = Refetches()
    for attempt_id, count in sorted(downloads.items()):
        if count < 2:
            continue
        logged = sorted(by_attempt.get(attempt_id, []), key=lambda f: f.started_at)
        cut_off = [
            f for f in logged if f.replica == killed and f.outcome is None and f.started_at < killed_at
        ]
        rest = [f for f in logged if f not in cut_off]
        # Every request the emulator saw was logged first (a killed replica may log one it never sent).
        if count <= len(logged) and len(rest) <= 1 and all(f.started_at >= killed_at for f in rest):
            result.after_kill.append(attempt_id)
        else:
            result.unexplained[attempt_id] = logged
    return result
