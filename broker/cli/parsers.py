"""The remote commands' subparsers; each sets `remote` to the function that runs it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from broker.cli import commands
from broker.cli.jobflags import add_job_arguments
from broker.cli.remote import add_connection_arguments
from broker.cli.submit import add_submit_arguments, submit
from broker.schema import JobStatus

EXIT_CODES = """exit codes: 0 done, 1 job failed, 2 bad request or flags, 3 key refused, 4 not found,
5 no feasible route, 6 over budget, 7 broker unreachable or failing, 8 job cancelled,
9 gave up waiting, 130 interrupted"""


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")


def add_remote_commands(sub: Any) -> None:
    """Add submit, quote, jobs, status, cancel, download and pricing to the `broker` subparsers."""

    def command(name: str, help_text: str, run: object) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(
            name, help=help_text, description=help_text, epilog=EXIT_CODES
        )
        parser.set_defaults(remote=run)
        return parser

    add_submit_arguments(command("submit", "submit a job to a running broker (--wait to follow it)", submit))
    quote = command(
        "quote", "what a job would cost on each route, and why other routes can't take it", commands.quote
    )
    add_job_arguments(quote)
    _json_flag(quote)
    jobs = command("jobs", "list recent jobs", commands.jobs)
    jobs.add_argument("--status", choices=[s.value for s in JobStatus])
    jobs.add_argument("--limit", type=int, default=20, help="how many (1-200, default 20)")
    _json_flag(jobs)
    status = command("status", "one job: status, route, attempts, cost", commands.status)
    status.add_argument("job_id")
    _json_flag(status)
    command("cancel", "cancel a job (at its provider too, where it can)", commands.cancel).add_argument(
        "job_id"
    )
    download = command("download", "save a finished job's MP4", commands.download)
    download.add_argument("job_id")
    download.add_argument("-o", "--output", type=Path, help="file to write (default <job id>.mp4)")
    pricing = command("pricing", "every route's price", commands.pricing)
    _json_flag(pricing)
    for name in ("quote", "jobs", "status", "cancel", "download", "pricing"):
        add_connection_arguments(sub.choices[name])
