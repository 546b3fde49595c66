"""Process settings from the environment (`BROKER_` prefix); the deployment itself is `config.yaml`."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from adapters.outbound import OutboundPolicy

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class Settings(BaseSettings):
    """One frozen settings object per process, read from `BROKER_*` variables."""

    model_config = SettingsConfigDict(env_prefix="BROKER_", env_nested_delimiter="__", frozen=True)

    config: Path = Path("config.yaml")
    store_url: str = "sqlite:///data/broker.db"
    redis_prefix: str = Field(default="broker", description="key prefix of a Redis store")
    redis_cluster: bool = Field(default=False, description="the Redis store URL names a Redis Cluster")
    data_dir: Path = Path("data")
    artifacts_url: str | None = Field(
        default=None,
        description="where outputs, posters and uploads live: s3://bucket/prefix (endpoint and credentials "
        "from the AWS_* variables), else files under data_dir",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(
        default=16, ge=1, le=1024, description="job steps run at once (not a limit on jobs in flight)"
    )
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_image_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    public_url: str | None = Field(default=None, description="base URL providers can reach, for webhooks")
    log_level: str = "info"
    webhook_secret: str | None = Field(default=None, description="signs the webhooks sent to teams")
    input_signing_secret: SecretStr | None = Field(
        default=None,
        description="signs the URLs of hosted inputs (GET /v1/inputs/{id}); the same on every replica",
    )
    # A step renews its lease while its I/O runs; a provider request must end well inside one lease
    # (`broker.config.lease_problems`), so a dead replica's jobs are due again within a minute.
    lease_s: float = Field(default=60.0, gt=0, description="how long a job claim lasts unrenewed")

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.strip().lower() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)} (not {value[:20]!r})")
        return value.strip().lower()

    @field_validator("input_signing_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (e.g. `openssl rand -hex 32`)")
        return value
    sandbox_store_url: str | None = Field(
        default=None,
        description="the store of `serve --sandbox` (default: SQLite under <data_dir>/sandbox), never the "
        "real one, so emulator spend stays out of the real books",
    )
    outbound_allow: str = Field(
        default="",
        description="hosts and CIDRs (comma-separated) that image_url and webhook_url may reach although "
        "they are not public, over plain http too",
    )

    @field_validator("artifacts_url")
    @classmethod
    def _check_artifacts_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("s3://", "file://")):
            raise ValueError("BROKER_ARTIFACTS_URL must be s3://bucket/prefix or file:///path")
        return value

    @field_validator("outbound_allow")
    @classmethod
    def _check_outbound_allow(cls, value: str) -> str:
        OutboundPolicy.parse(value)
        return value

    @property
    def outbound(self) -> OutboundPolicy:
        """Where caller-given URLs (image_url, webhook_url) may lead."""
        return OutboundPolicy.parse(self.outbound_allow)
