"""`broker report`: the cost report as a readable table (or CSV), read straight from the store.

It reads the store the broker writes (`BROKER_STORE_URL`, or `--store-url`), so it needs no running
server and no key: whoever can read the store sees every team, as the admin key would.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from broker.config import ConfigError, load_config
from broker.observability.reconciliation import Reconciliation, build_reconciliation
from broker.observability.reports import BadParameter, CostReport, build_report, parse_group_by, report_window
from broker.schema import BrokerError
from broker.settings import Settings
from broker.store import JobRecord, Store, open_store

# Short column titles for the table; the CSV keeps the API's field names.
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


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `broker report`, for a parser of its own or a `broker` subcommand."""
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
    parser.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    parser.add_argument("--store-url", help="the broker's store (default: BROKER_STORE_URL)")
    parser.add_argument(
        "--reconcile",
        action="store_true",
        help="booked spend against the providers' own figures per provider and day, and discrepancies",
    )


def render_table(report: CostReport) -> str:
    """The report as aligned text columns: group columns left, figures right, totals last."""
    header, *rows = report.rows()
    body = [[cell or "-" for cell in row] for row in rows]  # "-": no average without a success
    dims = len(report.group_by)
    titles = header[:dims] + [TITLES.get(name, name) for name in header[dims:]]
    rows = [titles, *body]
    widths = [max(len(row[i]) for row in rows) for i in range(len(titles))]

    def line(row: list[str]) -> str:
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [cell.ljust(w) if i < dims else cell.rjust(w) for i, (cell, w) in pairs]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    title = f"Costs from {report.start.isoformat()} to {report.end.isoformat()}"
    if report.group_by:
        title += ", by " + ", ".join(d.value for d in report.group_by)
    groups = [line(r) for r in body[:-1]]
    lines = [title, "", line(titles), rule, *groups, *([rule] if groups else []), line(body[-1])]
    return "\n".join(lines) + "\n"


def _store(url: str) -> Store:
    """The store `url` names; a report never creates an empty SQLite file where none was."""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise BadParameter("--store-url", f"no SQLite store at {url.removeprefix('sqlite:///')}")
    try:
        return open_store(url)
    except ValueError as exc:
        raise BadParameter("--store-url", str(exc)) from None


async def _records(
    args: argparse.Namespace, settings: Settings, start: datetime, end: datetime
) -> list[JobRecord]:
    """The jobs created in [start, end) (of `--team`, if given), read from the store the options name."""
    store = _store(args.store_url or settings.store_url)
    await store.open()
    try:
        return await store.jobs_created_between(start, end, team=args.team)
    finally:
        await store.close()


async def load_report(args: argparse.Namespace, now: datetime) -> CostReport:
    """Read the jobs of the report's window from the store and sum them; `BadParameter` on bad options."""
    try:
        group_by = parse_group_by(args.by)
    except BadParameter as exc:
        raise BadParameter("--by", exc.message) from None
    try:
        start, end = report_window(args.start, args.end, now)
    except BadParameter as exc:
        raise BadParameter(f"--{exc.param}", exc.message) from None
    records = await _records(args, Settings(), start, end)
    return build_report(records, group_by, start, end)


def report_from_args(
    args: argparse.Namespace, *, now: datetime | None = None, out: TextIO | None = None
) -> int:
    """Print the report for parsed options; 0 on success, 2 for a bad option, 1 if the store fails."""
    stream, at = out or sys.stdout, now or datetime.now(UTC)
    try:
        if getattr(args, "reconcile", False):
            text = render_reconciliation(asyncio.run(load_reconciliation(args, at)))
        else:
            report = asyncio.run(load_report(args, at))
            text = report.to_csv() if args.csv else render_table(report)
    except BadParameter as exc:
        print(f"broker report: {exc}", file=sys.stderr)
        return 2
    except BrokerError as exc:
        print(f"broker report: {exc.message}", file=sys.stderr)
        return 1
    stream.write(text)
    return 0


def run_report(argv: Sequence[str], *, now: datetime | None = None, out: TextIO | None = None) -> int:
    """`broker report [--from --to --by provider,team] [--csv]` with `argv` the words after `report`."""
    parser = argparse.ArgumentParser(prog="broker report", description="Print cost reports.")
    add_report_arguments(parser)
    return report_from_args(parser.parse_args(list(argv)), now=now, out=out)


async def load_reconciliation(args: argparse.Namespace, now: datetime) -> Reconciliation:
    """The reconciliation of the window's jobs, converting reported figures with the config's prices."""
    try:
        start, end = report_window(args.start, args.end, now)
    except BadParameter as exc:
        raise BadParameter(f"--{exc.param}", exc.message) from None
    settings = Settings()
    try:
        routes = {route.key: route for route in load_config(settings.config).routes}
    except ConfigError as exc:
        raise BadParameter("BROKER_CONFIG", str(exc)) from None
    records = await _records(args, settings, start, end)
    return build_reconciliation(records, routes, start, end)


def render_reconciliation(report: Reconciliation) -> str:
    """The reconciliation as a table per provider and day, then one line per discrepancy."""
    titles = ["provider", "day", "attempts", "booked $", "confirmed $", "unconfirmed $", "unreported $"]
    titles += ["reported", "reported $"]
    rows = [titles]
    for name, books in [*((f"{p} {d}", b) for (p, d), b in report.groups), ("(total) -", report.totals)]:
        figures = books.to_json()
        reported = ", ".join(f"{amount} {unit}" for unit, amount in figures["reported"].items()) or "-"
        provider, day = name.split(" ", 1)
        keys = ("booked_usd", "confirmed_usd", "unconfirmed_usd", "unreported_usd")
        rows.append([provider, day, str(books.attempts), *(figures[k] for k in keys), reported])
        rows[-1].append(figures["reported_usd"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(titles))]
    lines = [f"Reconciliation from {report.start.isoformat()} to {report.end.isoformat()}", ""]
    for row in rows:
        cells = [
            c.ljust(w) if i in (0, 1, 7) else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    lines += ["", f"Discrepancies: {len(report.discrepancies)}"]
    for item in report.discrepancies:
        said = f"{item['reported_cost'] or '-'} ({item['reported_usd'] or '-'})"
        lines.append(
            f"  {item['provider']} {item['provider_job_id']} job {item['job_id']}:"
            f" booked {item['booked_usd']}, reported {said}: {item['reason']}"
        )
    return "\n".join(lines) + "\n"
