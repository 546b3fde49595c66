"""`broker jobs` (with `--watch`, redrawn until Ctrl-C) and `broker events ID` (one job's timeline)."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TextIO

from broker.cli.exits import Exit
from broker.cli.tables import render_table
from broker.schema import Job
from broker.sync_client import SyncBrokerClient

CLEAR_SCREEN = "\x1b[H\x1b[2J"


def _route(job: Job) -> str:
    return f"{job.route.provider}/{job.route.model}" if job.route else "-"


def _duration(job: Job) -> str:
    if job.completed_at is None:
        return "-"
    return f"{(job.completed_at - job.created_at).total_seconds():.1f}"


def jobs_table(page: list[Job]) -> str:
    rows = [
        [
            j.id,
            j.team,
            j.status.value,
            _route(j),
            str(len(j.attempts)),
            str(j.cost_usd),
            _duration(j),
            j.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        ]
        for j in page
    ]
    header = ["id", "team", "status", "route", "attempts", "cost_usd", "took_s", "created (UTC)"]
    return render_table(header, rows) if rows else "no jobs"


def jobs(
    client: SyncBrokerClient,
    args: argparse.Namespace,
    *,
    out: TextIO | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rounds: int | None = None,
) -> int:
    """The newest jobs (the key's team; every team for the admin key); with --watch, redrawn every
    --interval seconds until Ctrl-C (or `rounds` redraws, for a test)."""
    stream = out or sys.stdout
    if not args.watch:
        page, cursor = client.list(status=args.status, limit=args.limit)
        print(json.dumps(_body(page, cursor), indent=2) if args.json else _text(page, cursor), file=stream)
        return Exit.OK
    try:
        for drawn in itertools.count(1):
            page, cursor = client.list(status=args.status, limit=args.limit)
            if args.json:  # one JSON document per line: a stream a script can read
                print(json.dumps(_body(page, cursor)), file=stream)
            else:
                clear = CLEAR_SCREEN if stream.isatty() else ""
                now = datetime.now(UTC).strftime("%H:%M:%S")
                heading = f"{now} UTC, every {args.interval:g} s (Ctrl-C stops)"
                print(f"{clear}{heading}\n{_text(page, cursor)}\n", file=stream)
            stream.flush()
            if rounds is not None and drawn >= rounds:
                break
            sleep(args.interval)
    except KeyboardInterrupt:  # how a watch ends: not a failure
        pass
    return Exit.OK


def _body(page: list[Job], cursor: str | None) -> dict[str, object]:
    return {"jobs": [j.model_dump(mode="json") for j in page], "next_cursor": cursor}


def _text(page: list[Job], cursor: str | None) -> str:
    return jobs_table(page) + ("\n(more: raise --limit, up to 200)" if cursor else "")


def timeline(job: Job) -> list[dict[str, str]]:
    """The job's events in time order, from its record: accepted, each attempt's start and end, the end."""
    events = [
        {
            "at": job.created_at.isoformat(),
            "event": "accepted",
            "detail": f"quoted {_route(job)}, estimate {job.estimated_cost_usd or '-'} USD",
        }
    ]
    for number, attempt in enumerate(job.attempts, start=1):
        route = f"{attempt.provider}/{attempt.model}"
        task = f", provider task {attempt.provider_job_id}" if attempt.provider_job_id else ""
        events.append(
            {
                "at": attempt.started_at.isoformat(),
                "event": f"attempt {number} started",
                "detail": f"{route}{task}",
            }
        )
        if attempt.finished_at is not None:
            error = f": {attempt.error.code.value}: {attempt.error.message}" if attempt.error else ""
            cost = f", cost {attempt.cost_usd} USD" if attempt.cost_usd is not None else ""
            refund = f", refunded {attempt.refunded_usd} USD" if attempt.refunded_usd else ""
            events.append(
                {
                    "at": attempt.finished_at.isoformat(),
                    "event": f"attempt {number} {attempt.status.value}",
                    "detail": f"{route}{cost}{refund}{error}",
                }
            )
        elif not attempt.status.terminal:
            events.append(
                {"at": "", "event": f"attempt {number} {attempt.status.value}", "detail": f"{route} (now)"}
            )
    if job.completed_at is not None:
        error = f"{job.error.code.value}: {job.error.message}" if job.error else ""
        detail = error or f"cost {job.cost_usd} USD"
        events.append(
            {"at": job.completed_at.isoformat(), "event": f"job {job.status.value}", "detail": detail}
        )
    if job.webhook is not None:
        hook = job.webhook
        at = hook.last_attempt_at.isoformat() if hook.last_attempt_at else ""
        events.append({"at": at, "event": f"webhook {hook.status.value}", "detail": f"{hook.attempts} tries"})
    return events


def events(client: SyncBrokerClient, args: argparse.Namespace) -> int:
    job = client.get(args.job_id)
    found = timeline(job)
    if args.json:
        print(json.dumps({"job_id": job.id, "status": job.status.value, "events": found}, indent=2))
        return Exit.OK
    print(f"{job.id}  {job.status.value}  team {job.team}")
    print(
        render_table(
            ["at (UTC)", "event", "detail"], [[e["at"] or "-", e["event"], e["detail"]] for e in found]
        )
    )
    return Exit.OK
