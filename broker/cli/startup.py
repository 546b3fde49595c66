"""`broker serve`'s start-up checks: settings that refuse mistakes, and a start that says what it uses.

- A `BROKER_*` variable the broker does not know (a typo such as `BROKER_STORE_ULR`) stops the start,
  naming the nearest known one: a typo would otherwise start a replica on a default of its own.
- The start logs the store it uses (without credentials), each team whose key is not set, a missing
  admin key, and a Redis store that would lose acknowledged writes on restart.
- A SQLite store is one process's: a second `serve` on the same file is refused by a lock held for
  the life of the process.
"""

from __future__ import annotations

import difflib
import fcntl
import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import structlog

from broker.config import BrokerConfig
from broker.settings import Settings
from broker.store.base import Store
from broker.store.durability import durability_problem

log = structlog.get_logger("broker.start")

# Read by the remote commands (`broker submit`, ...), which may share a shell with `serve`.
CLIENT_VARIABLES = frozenset({"BROKER_URL", "BROKER_API_KEY"})


def known_variables(config: BrokerConfig) -> set[str]:
    """Every `BROKER_*` name the broker reads: its settings, the client's, and the key variables the
    config names."""
    names = {f"BROKER_{field.upper()}" for field in Settings.model_fields} | CLIENT_VARIABLES
    refs = [config.admin, *config.teams] if config.admin is not None else list(config.teams)
    names |= {ref.api_key_env for ref in refs if ref.api_key_env}
    for provider in config.providers.values():
        names |= {n for n in (provider.api_key_env, provider.webhook_secret_env) if n}
    return names


def unknown_variables(env: Mapping[str, str], config: BrokerConfig) -> list[str]:
    """One line per `BROKER_*` variable in `env` that nothing reads, with the nearest known name."""
    known = known_variables(config)
    problems = []
    for name in sorted(n for n in env if n.upper().startswith("BROKER_") and n not in known):
        nearest = difflib.get_close_matches(name.upper(), sorted(known), n=1, cutoff=0.6)
        hint = f"; did you mean {nearest[0]}?" if nearest else " (see README: Settings)"
        problems.append(f"{name} is not a setting the broker reads{hint}")
    return problems


def sqlite_path(url: str) -> Path:
    """The file of a `sqlite:///` store URL (as the store reads it)."""
    return Path(url.removeprefix("sqlite:///"))


def shown_url(url: str) -> str:
    """A store URL without its password, for logs and messages."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, sep, credentials = head.partition("://")
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user + ':***' if user else '***'}@{tail}"


def url_secrets(settings: Settings) -> list[str]:
    """The passwords in the store URLs, for the redactor (a Redis driver's error may quote its URL)."""
    found = []
    for url in (settings.store_url, settings.sandbox_store_url or ""):
        credentials = url.rpartition("@")[0].partition("://")[2]
        if ":" in credentials:
            found.append(credentials.split(":", 1)[1])
    return found


def log_start(settings: Settings, config: BrokerConfig, env: Mapping[str, str]) -> None:
    """Log what this start runs on, and the keys it lacks."""
    if settings.store_url.startswith("sqlite:///"):
        path = sqlite_path(settings.store_url).resolve()
        log.info("store", kind="sqlite", store_url=shown_url(settings.store_url), path=str(path))
    else:
        log.info("store", kind="redis", store_url=shown_url(settings.store_url), prefix=settings.redis_prefix)
    if config.admin is None:
        log.warning("admin_key_missing", reason="config.yaml names no admin key: admin endpoints refuse all")
    elif config.admin.api_key_env and not env.get(config.admin.api_key_env, "").strip():
        log.warning(
            "admin_key_missing",
            variable=config.admin.api_key_env,
            reason="not set or empty: admin endpoints (policies, reports of every team) refuse every caller",
        )
    for team in config.teams:
        if team.api_key_env and not env.get(team.api_key_env, "").strip():
            log.warning(
                "team_without_key",
                team=team.name,
                variable=team.api_key_env,
                reason="not set or empty: this team's requests are refused (401)",
            )


async def warn_if_not_durable(settings: Settings, store: Store) -> None:
    """Log a store that would lose acknowledged writes on restart (a Redis without appendonly)."""
    if (problem := await durability_problem(store)) is not None:
        log.warning("store_not_durable", store_url=shown_url(settings.store_url), problem=problem)


class StoreLockTaken(Exception):
    """Another process serves this SQLite file."""


def lock_sqlite_store(settings: Settings) -> IO[bytes] | None:
    """Hold an exclusive lock beside a SQLite store for the life of the process (the returned file;
    None for other stores); `StoreLockTaken` if another `serve` holds it."""
    if not settings.store_url.startswith("sqlite:///"):
        return None
    path = sqlite_path(settings.store_url)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = Path(f"{path}.lock")
    handle = lock_path.open("a+b")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read(32).decode("ascii", "replace").strip()
        handle.close()
        who = f" (pid {holder})" if holder.isdigit() else ""
        raise StoreLockTaken(
            f"another broker{who} already serves {path.resolve()}: a SQLite store is one process's;"
            " stop it, or use a Redis store for several replicas"
        ) from None
    handle.truncate(0)
    handle.write(str(os.getpid()).encode())
    handle.flush()
    return handle
