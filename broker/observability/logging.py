"""structlog JSON logs: a request id and job id on every line (bound through contextvars), and every
secret redacted before a line is rendered."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any

import structlog

from broker.config import BrokerConfig

_SECRET_FIELDS = re.compile(r"(authorization|api[_-]?key|secret|token|password|signature)", re.I)
_DATA_URI = re.compile(r"data:[^;,\s]+;base64,[A-Za-z0-9+/=]{16,}")
# A bearer credential in free text (a raw header in a parser's message), known to the config or not.
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s'\"\\]+")
REDACTED = "[redacted]"


class Redactor:
    """A structlog processor that removes secrets by field name and by value, and image data."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def clean(self, value: Any) -> Any:
        """`value` with secrets and image data replaced, recursively."""
        if isinstance(value, str):
            for secret in self._secrets:
                value = value.replace(secret, REDACTED)
            value = _BEARER.sub(r"\1" + REDACTED, value)
            return _DATA_URI.sub("data:[image data omitted]", value)
        if isinstance(value, dict):
            return {k: REDACTED if _SECRET_FIELDS.search(str(k)) else self.clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.clean(v) for v in value]
        return value

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key in list(event):
            event[key] = REDACTED if _SECRET_FIELDS.search(key) else self.clean(event[key])
        return event


# Loggers of the libraries the broker runs on: routed into the same JSON lines, through the redactor.
LIBRARY_LOGGERS = (
    "aiohttp",
    "aiohttp.access",
    "aiohttp.server",
    "aiohttp.internal",
    "aiohttp.web",
    "asyncio",
)


def configure_logging(level: str = "info", secrets: Iterable[str] = ()) -> None:
    """JSON lines on stderr at `level`, secrets redacted, for the broker's own loggers and for every
    standard-library logger (aiohttp's parser logs a bad request's raw bytes, a key among them)."""
    redactor = Redactor(secrets)
    numeric = log_level(level)
    # The redactor runs after format_exc_info, so a traceback's text is cleaned as well.
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redactor,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    route_standard_logging(redactor, numeric)


def log_level(name: str) -> int:
    """The numeric level of a level name (debug, info, warning, error, critical); ValueError otherwise."""
    level = logging.getLevelNamesMapping().get(name.strip().upper())
    if level is None or name.strip().upper() not in LEVELS:
        raise ValueError(f"unknown log level {name!r}; use one of {', '.join(n.lower() for n in LEVELS)}")
    return level


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class _StderrHandler(logging.Handler):
    """One formatted line per record on whatever `sys.stderr` is at the time (as structlog's logger)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # never logging's own report: it prints the raw message and its arguments
            line = json.dumps({"event": "log_record_unformattable", "logger": record.name, "level": "error"})
        with contextlib.suppress(OSError, ValueError):  # stderr gone (closed pipe): nothing left to tell
            print(line, file=sys.stderr, flush=True)


def route_standard_logging(redactor: Redactor, level: int) -> None:
    """Send every standard-library record (the root logger, so aiohttp's and asyncio's too) through
    the redactor into one JSON line each."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.add_logger_name,  # from the record, which the next step drops
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redactor,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in LIBRARY_LOGGERS:  # nothing of theirs bypasses the root's handler
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True


def secret_values(config: BrokerConfig, env: Mapping[str, str]) -> list[str]:
    """Every secret the config points at, so the redactor can blank it wherever it appears."""
    names = [p.api_key_env for p in config.providers.values()]
    names += [p.webhook_secret_env for p in config.providers.values()]
    names += [t.api_key_env for t in config.teams]
    names.append(config.admin.api_key_env if config.admin else None)
    return [env[name] for name in names if name and env.get(name)]


def scrubber(secrets: Iterable[str]) -> Callable[[str], str]:
    """A function that blanks secrets and image data in a text (for error messages shown to callers)."""
    redactor = Redactor(secrets)
    return lambda text: str(redactor.clean(text))
