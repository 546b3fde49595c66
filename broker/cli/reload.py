"""Re-reading config.yaml while the broker runs (on SIGHUP): routes, prices, teams, keys, policies and
capacity limits change in place; jobs in flight keep running. A file that does not load or validate
leaves the running configuration as it was. Providers' endpoints and keys are read when adapters are
built, so those changes wait for a restart (the log says so)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import structlog
from aiohttp import web

from broker.appkeys import DEPLOYMENT, RUNNER
from broker.auth import Authenticator
from broker.config import BrokerConfig, ConfigError, load_config

log = structlog.get_logger("broker.cli.reload")


def _restart_only_changes(old: BrokerConfig, new: BrokerConfig) -> list[str]:
    """Providers whose endpoint or key settings changed: their adapters are rebuilt only at start."""
    changed = []
    for name in sorted(set(old.providers) | set(new.providers)):
        before, after = old.providers.get(name), new.providers.get(name)
        if (
            before is None
            or after is None
            or (
                (before.base_url, before.api_key_env, before.webhook_secret_env, before.task_deadline_s)
                != (after.base_url, after.api_key_env, after.webhook_secret_env, after.task_deadline_s)
            )
        ):
            changed.append(name)
    return changed


def reload_config(
    app: web.Application,
    path: Path,
    env: Mapping[str, str] | None = None,
    *,
    adjust: Callable[[BrokerConfig], BrokerConfig] | None = None,
) -> bool:
    """Load `path` and put it in force; False (and the old config kept) when it cannot be used.

    `env` is where team and admin keys are read (the process environment by default); `adjust` turns
    the file's config into the running one as at start (a sandbox points it at its emulators again, so
    only what the file really changed counts as a change).
    """
    try:
        config = load_config(path)
    except ConfigError as exc:
        log.error("config_reload_failed", error=str(exc))
        return False
    if adjust is not None:
        config = adjust(config)
    deployment = app[DEPLOYMENT]
    old = deployment.config
    # No await between the two: no request sees the new config with the old keys.
    deployment.config, deployment.auth = config, Authenticator(config, env)
    runner = app.get(RUNNER)
    if runner is not None:
        runner.routes = {route.key: route for route in config.routes}
        runner.slots.follow(config.providers, [team.name for team in config.teams])
    if pending := _restart_only_changes(old, config):
        log.warning("config_reload_needs_restart", providers=pending)
    log.info("config_reloaded", path=str(path), routes=len(config.routes), teams=len(config.teams))
    return True
