"""The subparsers of `broker report` and the remote commands; each remote command sets `remote` to the
name `remote.run_remote` runs. Nothing here imports the client or the schema, so `--help` is quick."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from broker.cli.jobflags import add_job_arguments

# The values of broker.schema.JobStatus (a test holds the two together).
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")

EXIT_CODES = """exit codes: 0 done, 1 job failed, 2 bad request or flags, 3 key refused, 4 not found,
5 no feasible route, 6 over budget, 7 broker unreachable or failing, 8 job cancelled,
9 gave up waiting, 130 interrupted"""

DEFAULT_URL = "http://127.0.0.1:8080"


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"the broker's URL (default: BROKER_URL or {DEFAULT_URL})")
    parser.add_argument("--key", help="API key (default: BROKER_API_KEY); a team key, or the admin key")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per HTTP call (default 60)")


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `broker report`: the report's window and groups, and where it is read from."""
    parser.add_argument(
        "--from", dest="start", metavar="DATE", help="first day or instant, ISO (default: start of the month)"
    )
    parser.add_argument(
        "--to", dest="end", metavar="DATE", help="last day (inclusive) or instant (exclusive); default now"
    )
    parser.add_argument(
        "--by",
        default="provider",
        metavar="DIMS",
        help="group by any of provider,team,model,day (comma-separated)",
    )
    parser.add_argument("--team", help="only this team's jobs")
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    shape.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    parser.add_argument(
        "--reconcile",
        action="store_true",
        help="booked spend against the providers' own figures per provider and day, and discrepancies",
    )
    add_connection_arguments(parser)
    parser.add_argument(
        "--store-url",
        help="read this store directly instead of asking a broker (no key needed; every team). "
        "BROKER_REDIS_PREFIX and BROKER_REDIS_CLUSTER apply as they do to `broker serve`",
    )


def add_remote_commands(sub: Any) -> None:
    """Add the commands that speak to a running broker to the `broker` subparsers."""

    def command(name: str, help_text: str, run: str, on: Any = sub) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = on.add_parser(
            name, help=help_text, description=help_text, epilog=EXIT_CODES
        )
        parser.set_defaults(remote=run)
        add_connection_arguments(parser)
        return parser

    submit = command("submit", "submit a job to a running broker (--wait to follow it)", "submit")
    add_job_arguments(submit)
    submit.add_argument("--wait", "-w", action="store_true", help="follow the job and save its MP4")
    submit.add_argument("-o", "--output", type=Path, help="where to save the MP4 (implies --wait)")
    submit.add_argument("--idempotency-key", help="resubmitting with the same key returns the same job")
    submit.add_argument("--poll", type=float, default=1.0, metavar="S", help="seconds between status checks")
    submit.add_argument("--wait-timeout", type=float, default=1800, metavar="S", help="give up waiting after")

    batch = command(
        "batch",
        "send a CSV or JSONL file of jobs as one batch, all or none (--wait: save one MP4 per row)",
        "batch",
    )
    batch.add_argument(
        "file", type=Path, metavar="FILE.csv|FILE.jsonl", help="a header row of job fields, or a job per line"
    )
    batch.add_argument(
        "--wait", "-w", action="store_true", help="follow the batch, then save its MP4s and manifest"
    )
    batch.add_argument(
        "--out", type=Path, metavar="DIR", help="folder for row-NNNN.mp4 and manifest.json (implies --wait)"
    )
    batch.add_argument("--idempotency-key", help="resending with the same key returns the same batch")
    batch.add_argument("--poll", type=float, default=2.0, metavar="S", help="seconds between status checks")
    batch.add_argument("--wait-timeout", type=float, default=7200, metavar="S", help="give up waiting after")

    quote = command(
        "quote", "what a job would cost on each route, and why other routes can't take it", "quote"
    )
    add_job_arguments(quote)
    quote.add_argument("--feasible", action="store_true", help="only the routes that can take the job")
    _json_flag(quote)

    jobs = command("jobs", "list recent jobs (--watch to keep the list up to date)", "jobs")
    jobs.add_argument("--status", choices=JOB_STATUSES)
    jobs.add_argument("--limit", type=int, default=20, help="how many (1-200, default 20)")
    jobs.add_argument("--watch", action="store_true", help="redraw the list every --interval seconds")
    jobs.add_argument("--interval", type=float, default=2.0, metavar="S", help="seconds between redraws")
    _json_flag(jobs)

    status = command("status", "one job: status, route, attempts, cost", "status")
    status.add_argument("job_id")
    _json_flag(status)
    events = command(
        "events", "one job's timeline: accepted, each attempt's start and end, the end", "events"
    )
    events.add_argument("job_id")
    _json_flag(events)
    command("cancel", "cancel a job (at its provider too, where it can)", "cancel").add_argument("job_id")
    download = command("download", "save a finished job's MP4", "download")
    download.add_argument("job_id")
    download.add_argument("-o", "--output", type=Path, help="file to write (default <job id>.mp4)")
    _json_flag(command("pricing", "every route's price", "pricing"))
    _json_flag(
        command("providers", "each provider's health: circuit, capacity in use, latency, errors", "providers")
    )
    budgets = command("budgets", "each team's budget windows: limit, spent, reserved, remaining", "budgets")
    budgets.add_argument("--team", help="only this team (a team key sees its own)")
    _json_flag(budgets)
    _add_policy_commands(sub, command)


def _add_policy_commands(sub: Any, command: Any) -> None:
    policy = sub.add_parser(
        "policy", help="show, edit or list the history of a team's policy", description="Team policies."
    )
    actions = policy.add_subparsers(dest="policy_action", required=True, metavar="ACTION")
    show = command(
        "show", "a team's policy: its own fields, the effective policy, budgets", "policy_show", actions
    )
    show.add_argument("team", nargs="?", help="the team (default: every team the key may see)")
    _json_flag(show)
    edit = command(
        "edit",
        "edit a team's policy in $EDITOR and save it as the next version (admin key)",
        "policy_edit",
        actions,
    )
    edit.add_argument("team")
    edit.add_argument(
        "--file", type=Path, help="save this JSON file as the policy instead of opening an editor"
    )
    history = command(
        "history", "every version of a team's policy: who changed what, when", "policy_history", actions
    )
    history.add_argument("team")
    _json_flag(history)
