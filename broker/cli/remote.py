"""What every command that talks to a running broker shares: where it is, the key, and errors.

The broker's URL and key come from `--url`/`--key` or `BROKER_URL`/`BROKER_API_KEY` (a key is never
printed). Every failure ends in one readable line on stderr and an exit code from `Exit`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping

from broker.cli.exits import Exit, exit_for_api_error
from broker.client import BrokerAPIError
from broker.sync_client import BrokerUnreachable, SyncBrokerClient

DEFAULT_URL = "http://127.0.0.1:8080"

Command = Callable[[SyncBrokerClient, argparse.Namespace], int]


class CommandError(Exception):
    """A failure the command found itself (a bad file, a missing flag): its line and exit code."""

    def __init__(self, message: str, code: Exit = Exit.USAGE) -> None:
        super().__init__(message)
        self.code = code


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"the broker's URL (default: BROKER_URL or {DEFAULT_URL})")
    parser.add_argument("--key", help="API key (default: BROKER_API_KEY); a team key, or the admin key")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per HTTP call (default 60)")


def client_from_args(args: argparse.Namespace, env: Mapping[str, str]) -> SyncBrokerClient:
    key = args.key or env.get("BROKER_API_KEY")
    if not key:
        raise CommandError("no API key: set BROKER_API_KEY or pass --key", Exit.AUTH)
    url = args.url or env.get("BROKER_URL") or DEFAULT_URL
    return SyncBrokerClient(url, key, timeout_s=args.timeout)


def _describe(error: BrokerAPIError) -> str:
    line = f"{error.message} ({error.status} {error.code})"
    rejected = error.details.get("rejected") if isinstance(error.details, dict) else None
    if isinstance(rejected, list) and rejected:
        line += f"; {len(rejected)} routes rejected, see `broker quote` for why"
    return line


def run_remote(command: Command, args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    """Run `command` with a client; turn every failure into one line on stderr and its exit code."""
    try:
        with client_from_args(args, os.environ if env is None else env) as client:
            return command(client, args)
    except BrokerAPIError as exc:
        print(f"broker: {_describe(exc)}", file=sys.stderr)
        return exit_for_api_error(exc)
    except BrokerUnreachable as exc:
        print(f"broker: {exc}", file=sys.stderr)
        return Exit.UNAVAILABLE
    except CommandError as exc:
        print(f"broker: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("broker: interrupted", file=sys.stderr)
        return Exit.INTERRUPTED
