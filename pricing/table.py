"""The price table: every route's price in its own unit and in USD, for each request shape it takes.

`GET /v1/pricing` answers with `pricing_table(catalog)`. Each route lists one price per supported
duration, split by resolution and by audio only where the price depends on them (a `null` resolution
or audio means "any"). An unpriced route says so, and why, instead of listing prices.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from broker.schema import Feature, Resolution
from pricing.catalog import RouteSpec
from pricing.money import UnknownPrice
from pricing.rules import PriceRule


def _decimal_text(value: Decimal) -> str:
    """A Decimal without exponent or trailing zeros: 500000, 0.25."""
    return format(value.normalize(), "f")


def _price_entry(
    rule: PriceRule, duration_s: int, resolution: Resolution | None, audio: bool | None, route: RouteSpec
) -> dict[str, Any] | None:
    priced_at = resolution if resolution is not None else route.resolutions[0]
    try:
        billed = rule.billed(duration_s, priced_at, bool(audio))
    except UnknownPrice:
        return None
    return {
        "duration_s": duration_s,
        "resolution": resolution.value if resolution is not None else None,
        "audio": audio,
        "amount": _decimal_text(billed.amount),
        "unit": billed.unit.value,
        "cost_usd": str(rule.usd(duration_s, priced_at, bool(audio))),
    }


def route_prices(route: RouteSpec) -> list[dict[str, Any]]:
    """One entry per supported duration (and resolution/audio, where the price varies with them)."""
    rule = route.price
    if rule is None:
        return []
    resolutions: list[Resolution | None] = list(route.resolutions) if rule.varies_by_resolution else [None]
    audios: list[bool | None] = (
        [False, True] if rule.varies_by_audio and Feature.AUDIO in route.features else [None]
    )
    entries = []
    for duration_s in route.durations.all():
        for resolution in resolutions:
            for audio in audios:
                entry = _price_entry(rule, duration_s, resolution, audio, route)
                if entry is not None:
                    entries.append(entry)
    return entries


def _rule_json(rule: PriceRule) -> dict[str, Any]:
    """The rule as configured, amounts as strings, empty variations left out."""
    raw = rule.model_dump(mode="json", exclude_none=True)
    return {name: value for name, value in raw.items() if value != {}}


def route_entry(route: RouteSpec) -> dict[str, Any]:
    """One route's row of the table."""
    entry: dict[str, Any] = {
        "provider": route.provider,
        "model": route.model,
        "modes": [mode.value for mode in route.modes],
        "quality": route.quality.value,
        "expected_latency_s": route.expected_latency_s,
        "priced": route.price is not None,
        "price": _rule_json(route.price) if route.price is not None else None,
        "price_source": route.price_source,
        "price_as_of": route.price_as_of.isoformat() if route.price_as_of is not None else None,
        "prices": route_prices(route),
    }
    if route.price is None:
        entry["unpriced_reason"] = "the sources give no price for this route; it is never chosen until priced"
    return entry


def pricing_table(catalog: Sequence[RouteSpec]) -> dict[str, Any]:
    """`GET /v1/pricing`'s body: every route, in catalog order."""
    return {"routes": [route_entry(route) for route in catalog]}
