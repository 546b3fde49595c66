"""`broker report --store-url`: the report read straight from a store, as the API would answer it.

The store is opened as `broker serve` opens it (`BROKER_REDIS_PREFIX`, `BROKER_REDIS_CLUSTER`), so a
report beside a broker with a prefix reads that broker's jobs; the store read is named on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from broker.cli.exits import CommandError, Exit
from broker.cli.report import BadOption
from broker.config import ConfigError, load_config
from broker.observability.ledger_figures import ledger_span
from broker.observability.reconciliation import build_reconciliation
from broker.observability.reports import BadParameter, build_report, parse_group_by, report_window
from broker.schema import BrokerError
from broker.settings import Settings
from broker.store import JobRecord, Store, open_store
from broker.store.retention import LedgerRow


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"BROKER_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise BadOption("bad setting", problems) from None


def shown(url: str) -> str:
    """A store URL without its password."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rsplit('@', 1)[1]}"


def store_name(url: str, settings: Settings) -> str:
    """The store as a person can recognise it: URL without password, and the Redis prefix and mode."""
    if not url.startswith(("redis://", "rediss://")):
        return shown(url)
    mode = ", cluster" if settings.redis_cluster else ""
    return f"{shown(url)} (prefix {settings.redis_prefix!r}{mode})"


def _store(url: str, settings: Settings) -> Store:
    """The store `url` names; a report never creates an empty SQLite file where none was."""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise BadOption("--store-url", f"no SQLite store at {url.removeprefix('sqlite:///')}")
    try:
        return open_store(url, redis_prefix=settings.redis_prefix, redis_cluster=settings.redis_cluster)
    except ValueError as exc:
        raise BadOption("--store-url", str(exc)) from None


async def _records(
    url: str, settings: Settings, start: datetime, end: datetime, team: str | None
) -> tuple[list[JobRecord], list[LedgerRow]]:
    """The jobs of the window kept in the store, and the daily ledger of those expired."""
    store = _store(url, settings)
    try:
        await store.open()
        ledger = await store.ledger_rows(*ledger_span(start, end), team=team)
        return await store.jobs_created_between(start, end, team=team), ledger
    except (BrokerError, OSError) as exc:
        reason = exc.message if isinstance(exc, BrokerError) else str(exc)
        raise CommandError(
            f"the store {store_name(url, settings)} cannot be read: {reason}", Exit.UNAVAILABLE
        ) from None
    finally:
        with contextlib.suppress(Exception):
            await store.close()


def read_store_report(args: argparse.Namespace, now: datetime, err: TextIO) -> dict[str, Any]:
    """The cost report's (or with `--reconcile`, the reconciliation's) JSON body from the store."""
    try:
        group_by = parse_group_by(args.by)
    except BadParameter as exc:
        raise BadOption("--by", exc.message) from None
    try:
        start, end = report_window(args.start, args.end, now)
    except BadParameter as exc:
        raise BadOption(f"--{exc.param}", exc.message) from None
    settings = _settings()
    routes = None
    if args.reconcile:
        try:
            routes = {route.key: route for route in load_config(settings.config).routes}
        except ConfigError as exc:
            raise BadOption("BROKER_CONFIG", str(exc)) from None
    records, ledger = asyncio.run(_records(args.store_url, settings, start, end, args.team))
    expired = f" and {len(ledger)} daily ledger row(s) of expired jobs" if ledger else ""
    print(
        f"broker report: read {len(records)} job(s){expired} from {store_name(args.store_url, settings)}",
        file=err,
    )
    if routes is not None:
        return {**build_reconciliation(records, routes, start, end, ledger).to_json(), "team": args.team}
    return {**build_report(records, group_by, start, end, ledger).to_json(), "team": args.team}
