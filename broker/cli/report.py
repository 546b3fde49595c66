"""`broker report`: the cost report (or `--reconcile`, the reconciliation) as a table, CSV or JSON.

By default it asks a running broker (`GET /v1/reports/costs`), like every other remote command:
`--url`/`--key` or `BROKER_URL`/`BROKER_API_KEY`; a team key sees its own team, the admin key every
team. `--store-url` reads a store directly instead (no server, no key: whoever can read the store sees
every team), with the same `BROKER_REDIS_PREFIX` and `BROKER_REDIS_CLUSTER` as `broker serve`, and
names the store it read on stderr. Both modes print the same figures: the API's JSON is the source.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from broker.cli.exits import CommandError, Exit
from broker.cli.parsers import add_report_arguments

TOTAL = "(total)"
# Short column titles for the table; the CSV and JSON keep the API's field names.
TITLES = {
    "jobs": "jobs",
    "succeeded": "ok",
    "failed": "failed",
    "cancelled": "cancelled",
    "in_progress": "running",
    "attempts": "attempts",
    "spend_usd": "spend $",
    "estimate_usd": "estimate $",
    "refunds_usd": "refunds $",
    "unbilled_usd": "unbilled $",
    "avg_cost_per_success_usd": "$ per clip",
    "baseline_usd": "baseline $",
    "savings_usd": "savings $",
}


class BadOption(Exception):
    """An option the report cannot use: its name and what is wrong."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")


def cost_rows(body: dict[str, Any]) -> list[list[str]]:
    """Header, one row per group, then the totals row (group columns "(total)"), from the API's JSON."""
    dims: list[str] = body["group_by"]
    figures = list(body["totals"])

    def cells(tally: dict[str, Any]) -> list[str]:
        return ["" if tally[name] is None else str(tally[name]) for name in figures]

    body_rows = [[group[d] for d in dims] + cells(group) for group in body["groups"]]
    return [dims + figures, *body_rows, [TOTAL] * len(dims) + cells(body["totals"])]


