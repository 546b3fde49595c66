"""structlog JSON logs: a request id and job id on every line (bound through contextvars), and every
secret redacted before a line is rendered."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any

import structlog

from broker.config import BrokerConfig

_SECRET_FIELDS = re.compile(r"(authorization|api[_-]?key|secret|token|password|signature)", re.I)
_DATA_URI = re.compile(r"data:[^;,\s]+;base64,[A-Za-z0-9+/=]{16,}")
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


def configure_logging(level: str = "info", secrets: Iterable[str] = ()) -> None:
    """JSON lines on stderr at `level`, secrets redacted."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            Redactor(secrets),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


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
