"""`broker quote`, `status`, `cancel`, `download`, `pricing`: one call each, printed for people."""

from __future__ import annotations

import argparse
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from broker.cli.exits import CommandError, Exit
from broker.cli.jobflags import check_image_size, job_input
from broker.cli.tables import render_table
from broker.schema import Job, JobStatus
from broker.sync_client import SyncBrokerClient


def exit_for_job(job: Job) -> Exit:
    """0 for a delivered clip; the failure class of a job that ended otherwise."""
    if job.status is JobStatus.FAILED:
        return Exit.JOB_FAILED
    if job.status is JobStatus.CANCELLED:
        return Exit.CANCELLED
    return Exit.OK


def _print_json(body: Any) -> None:
    print(json.dumps(body, indent=2))


def image_limit(client: SyncBrokerClient) -> int | None:
    """The largest image the broker takes in an upload (None from a broker that does not say)."""
    limits = client.pricing().get("limits") or {}
    limit = limits.get("max_image_bytes")
    return limit if isinstance(limit, int) else None


def quote(client: SyncBrokerClient, args: argparse.Namespace) -> int:
    """Feasible routes cheapest first, then (unless --feasible) every rejected route with its reasons."""
    given = job_input(args)
    if given.image is not None:
        check_image_size(given.image, image_limit(client))
    answer = client.quote(given.fields, image=given.image)
    if args.json:
        if args.feasible:
            answer = {**answer, "rejected": []}
        _print_json(answer)
        return Exit.OK if answer["chosen"] else Exit.NO_ROUTE
    chosen = answer["chosen"]
    rows = [
        [
            "*" if chosen and (r["provider"], r["model"]) == (chosen["provider"], chosen["model"]) else "",
            r["provider"],
            r["model"],
            r["cost_usd"],
            str(r.get("predicted_wait_s", 0)),
            str(r["expected_latency_s"]),
            r["quality"],
        ]
        for r in answer["routes"]
    ]
    if rows:  # wait_s: the predicted wait for a slot in the provider's queue, before the render
        print(render_table(["", "provider", "model", "cost_usd", "wait_s", "latency_s", "quality"], rows))
    else:
        print("no route can serve this job")
    if answer["rejected"] and args.feasible:
        print(f"({len(answer['rejected'])} routes cannot take it: drop --feasible to see why)")
    elif answer["rejected"]:
        print("\nrejected:")
        for rejection in answer["rejected"]:
            print(f"  {rejection['provider']}/{rejection['model']}: {'; '.join(rejection['reasons'])}")
    return Exit.OK if chosen else Exit.NO_ROUTE


def _route(job: Job) -> str:
    return f"{job.route.provider}/{job.route.model}" if job.route else "-"


def _duration(job: Job) -> str:
    if job.completed_at is None:
        return "-"
    return f"{(job.completed_at - job.created_at).total_seconds():.1f}"


def describe_job(job: Job) -> str:
    """A job as a few readable lines: status, route, cost, attempts, output or error."""
    lines = [
        f"{job.id}  {job.status.value}  team {job.team}",
        f"route     {_route(job)}  estimated {job.estimated_cost_usd or '-'} USD, cost {job.cost_usd} USD",
        f"created   {job.created_at.isoformat()}"
        + (f"  completed {job.completed_at.isoformat()}" if job.completed_at else ""),
    ]
    for number, attempt in enumerate(job.attempts, start=1):
        error = f"  {attempt.error.code.value}: {attempt.error.message}" if attempt.error else ""
        cost = attempt.cost_usd or "-"
        lines.append(
            f"attempt {number} {attempt.provider}/{attempt.model}  {attempt.status.value}  {cost} USD{error}"
        )
    if job.output is not None:
        lines.append(f"output    {job.output.bytes} bytes, {job.output.width}x{job.output.height}")
    if job.error is not None:
        lines.append(f"error     {job.error.code.value}: {job.error.message}")
    return "\n".join(lines)


def status(client: SyncBrokerClient, args: argparse.Namespace) -> int:
    job = client.get(args.job_id)
    if args.json:
        _print_json(job.model_dump(mode="json"))
    else:
        print(describe_job(job))
    return Exit.OK


def cancel(client: SyncBrokerClient, args: argparse.Namespace) -> int:
    """Ask the broker to cancel the job; say what was asked and where the job stands now."""
    job = client.cancel(args.job_id)
    if job.status is JobStatus.CANCELLED:
        print(f"{job.id}: cancelled")
    elif job.status.terminal:
        print(f"{job.id}: had already ended {job.status.value}; nothing to cancel")
    else:
        print(
            f"{job.id}: cancel requested; the job is {job.status.value} while its provider is asked to stop"
            f" (`broker status {job.id}` shows when it ends)"
        )
    return Exit.OK


def download(client: SyncBrokerClient, args: argparse.Namespace) -> int:
    job = client.get(args.job_id)
    if job.status.terminal and job.status is not JobStatus.SUCCEEDED:
        why = f": {job.error.message} ({job.error.code.value})" if job.error else ""
        raise CommandError(f"job {job.id} ended {job.status.value}{why}; it has no output", exit_for_job(job))
    path = client.download(args.job_id, args.output or Path(f"{args.job_id}.mp4"))
    print(f"{path} ({path.stat().st_size} bytes)")
    return Exit.OK


def pricing(client: SyncBrokerClient, args: argparse.Namespace) -> int:
    """Every route's configured price, and what a clip of each supported duration costs in USD."""
    table = client.pricing()
    if args.json:
        _print_json(table)
        return Exit.OK
    rows = []
    for route in table["routes"]:
        costs = sorted(Decimal(p["cost_usd"]) for p in route["prices"])
        durations = sorted({p["duration_s"] for p in route["prices"]})
        span = f"{costs[0]:.6f} - {costs[-1]:.6f}" if costs else "unpriced"
        unit = route["price"]["unit"] if route["price"] else "-"
        seconds = ",".join(str(d) for d in durations) or "-"
        rows.append([route["provider"], route["model"], route["quality"], unit, seconds, span])
    print(render_table(["provider", "model", "quality", "unit", "durations_s", "usd_per_clip"], rows))
    return Exit.OK
