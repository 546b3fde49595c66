"""`broker serve`: the HTTP API and the job runner until SIGINT/SIGTERM, SIGHUP reloading config.yaml.

Only `serve` and `demo` import this module (and with it the server app): the other commands start
without it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import signal
from collections.abc import Callable
from pathlib import Path

import structlog
from aiohttp import web
from pydantic import ValidationError
from yarl import URL

from broker.api.app import create_app
from broker.cli import CommandFailed
from broker.cli.reload import reload_config
from broker.cli.startup import (
    StoreLockTaken,
    lock_sqlite_store,
    log_start,
    unknown_variables,
    url_secrets,
    warn_if_not_durable,
)
from broker.config import BrokerConfig, ConfigError, lease_problems, load_config
from broker.observability.logging import configure_logging, secret_values
from broker.schema import BrokerError
from broker.settings import Settings
from broker.store import open_store

__all__ = ["check_store", "load_settings", "run_serve", "secret_values", "start_site"]

log = structlog.get_logger("broker")


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
        raise CommandFailed(f"bad configuration: {exc}", exit_code=2) from None


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


async def run_serve(args: argparse.Namespace) -> None:
    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    settings = load_settings(**overrides)
    path = args.config or settings.config
    config = load_or_exit(path)
    if problems := lease_problems(config, settings.lease_s):
        raise CommandFailed(f"bad configuration: {path}: {'; '.join(problems)}", exit_code=2)
    env: dict[str, str] = dict(os.environ)
    if problems := unknown_variables(env, config):
        raise CommandFailed("bad setting: " + "; ".join(problems), exit_code=2)
    if args.sandbox:
        from broker.cli.sandbox import sandbox_settings

        settings = sandbox_settings(settings)  # before logging starts: its signing secret is redacted too
    signing = settings.input_signing_secret.get_secret_value() if settings.input_signing_secret else ""
    secrets = [*secret_values(config, env), settings.webhook_secret or "", signing, *url_secrets(settings)]
    configure_logging(settings.log_level, secrets)
    if args.sandbox:
        log.info(
            "sandbox_store",
            store_url=_shown(settings.store_url),
            data_dir=str(settings.data_dir),
            public_url=settings.public_url,
        )
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
    async with contextlib.AsyncExitStack() as stack:
        adjust = None
        if args.sandbox:
            from broker.cli.sandbox import running_sandbox

            config, env, adjust = await stack.enter_async_context(running_sandbox(settings, config, env))
        app = create_app(settings, config, env=env)
        reload = functools.partial(reload_config, app, path, env, adjust=adjust)
        await serve_until_stopped(app, settings.host, settings.port, on_hangup=reload)
