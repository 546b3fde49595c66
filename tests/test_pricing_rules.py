"""Price rules against the figures the sources publish, read from the real `config.yaml` catalog."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from broker.config import load_config
from broker.schema import Resolution
from pricing.catalog import RouteSpec
from pricing.money import Money, UnknownPrice
from pricing.rules import PriceRule, PriceUnit
from pricing.units import CostUnit, ReportedCost

CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"


@pytest.fixture(scope="module")
def catalog() -> dict[str, RouteSpec]:
    return {route.key: route for route in load_config(CONFIG).routes}


def _price(catalog: dict[str, RouteSpec], key: str, duration_s: int, resolution: str = "720p",
           audio: bool = False) -> str:
    rule = catalog[key].price
    assert rule is not None, f"{key} has no price"
    return str(rule.usd(duration_s, Resolution(resolution), audio))


@pytest.mark.parametrize(
    ("key", "duration_s", "resolution", "audio", "usd"),
    [
        ("runway/gen4_turbo", 5, "720p", False, "0.250000"),
        ("runway/gen4.5", 5, "720p", False, "0.600000"),
        ("runway/veo3.1", 8, "720p", True, "3.200000"),
        ("runway/veo3.1", 8, "720p", False, "1.600000"),
        ("muvi/runway/gen-4/image-to-video", 5, "720p", False, "0.500000"),
        ("muvi/runway/gen-4/image-to-video", 10, "720p", False, "1.000000"),
        ("pixelapi/seedance", 5, "720p", False, "0.055000"),
        ("pixelapi/seedance", 5, "1080p", False, "0.055000"),
        ("pixelapi/video", 5, "720p", False, "0.090000"),
        ("fal/fal-ai/wan-25-preview/image-to-video", 5, "720p", False, "0.250000"),
        ("fal/fal-ai/pixverse/v5.5/image-to-video", 5, "720p", False, "0.200000"),
        ("fal/fal-ai/pixverse/v5.5/image-to-video", 5, "1080p", False, "0.400000"),
        ("fal/fal-ai/pixverse/v5.5/image-to-video", 5, "1080p", True, "0.450000"),
    ],
)
def test_published_prices(
    catalog: dict[str, RouteSpec], key: str, duration_s: int, resolution: str, audio: bool, usd: str
) -> None:
    assert _price(catalog, key, duration_s, resolution, audio) == usd


def test_local_compute_seconds_at_the_h200_hourly_price(catalog: dict[str, RouteSpec]) -> None:
    rule = catalog["local/camera-motion"].price
    assert rule is not None and rule.amount == Decimal("2.10")
    spent = rule.reported_to_money(ReportedCost(Decimal(10), CostUnit.COMPUTE_SECONDS))
    assert str(spent) == "0.005833"


def test_local_estimate_uses_the_measured_speed_per_resolution(catalog: dict[str, RouteSpec]) -> None:
    # 5 s at 720p takes 0.2 * 5 = 1 compute second: 1 * 2.10 / 3600 = 0.0005833... USD.
    assert _price(catalog, "local/camera-motion", 5, "720p") == "0.000583"
    # 1080p: 0.5 * 5 = 2.5 compute seconds: 2.5 * 2.10 / 3600 = 0.0014583... USD.
    assert _price(catalog, "local/camera-motion", 5, "1080p") == "0.001458"


def test_muvi_micro_cents_are_micro_dollars(catalog: dict[str, RouteSpec]) -> None:
    rule = catalog["muvi/runway/gen-4/image-to-video"].price
    assert rule is not None
    billed = rule.billed(5, Resolution.HD, False)
    assert billed == ReportedCost(Decimal(500000), CostUnit.MICRO_CENTS)
    assert rule.reported_to_money(billed) == Money(500_000)


def test_every_priced_route_bills_what_it_quotes(catalog: dict[str, RouteSpec]) -> None:
    """Converting the billed amount back gives the quoted USD, for every shape every route takes."""
    checked = 0
    for route in catalog.values():
        if route.price is None:
            continue
        for duration_s in route.durations.all():
            for resolution in route.resolutions:
                for audio in (False, True):
                    billed = route.price.billed(duration_s, resolution, audio)
                    quoted = route.price.usd(duration_s, resolution, audio)
                    assert route.price.reported_to_money(billed) == quoted, route.key
                    assert quoted > Money.zero(), route.key
                    checked += 1
    assert checked > 100


def test_unpriced_routes_are_the_ones_the_sources_leave_open(catalog: dict[str, RouteSpec]) -> None:
    unpriced = {key for key, route in catalog.items() if route.price is None}
    assert "doitong/runway-i2v" in unpriced
    assert "fal/fal-ai/minimax-video/image-to-video" in unpriced
    assert "fal/fal-ai/luma-dream-machine/image-to-video" in unpriced
    assert {"replicate/kwaivgi/kling-v2.0", "replicate/lucataco/animate-diff"} <= unpriced
    assert all(catalog[key].price_source for key in unpriced)
    assert all(route.price_source and route.price_as_of for route in catalog.values() if route.price)


def test_catalog_names_every_provider_and_keeps_the_local_route(catalog: dict[str, RouteSpec]) -> None:
    assert {route.provider for route in catalog.values()} == {
        "runway", "fal", "muvi", "doitong", "pixelapi", "replicate", "local"
    }
    local = catalog["local/camera-motion"]
    assert [mode.value for mode in local.modes] == ["image_to_video"]
    assert local.quality.value == "basic"
    assert local.price is not None and local.price.unit is PriceUnit.USD_PER_COMPUTE_HOUR


def test_audio_amount_replaces_and_surcharge_adds() -> None:
    replaced = PriceRule(unit=PriceUnit.USD_PER_SECOND, amount=Decimal("0.2"), audio_amount=Decimal("0.4"))
    added = PriceRule(
        unit=PriceUnit.USD_PER_VIDEO,
        amount=Decimal("0.2"),
        by_resolution={Resolution.FULL_HD: Decimal("0.4")},
        audio_surcharge=Decimal("0.05"),
    )
    assert str(replaced.usd(4, Resolution.HD, True)) == "1.600000"
    assert str(replaced.usd(4, Resolution.HD, False)) == "0.800000"
    assert str(added.usd(5, Resolution.FULL_HD, True)) == "0.450000"
    assert replaced.varies_by_audio and not replaced.varies_by_resolution
    assert added.varies_by_resolution


def test_price_by_duration_overrides_the_base_amount() -> None:
    rule = PriceRule(
        unit=PriceUnit.USD_PER_VIDEO, amount=Decimal("0.35"), by_duration={10: Decimal("0.60")}
    )
    assert str(rule.usd(5, Resolution.HD, False)) == "0.350000"
    assert str(rule.usd(10, Resolution.HD, False)) == "0.600000"


def test_compute_rule_without_a_measured_speed_is_unknown_not_free() -> None:
    rule = PriceRule(
        unit=PriceUnit.USD_PER_COMPUTE_HOUR,
        amount=Decimal("2.10"),
        compute_s_per_output_s={Resolution.HD: Decimal("0.4")},
    )
    with pytest.raises(UnknownPrice):
        rule.usd(5, Resolution.FULL_HD, False)
    with pytest.raises(UnknownPrice):
        rule.billed(5, Resolution.FULL_HD, False)


def test_credit_rule_needs_its_usd_per_credit() -> None:
    with pytest.raises(ValueError, match="usd_per_credit"):
        PriceRule(unit=PriceUnit.CREDITS_PER_VIDEO, amount=Decimal(55))


@pytest.mark.parametrize(
    ("unit", "amount", "usd_per_credit", "usd"),
    [
        (PriceUnit.CREDITS_PER_SECOND, "5", "0.01", "0.400000"),  # 8 s x 5 credits x $0.01
        (PriceUnit.CREDITS_PER_VIDEO, "55", "0.001", "0.055000"),
        (PriceUnit.USD_PER_SECOND, "0.05", None, "0.400000"),
        (PriceUnit.USD_PER_VIDEO, "0.20", None, "0.200000"),
        (PriceUnit.MICRO_CENTS_PER_SECOND, "100000", None, "0.800000"),
        (PriceUnit.MICRO_CENTS_PER_VIDEO, "500000", None, "0.500000"),
    ],
)
def test_every_unit_converts_to_usd_for_an_8_second_clip(
    unit: PriceUnit, amount: str, usd_per_credit: str | None, usd: str
) -> None:
    rule = PriceRule(
        unit=unit,
        amount=Decimal(amount),
        usd_per_credit=Decimal(usd_per_credit) if usd_per_credit else None,
    )
    assert str(rule.usd(8, Resolution.HD, False)) == usd
    assert rule.reported_to_money(rule.billed(8, Resolution.HD, False)) == Money.parse(usd)


def test_a_changed_copy_of_a_rule_is_priced_afresh() -> None:
    """Prices are remembered per rule object; a copy with another amount must not reuse them."""
    rule = PriceRule(unit=PriceUnit.USD_PER_SECOND, amount=Decimal("0.05"))
    assert str(rule.usd(5, Resolution.HD, False)) == "0.250000"
    dearer = rule.model_copy(update={"amount": Decimal("0.07")})
    assert str(dearer.usd(5, Resolution.HD, False)) == "0.350000"
    assert str(rule.usd(5, Resolution.HD, False)) == "0.250000"
