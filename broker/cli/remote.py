"""What every command that talks to a running broker shares: where it is, the key, and errors.

The broker's URL and key come from `--url`/`--key` or `BROKER_URL`/`BROKER_API_KEY` (a key is never
printed). Every failure ends in one readable line on stderr and an exit code from `Exit`: a refused
field is named by the flag that set it, with the values the broker knows where there is a list.
The client is imported only when a command runs, so `--help` stays quick.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from broker.cli.exits import CommandError, Exit, exit_for_api_error
from broker.cli.parsers import DEFAULT_URL

if TYPE_CHECKING:
    from broker.client import BrokerAPIError
    from broker.sync_client import SyncBrokerClient

__all__ = ["CommandError", "client_from_args", "describe", "run_remote"]

Command = Callable[["SyncBrokerClient", argparse.Namespace], int]

# Where each remote command's function lives: module, function.
COMMANDS = {
    "submit": ("broker.cli.submit", "submit"),
    "batch": ("broker.cli.batch", "batch"),
    "quote": ("broker.cli.commands", "quote"),
    "jobs": ("broker.cli.watch", "jobs"),
    "status": ("broker.cli.commands", "status"),
    "events": ("broker.cli.watch", "events"),
    "cancel": ("broker.cli.commands", "cancel"),
    "download": ("broker.cli.commands", "download"),
    "pricing": ("broker.cli.commands", "pricing"),
    "providers": ("broker.cli.admin", "providers"),
    "budgets": ("broker.cli.admin", "budgets"),
    "policy_show": ("broker.cli.admin", "policy_show"),
    "policy_edit": ("broker.cli.admin", "policy_edit"),
    "policy_history": ("broker.cli.admin", "policy_history"),
}

# A job request's fields, as the flags of `submit` and `quote` that set them.
FLAGS = {
    "prompt": "--prompt",
    "duration_s": "--duration",
    "aspect_ratio": "--ratio",
    "resolution": "--resolution",
    "audio": "--audio",
    "camera_fixed": "--camera-fixed",
    "seed": "--seed",
    "image_url": "IMAGE_FILE_OR_URL",
    "image": "IMAGE_FILE_OR_URL",
    "constraints.max_cost_usd": "--max-cost",
    "constraints.max_latency_s": "--max-latency",
    "constraints.min_quality": "--min-quality",
    "constraints.providers": "--provider",
    "constraints.exclude_providers": "--exclude",
    "constraints.models": "--model",
}


def client_from_args(args: argparse.Namespace, env: Mapping[str, str]) -> SyncBrokerClient:
    from broker.sync_client import SyncBrokerClient

    key = args.key or env.get("BROKER_API_KEY")
    if not key:
        raise CommandError("no API key: set BROKER_API_KEY or pass --key", Exit.AUTH)
    url = args.url or env.get("BROKER_URL") or DEFAULT_URL
    return SyncBrokerClient(url, key, timeout_s=args.timeout)


def flag_of(field: str) -> str | None:
    """The flag that sets a request field ("constraints.providers.0" -> "--provider"), if one does."""
    parts = field.split(".")
    for size in (2, 1):
        if (flag := FLAGS.get(".".join(parts[:size]))) is not None:
            return flag
    return None


def _known_names(client: SyncBrokerClient | None, flag: str) -> str:
    """ ", known: a, b, c" for the provider and model flags (the broker's catalog), else ""."""
    if client is None or flag not in ("--provider", "--exclude", "--model"):
        return ""
    try:
        routes = client.pricing()["routes"]
    except Exception:  # the list is a courtesy: the refusal itself is already in hand
        return ""
    names = sorted({r["model" if flag == "--model" else "provider"] for r in routes})
    return f"; known: {', '.join(names)}"


def _field_problems(error: BrokerAPIError, client: SyncBrokerClient | None) -> str | None:
    """A 400's field problems said with flags, or None when it names no field a flag sets."""
    if not isinstance(error.details, list):
        return None
    said: list[str] = []
    for problem in error.details:
        if not isinstance(problem, dict) or (flag := flag_of(str(problem.get("field", "")))) is None:
            return None
        said.append(f"{flag}: {problem.get('message', 'refused')}{_known_names(client, flag)}")
    return "; ".join(said) or None


def _window_words(window: str) -> str:
    """ "growth:day:2026-12-03" -> "the day 2026-12-03"."""
    parts = window.split(":")
    return f"the {parts[-2]} {parts[-1]}" if len(parts) >= 3 else window


def describe(error: BrokerAPIError, client: SyncBrokerClient | None = None) -> str:
    """One line for an error answer: what the broker said, in the words of the flags and the user."""
    details: Any = error.details
    if error.status == 400 and (fields := _field_problems(error, client)) is not None:
        return f"{fields} ({error.status} {error.code})"
    line = f"{error.message} ({error.status} {error.code})"
    if error.status == 402 and isinstance(details, dict) and isinstance(details.get("remaining_usd"), dict):
        left = [f"{amount} USD left in {_window_words(w)}" for w, amount in details["remaining_usd"].items()]
        line += "; " + ", ".join(left)
    rejected = details.get("rejected") if isinstance(details, dict) else None
    if isinstance(rejected, list) and rejected:
        line += f"; {len(rejected)} routes rejected, see `broker quote` for why"
    return line


def resolve(name: str) -> Command:
    module, function = COMMANDS[name]
    command: Command = getattr(importlib.import_module(module), function)
    return command


def run_remote(command: Command | str, args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    """Run `command` (or the command of that name) with a client; every failure is one line on stderr
    and its exit code."""
    from broker.client import BrokerAPIError
    from broker.sync_client import BrokerUnreachable

    run = resolve(command) if isinstance(command, str) else command
    client: SyncBrokerClient | None = None
    try:
        with client_from_args(args, os.environ if env is None else env) as client:
            return run(client, args)
    except BrokerAPIError as exc:
        print(f"broker: {describe(exc, client)}", file=sys.stderr)
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
