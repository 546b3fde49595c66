"""The policy of one team, as written in `config.yaml` under `policies:` and edited through the API."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from broker.schema import Priority, Quality, UsdString

# Bounds on what an edit can store; a catalog has tens of providers and models, not thousands.
Name = Annotated[str, Field(min_length=1, max_length=128)]
NAMES_MAX = 256


class Policy(BaseModel):
    """Limits and defaults for a team's jobs. Fields left unset inherit from the `default` policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    providers: list[Name] | None = Field(default=None, max_length=NAMES_MAX)
    exclude_providers: list[Name] = Field(default_factory=list, max_length=NAMES_MAX)
    models: list[Name] | None = Field(default=None, max_length=NAMES_MAX)
    exclude_models: list[Name] = Field(default_factory=list, max_length=NAMES_MAX)
    min_quality: Quality | None = None
    max_cost_usd: UsdString | None = None
    max_latency_s: int | None = Field(default=None, ge=1)
    max_attempts: int | None = Field(default=None, ge=1, le=10)
    daily_budget_usd: UsdString | None = None
    monthly_budget_usd: UsdString | None = None
    # Lets the team use routes without a known price: each such job reserves and books this ceiling
    # (an upper bound, marked `unpriced`) until an operator prices the route. Unset: never used.
    allow_unpriced_max_usd: UsdString | None = None
    # Outputs of another shape than asked are normalized to it (broker.jobs.outputs): `pad` letterboxes
    # the picture into the asked frame, `crop` fills it (default pad). An output narrower or lower than
    # `output_min_scale` of the asked size, or shorter than `output_min_duration_ratio` of the asked
    # duration, fails its attempt as `output_invalid` and the job falls back (defaults 0.5 and 0.8).
    output_fit: Literal["pad", "crop"] | None = None
    output_min_scale: float | None = Field(default=None, gt=0, le=1)
    output_min_duration_ratio: float | None = Field(default=None, gt=0, le=1)
    # Sharing a capped provider (broker.jobs.queues): a freed slot goes to the waiting team that has had
    # the fewest slot-seconds for its `weight` (default 1), after any team under its `guaranteed_slots` (per
    # provider; idle ones are lent out, never kept idle); `priority` is the default of its jobs.
    weight: float | None = Field(default=None, gt=0, le=1000)
    guaranteed_slots: int | None = Field(default=None, ge=0, le=100_000)
    priority: Priority | None = None

    def merged_over(self, base: Policy) -> Policy:
        """This policy with every unset field taken from `base`."""
        own = self.model_dump(exclude_unset=True)
        return base.model_copy(update=own)
