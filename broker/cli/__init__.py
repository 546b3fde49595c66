"""`broker serve`, `broker demo`, `broker report`: the command line.

This module parses the arguments and runs `serve` (with `reload.py`: SIGHUP reloads config.yaml);
`demo.py` runs a job against the emulators, `sandbox.py` serves the broker on them, `report.py`
prints cost and reconciliation reports; `commands.py`, `submit.py`, `remote.py`, `jobflags.py`,
`progress.py`, `tables.py`, `parsers.py` and `exits.py` are the remote commands (`submit`, `quote`,
`jobs`, ...) that speak to a running broker through `broker.client`.

The top of the stack: may import everything, `broker.api` included; nothing in the broker imports it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog
from aiohttp import web
from pydantic import ValidationError
from yarl import URL

from broker.api.app import create_app
from broker.cli.parsers import add_remote_commands
from broker.cli.reload import reload_config
from broker.cli.remote import run_remote
from broker.cli.report import add_report_arguments, report_from_args
from broker.cli.startup import (
    StoreLockTaken,
    lock_sqlite_store,
    log_start,
    unknown_variables,
    url_secrets,
    warn_if_not_durable,
)
from broker.config import BrokerConfig, ConfigError, load_config
from broker.observability.logging import configure_logging, secret_values
from broker.schema import BrokerError
from broker.settings import Settings
from broker.store import open_store

log = structlog.get_logger("broker")


class CommandFailed(Exception):
    """A command cannot start or go on; the message is one line a person can act on."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def load_settings(**overrides: object) -> Settings:
    """The process settings; `CommandFailed` naming the variable if one is bad."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"BROKER_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise CommandFailed(f"bad setting: {problems}", exit_code=2) from None


def _shown(url: str) -> str:
    """A store URL without its password, for messages."""
    try:
        return str(URL(url).with_password(None)) if "@" in url else url
    except ValueError:
        return url.split("@")[-1]


async def check_store(settings: Settings) -> None:
    """Open and ping the store once, so an unreachable one stops the start with one line."""
    try:
        store = open_store(
            settings.store_url, redis_prefix=settings.redis_prefix, redis_cluster=settings.redis_cluster
        )
    except ValueError as exc:
        raise CommandFailed(f"bad setting: BROKER_STORE_URL: {exc}", exit_code=2) from None
    try:
        await store.open()
        await store.ping()
        await warn_if_not_durable(settings, store)
    except (BrokerError, OSError) as exc:
        reason = exc.message if isinstance(exc, BrokerError) else str(exc)
        raise CommandFailed(f"the store {_shown(settings.store_url)} cannot be used: {reason}") from None
    finally:
        with contextlib.suppress(Exception):
            await store.close()


async def start_site(runner: web.AppRunner, host: str, port: int) -> web.TCPSite:
    """Listen on host:port; `CommandFailed` if the address is taken or cannot be used."""
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        raise CommandFailed(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return site


def load_or_exit(path: Path) -> BrokerConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"broker: bad configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


async def serve_until_stopped(
    app: web.Application, host: str, port: int, *, on_hangup: Callable[[], object] | None = None
) -> None:
    """Run the app until SIGINT or SIGTERM, then shut down cleanly (jobs stay in the store);
    SIGHUP calls `on_hangup` (a config reload) without stopping anything."""
    runner = web.AppRunner(app, access_log=None)
    try:
        await runner.setup()
    except BrokerError as exc:
        raise CommandFailed(f"cannot start: {exc.message}") from None
    try:
        await start_site(runner, host, port)
        log.info("serving", url=f"http://{host}:{port}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        if on_hangup is not None:
            loop.add_signal_handler(signal.SIGHUP, on_hangup)
        await stop.wait()
    finally:
        await runner.cleanup()


async def _serve(args: argparse.Namespace) -> None:
    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    settings = load_settings(**overrides)
    path = args.config or settings.config
    config = load_or_exit(path)
    env: dict[str, str] = dict(os.environ)
    if problems := unknown_variables(env, config):
        raise CommandFailed("bad setting: " + "; ".join(problems), exit_code=2)
    signing = settings.input_signing_secret.get_secret_value() if settings.input_signing_secret else ""
    secrets = [*secret_values(config, env), settings.webhook_secret or "", signing, *url_secrets(settings)]
    configure_logging(settings.log_level, secrets)
    if args.sandbox:
        from broker.cli.sandbox import sandbox_settings

        settings = sandbox_settings(settings)
        log.info("sandbox_store", store_url=_shown(settings.store_url), data_dir=str(settings.data_dir))
    log_start(settings, config, env)
    try:
        store_lock = lock_sqlite_store(settings)
    except StoreLockTaken as exc:
        raise CommandFailed(str(exc), exit_code=2) from None
    try:
        await _serve_locked(args, settings, config, env, path)
    finally:
        if store_lock is not None:
            store_lock.close()


async def _serve_locked(
    args: argparse.Namespace, settings: Settings, config: BrokerConfig, env: dict[str, str], path: Path
) -> None:
    await check_store(settings)
    if not settings.webhook_secret:
        log.warning(
            "webhooks_off",
            reason="BROKER_WEBHOOK_SECRET is not set: jobs with a webhook_url are refused (400) until it is",
        )
    sandbox = None
    if args.sandbox:
        from broker.cli.sandbox import start_sandboxed

        sandbox, config, env = await start_sandboxed(config, env)
    try:
        app = create_app(settings, config, env=env)
        reload = functools.partial(reload_config, app, path, env)
        await serve_until_stopped(app, settings.host, settings.port, on_hangup=reload)
    finally:
        if sandbox is not None:
            await sandbox.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="broker", description="The video routing broker.")
    commands = parser.add_subparsers(dest="command", required=True)
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
    report = commands.add_parser("report", help="print the cost report per provider, team, model or day")
    add_report_arguments(report)
    add_remote_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            asyncio.run(_serve(args))
        elif args.command == "demo":
            from broker.cli.demo import run_demo

            raise SystemExit(asyncio.run(run_demo(args.out, args.prompt, args.duration)))
        elif args.command == "report":
            raise SystemExit(report_from_args(args))
        elif getattr(args, "remote", None) is not None:
            raise SystemExit(run_remote(args.remote, args))
    except CommandFailed as exc:
        print(f"broker {args.command}: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
