"""The route catalog: what each (provider, model) can do and what it costs."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field, model_validator

from broker.schema import AspectRatio, Feature, Mode, Quality, Resolution
from pricing.rules import PriceRule


class DurationRange(BaseModel):
    """Supported output durations: an inclusive range, or an explicit list of values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min: int | None = Field(default=None, ge=1)
    max: int | None = Field(default=None, ge=1)
    values: list[int] | None = None

    @model_validator(mode="after")
    def _check(self) -> DurationRange:
        if self.values is None and (self.min is None or self.max is None):
            raise ValueError("give either min and max, or values")
        if self.values is not None and (self.min is not None or self.max is not None):
            raise ValueError("give either min and max, or values, not both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is greater than max")
        return self

    def allows(self, duration_s: int) -> bool:
        """Whether a request of this many seconds fits."""
        if self.values is not None:
            return duration_s in self.values
        assert self.min is not None and self.max is not None
        return self.min <= duration_s <= self.max

    def all(self) -> list[int]:
        """Every supported duration, ascending."""
        if self.values is not None:
            return sorted(self.values)
        assert self.min is not None and self.max is not None
        return list(range(self.min, self.max + 1))

    def describe(self) -> str:
        """Human form for reasons: "2–10 s" or "5, 10 s"."""
        if self.values is not None:
            return ", ".join(map(str, sorted(self.values))) + " s"
        return f"{self.min}–{self.max} s"


class RouteSpec(BaseModel):
    """One catalog entry. `price` is None when the sources leave it open: such a route is unpriced."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str = Field(min_length=1)
    model: str = Field(min_length=1)
    modes: list[Mode] = Field(min_length=1)
    durations: DurationRange
    aspect_ratios: list[AspectRatio] = Field(min_length=1)
    resolutions: list[Resolution] = Field(min_length=1)
    # Narrower aspect ratios for one mode, where a model's text-to-video takes fewer than its image-to-video.
    mode_aspect_ratios: dict[Mode, list[AspectRatio]] = Field(default_factory=dict)
    features: list[Feature] = Field(default_factory=list)
    quality: Quality
    expected_latency_s: int = Field(ge=1)
    price: PriceRule | None = None
    price_source: str | None = None
    price_as_of: date | None = None

    @model_validator(mode="after")
    def _check_mode_aspect_ratios(self) -> RouteSpec:
        for mode, ratios in self.mode_aspect_ratios.items():
            if mode not in self.modes:
                raise ValueError(f"mode_aspect_ratios: {mode.value} is not one of the route's modes")
            extra = [ratio.value for ratio in ratios if ratio not in self.aspect_ratios]
            if extra:
                raise ValueError(f"mode_aspect_ratios.{mode.value}: {extra} not in aspect_ratios")
        return self

    def aspect_ratios_for(self, mode: Mode) -> list[AspectRatio]:
        """The aspect ratios this route takes in one mode."""
        return self.mode_aspect_ratios.get(mode, self.aspect_ratios)

    @property
    def key(self) -> str:
        """`provider/model`, unique in a catalog."""
        return f"{self.provider}/{self.model}"
