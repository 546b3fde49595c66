"""Run one emulator standalone: `python -m adapters.emulators runway --port 8101`.

Prints `listening on <base URL>` once it accepts connections (with `--port 0`, read the port from
that line), then serves until SIGINT or SIGTERM. Faults are set over HTTP at /_emulator/faults.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from adapters.emulators.media import CONFORMING
from adapters.emulators.sandbox import PROVIDERS, serve


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: which provider, where, and with which keys."""
    parser = argparse.ArgumentParser(prog="python -m adapters.emulators", description=__doc__)
    parser.add_argument("provider", choices=sorted(PROVIDERS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", action="append", dest="api_keys", help="a key to accept (repeatable)")
    parser.add_argument("--render-seconds", type=float, default=6.0)
    parser.add_argument(
        "--render-seconds-max",
        type=float,
        default=None,
        help="draw each render's time evenly between --render-seconds and this (default: all equal)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for the render-time draws")
    parser.add_argument("--webhook-secret", default=None)
    parser.add_argument(
        "--conforming",
        action="store_true",
        help="deliver clips exactly as asked, not the provider's usual deviations (load tests, where the "
        "broker's normalization of every clip is not what is measured)",
    )
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    """Serve one emulator until a stop signal."""
    spec = PROVIDERS[args.provider]
    options: dict[str, Any] = {
        "api_keys": args.api_keys or ["emulator-key"],
        "render_seconds": args.render_seconds,
        "render_seconds_max": args.render_seconds_max,
        "seed": args.seed,
    }
    if args.webhook_secret is not None:  # else the provider's own default (muvi, doitong, replicate sign)
        options["webhook_secret"] = args.webhook_secret
    emulator = spec.make_emulator(**options)
    if args.conforming:
        emulator.delivery = CONFORMING
    runner, base_url = await serve(spec.make_app(emulator), args.host, args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"listening on {base_url}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Run one emulator until stopped; the exit status."""
    asyncio.run(run(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