def cost_csv(body: dict[str, Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(cost_rows(body))
    return buffer.getvalue()


def render_table(body: dict[str, Any]) -> str:
    """The report as aligned text columns: group columns left, figures right, totals last."""
    header, *rows = cost_rows(body)
    body_rows = [[cell or "-" for cell in row] for row in rows]  # "-": no average without a success
    dims = len(body["group_by"])
    titles = header[:dims] + [TITLES.get(name, name) for name in header[dims:]]
    table = [titles, *body_rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(titles))]

    def line(row: list[str]) -> str:
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [cell.ljust(w) if i < dims else cell.rjust(w) for i, (cell, w) in pairs]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    title = f"Costs from {body['from']} to {body['to']}"
    if body["group_by"]:
        title += ", by " + ", ".join(body["group_by"])
    if body.get("team"):
        title += f"; team {body['team']} only"
    groups = [line(r) for r in body_rows[:-1]]
    lines = [title, "", line(titles), rule, *groups, *([rule] if groups else []), line(body_rows[-1])]
    return "\n".join(lines) + "\n"


def render_reconciliation(body: dict[str, Any]) -> str:
    """The reconciliation as a table per provider and day, then one line per discrepancy."""
    titles = ["provider", "day", "attempts", "booked $", "confirmed $", "unconfirmed $", "unreported $"]
    titles += ["reported", "reported $"]
    rows = [titles]
    named = [*((g["provider"], g["day"], g) for g in body["groups"]), ("(total)", "-", body["totals"])]
    keys = ("booked_usd", "confirmed_usd", "unconfirmed_usd", "unreported_usd")
    for provider, day, figures in named:
        reported = ", ".join(f"{amount} {unit}" for unit, amount in figures["reported"].items()) or "-"
        rows.append([provider, day, str(figures["attempts"]), *(figures[k] for k in keys), reported])
        rows[-1].append(figures["reported_usd"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(titles))]
    lines = [f"Reconciliation from {body['from']} to {body['to']}", ""]
    for row in rows:
        cells = [
            c.ljust(w) if i in (0, 1, 7) else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    lines += ["", f"Discrepancies: {len(body['discrepancies'])}"]
    for item in body["discrepancies"]:
        said = f"{item['reported_cost'] or '-'} ({item['reported_usd'] or '-'})"
        lines.append(
            f"  {item['provider']} {item['provider_job_id']} job {item['job_id']}:"
            f" booked {item['booked_usd']}, reported {said}: {item['reason']}"
        )
    return "\n".join(lines) + "\n"


def _from_broker(args: argparse.Namespace) -> dict[str, Any]:
    """The report's JSON from a running broker."""
    import os

    from broker.cli.remote import client_from_args

    query = {"start": args.start, "end": args.end, "team": args.team}
    with client_from_args(args, os.environ) as client:
        if args.reconcile:
            return client.reconciliation(**query)
        return client.cost_report(**query, group_by=args.by)


def _from_store(args: argparse.Namespace, now: datetime, err: TextIO) -> dict[str, Any]:
    """The report's JSON read from the store `--store-url` names, with the process's Redis settings."""
    from broker.cli.offline_report import read_store_report

    return read_store_report(args, now, err)


def _report_body(args: argparse.Namespace, now: datetime, err: TextIO) -> dict[str, Any]:
    return _from_store(args, now, err) if args.store_url else _from_broker(args)


def _text(args: argparse.Namespace, body: dict[str, Any]) -> str:
    import json

    if args.json:
        return json.dumps(body, indent=2) + "\n"
    if args.reconcile:
        if args.csv:
            raise BadOption("--csv", "the reconciliation prints as a table or --json")
        return render_reconciliation(body)
    return cost_csv(body) if args.csv else render_table(body)


def report_from_args(
    args: argparse.Namespace, *, now: datetime | None = None, out: TextIO | None = None
) -> int:
    """Print the report for parsed options; 0 on success, 2 for a bad option, else the remote exit code."""
    from broker.client import BrokerAPIError
    from broker.sync_client import BrokerUnreachable

    stream, at = out or sys.stdout, now or datetime.now(UTC)
    try:
        text = _text(args, _report_body(args, at, sys.stderr))
    except BadOption as exc:
        print(f"broker report: {exc}", file=sys.stderr)
        return Exit.USAGE
    except BrokerAPIError as exc:
        from broker.cli.exits import exit_for_api_error
        from broker.cli.remote import describe

        print(f"broker report: {_api_words(exc) or describe(exc)}", file=sys.stderr)
        return exit_for_api_error(exc)
    except (BrokerUnreachable, CommandError) as exc:
        hint = "" if args.store_url else "; or read a store directly with --store-url"
        print(f"broker report: {exc}{hint}", file=sys.stderr)
        return exc.code if isinstance(exc, CommandError) else Exit.UNAVAILABLE
    stream.write(text)
    return Exit.OK


# The API's query parameters, as the options of `broker report` that set them.
OPTIONS = {"from": "--from", "to": "--to", "group_by": "--by", "team": "--team"}


def _api_words(error: Any) -> str | None:
    """A refused query parameter said as the option that set it ("--by: ..."), or None."""
    details = error.details
    if error.status != 400 or not isinstance(details, list) or not details:
        return None
    said = [f"{OPTIONS.get(d.get('field'), d.get('field'))}: {d.get('message')}" for d in details]
    return "; ".join(said)


def run_report(argv: Sequence[str], *, now: datetime | None = None, out: TextIO | None = None) -> int:
    """`broker report [--from --to --by provider,team] [--csv|--json]`; `argv` is what follows `report`."""
    parser = argparse.ArgumentParser(prog="broker report", description="Print cost reports.")
    add_report_arguments(parser)
    return report_from_args(parser.parse_args(list(argv)), now=now, out=out)
