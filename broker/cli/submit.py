"""`broker submit`: send a job, and with `--wait` follow it to the end and save the MP4.

Ctrl-C while waiting asks whether to cancel the job (on a terminal; elsewhere the job is left
running) and exits 130, or 8 once the job is cancelled.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from broker.cli.commands import exit_for_job, image_limit
from broker.cli.exits import Exit
from broker.cli.jobflags import check_image_size, job_input
from broker.cli.progress import Progress, snapshot
from broker.schema import Job, JobStatus
from broker.sync_client import SyncBrokerClient

TICK_S = 0.5  # the live line is redrawn this often; the job is fetched every --poll seconds


def _ask_on_terminal(question: str) -> bool:
    """Ask yes/no on the terminal; no terminal (or no answer) means no."""
    if not sys.stdin.isatty():
        return False
    try:
        return input(question).strip().lower() in ("y", "yes")
    except (EOFError, KeyboardInterrupt):
        return False


@dataclass
class Console:
    """Where `submit` writes and how it waits: the real terminal and clock unless a test says otherwise."""

    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    live: bool | None = None  # None: a live line only when `out` is a terminal
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    ask: Callable[[str], bool] = _ask_on_terminal


def _expected_latencies(client: SyncBrokerClient) -> dict[str, int]:
    table = client.pricing()
    return {f"{r['provider']}/{r['model']}": int(r["expected_latency_s"]) for r in table["routes"]}


def follow(client: SyncBrokerClient, job: Job, args: argparse.Namespace, console: Console) -> Job:
    """Poll the job until it ends, redrawing the progress line every tick; TimeoutError past the limit."""
    expected = _expected_latencies(client)
    live = console.out.isatty() if console.live is None else console.live
    progress = Progress(console.out, live=live)
    started = console.clock()
    next_poll = started
    try:
        while True:
            now = console.clock()
            if now >= next_poll:
                job = client.get(job.id)
                next_poll = now + args.poll
            progress.show(snapshot(job, now - started, expected))
            if job.status.terminal:
                return job
            if now - started > args.wait_timeout:
                raise TimeoutError(f"job {job.id} still {job.status.value} after {args.wait_timeout:g} s")
            console.sleep(min(TICK_S, args.poll))
    finally:
        progress.finish()


def _interrupted(client: SyncBrokerClient, job: Job, console: Console) -> int:
    if console.ask(f"\ncancel job {job.id}? [y/N] "):
        cancelled = client.cancel(job.id)
        print(f"{cancelled.id}: cancel requested ({cancelled.status.value})", file=console.err)
        return Exit.CANCELLED
    print(f"broker: stopped waiting; job {job.id} goes on (`broker status {job.id}`)", file=console.err)
    return Exit.INTERRUPTED


def _finish(client: SyncBrokerClient, job: Job, output: Path, console: Console) -> int:
    if job.status is JobStatus.SUCCEEDED:
        path = client.download(job.id, output)
        print(f"{path}: {path.stat().st_size} bytes, cost {job.cost_usd} USD", file=console.out)
    elif job.error is not None:
        print(
            f"broker: job {job.id} {job.status.value}: {job.error.message} ({job.error.code.value})",
            file=console.err,
        )
    else:
        print(f"broker: job {job.id} {job.status.value}", file=console.err)
    return exit_for_job(job)


def submit(client: SyncBrokerClient, args: argparse.Namespace, console: Console | None = None) -> int:
    """Submit; print the job id; with --wait (or -o) follow it and save the MP4."""
    console = console or Console()
    given = job_input(args)
    if given.image is not None:
        check_image_size(given.image, image_limit(client))
    job = client.submit(given.fields, image=given.image, idempotency_key=args.idempotency_key)
    route = f"{job.route.provider}/{job.route.model}" if job.route else "-"
    print(
        f"{job.id} {job.status.value} via {route}, estimated {job.estimated_cost_usd} USD", file=console.err
    )
    if not (args.wait or args.output):
        print(job.id, file=console.out)
        return Exit.OK
    try:
        job = follow(client, job, args, console)
    except KeyboardInterrupt:
        return _interrupted(client, job, console)
    except TimeoutError as exc:
        print(f"broker: {exc}; it goes on (`broker status {job.id}`)", file=console.err)
        return Exit.TIMEOUT
    return _finish(client, job, args.output or Path(f"{job.id}.mp4"), console)
