"""`config.yaml`: providers, the route catalog, the admin key, teams and policies.

The key names (`providers.<name>.base_url` and `api_key_env`, `routes`, `admin`, `teams`, `policies`)
are a contract with deployment tooling. A bad file stops the start with a `ConfigError` that names the
file, the key path and what is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from policies.model import Policy
from pricing.catalog import RouteSpec


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file, the key path and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderConfig(_Strict):
    base_url: str = ""
    api_key_env: str | None = None
    webhook_secret_env: str | None = None
    # Tasks in flight at the provider at once, over every replica; None: no limit of the broker's own
    # (the provider queues or throttles what it cannot take).
    max_concurrency: int | None = Field(default=None, ge=1)
    requests_per_minute: int | None = Field(default=None, ge=1)
    timeout_s: float = Field(default=30.0, gt=0)
    # How long a task may take before the broker cancels it and falls back (the adapter's default
    # poll deadline when unset), and how long the provider keeps a finished output for download.
    task_deadline_s: float | None = Field(default=None, gt=0)
    output_retention_s: float | None = Field(default=None, gt=0)


class KeyRef(_Strict):
    """A bearer key: read from an environment variable, or given as its SHA-256 hex digest."""

    api_key_env: str | None = None
    api_key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _one_source(self) -> KeyRef:
        if (self.api_key_env is None) == (self.api_key_sha256 is None):
            raise ValueError("give exactly one of api_key_env and api_key_sha256")
        return self


class TeamConfig(KeyRef):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    policy: str | None = None
    retention_days: int | None = Field(default=None, ge=1, le=36_500)  # overrides the global one


class BrokerConfig(_Strict):
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    routes: list[RouteSpec] = Field(default_factory=list)
    admin: KeyRef | None = None
    teams: list[TeamConfig] = Field(default_factory=list)
    policies: dict[str, Policy] = Field(default_factory=dict)
    # Ended jobs (records and artifacts) are deleted this many days after their end (a team entry may
    # say otherwise); the daily ledger the reports read for them is kept `ledger_retention_days`.
    retention_days: int = Field(default=30, ge=1, le=36_500)
    ledger_retention_days: int = Field(default=400, ge=2, le=36_500)

    def retention_for(self, team: str) -> int:
        """Days the team's ended jobs are kept: its own `retention_days`, else the global one."""
        config = next((t for t in self.teams if t.name == team), None)
        own = None if config is None else config.retention_days
        return self.retention_days if own is None else own

    @model_validator(mode="after")
    def _ledger_outlives_jobs(self) -> BrokerConfig:
        longest = max([self.retention_days, *(t.retention_days or 0 for t in self.teams)])
        if self.ledger_retention_days <= longest:
            raise ValueError(
                f"ledger_retention_days: {self.ledger_retention_days} must be more than the longest"
                f" retention_days ({longest}): the ledger keeps the costs of jobs once they expire"
            )
        return self

    @model_validator(mode="after")
    def _check_references(self) -> BrokerConfig:
        seen: set[str] = set()
        for index, route in enumerate(self.routes):
            if route.provider not in self.providers:
                raise ValueError(f"routes.{index}.provider: unknown provider {route.provider!r}")
            if route.key in seen:
                raise ValueError(f"routes.{index}: duplicate route {route.key}")
            seen.add(route.key)
        names: set[str] = set()
        for index, team in enumerate(self.teams):
            if team.name in names:
                raise ValueError(f"teams.{index}.name: duplicate team {team.name!r}")
            names.add(team.name)
            if team.policy is not None and team.policy not in self.policies:
                raise ValueError(f"teams.{index}.policy: unknown policy {team.policy!r}")
        return self

    def policy_for(self, team: str) -> Policy:
        """The team's policy merged over the `default` policy."""
        default = self.policies.get("default", Policy())
        config = next((t for t in self.teams if t.name == team), None)
        if config is None or config.policy is None or config.policy == "default":
            return default
        return self.policies[config.policy].merged_over(default)


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def parse_config(raw: Any, source: str) -> BrokerConfig:
    """Validate already-loaded YAML data; `source` names where it came from in error messages."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: (top level): expected a mapping, got {type(raw).__name__}")
    try:
        return BrokerConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{_location(err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"{source}: {problems}") from None


def lease_problems(config: BrokerConfig, lease_s: float) -> list[str]:
    """The providers whose request timeout cannot fit a lease: a step renews its lease right before a
    request, so a request must end (and its answer be written) within half of one."""
    return [
        f"providers.{name}.timeout_s is {provider.timeout_s:g} s, over half the job lease"
        f" (BROKER_LEASE_S={lease_s:g} s): a request could outlive its step's lease;"
        f" lower the timeout to at most {lease_s / 2:g} s or raise BROKER_LEASE_S"
        for name, provider in config.providers.items()
        if provider.base_url and provider.timeout_s > lease_s / 2  # no base URL: no requests (local)
    ]


def load_config(path: Path) -> BrokerConfig:
    """Read and validate a config file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(raw, str(path))
