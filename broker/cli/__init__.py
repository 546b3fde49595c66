"""`broker serve`, `broker demo`, `broker report` and the remote commands: the command line.

This module only parses the arguments, so every command starts quickly: `serve.py` (with `reload.py`:
SIGHUP reloads config.yaml) and `demo.py` pull in the server and are imported only by those two
commands; `sandbox.py` serves the broker on the emulators; `report.py` prints cost and reconciliation
reports; `parsers.py` declares the remote commands (`submit`, `quote`, `jobs`, `policy`, ...) that
`commands.py`, `submit.py`, `admin.py` and `watch.py` run against a running broker through
`broker.sync_client` (`remote.py`, `jobflags.py`, `progress.py`, `tables.py`, `exits.py` help them).

The top of the stack: may import everything, `broker.api` included; nothing in the broker imports it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from broker.cli.parsers import add_remote_commands, add_report_arguments


class CommandFailed(Exception):
    """A command cannot start or go on; the message is one line a person can act on."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="broker", description="The video routing broker.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the HTTP API and the job runner")
    serve.add_argument("--config", type=Path, help="config file (default: BROKER_CONFIG or config.yaml)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve.add_argument(
        "--sandbox", action="store_true", help="start every provider's emulator and route to them"
    )
    demo = commands.add_parser("demo", help="animate the bundled sample image on the local backend")
    demo.add_argument("--out", type=Path, default=Path("demo.mp4"), help="where to write the MP4")
    demo.add_argument("--prompt", default="slow push in over the mountains at sunrise")
    demo.add_argument("--duration", type=int, default=5)
    report = commands.add_parser(
        "report", help="print the cost report per provider, team, model or day (from a broker, or a store)"
    )
    add_report_arguments(report)
    add_remote_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            import asyncio

            from broker.cli.serve import run_serve

            asyncio.run(run_serve(args))
        elif args.command == "demo":
            import asyncio

            from broker.cli.demo import run_demo

            raise SystemExit(asyncio.run(run_demo(args.out, args.prompt, args.duration)))
        elif args.command == "report":
            from broker.cli.report import report_from_args

            raise SystemExit(report_from_args(args))
        elif getattr(args, "remote", None) is not None:
            from broker.cli.remote import run_remote

            raise SystemExit(run_remote(args.remote, args))
    except CommandFailed as exc:
        print(f"broker {args.command}: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
