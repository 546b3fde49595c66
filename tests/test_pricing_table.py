"""The price table behind `GET /v1/pricing`, over the real catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker.config import load_config
from pricing.table import pricing_table

CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"


@pytest.fixture(scope="module")
def rows() -> dict[str, dict[str, Any]]:
    table = pricing_table(load_config(CONFIG).routes)
    return {f"{row['provider']}/{row['model']}": row for row in table["routes"]}


def _price(row: dict[str, Any], duration_s: int, resolution: str | None = None,
           audio: bool | None = None) -> dict[str, Any]:
    matches = [
        entry for entry in row["prices"]
        if (entry["duration_s"], entry["resolution"], entry["audio"]) == (duration_s, resolution, audio)
    ]
    assert len(matches) == 1, (duration_s, resolution, audio, row["prices"])
    entry: dict[str, Any] = matches[0]
    return entry


def test_one_row_per_route_in_catalog_order() -> None:
    routes = load_config(CONFIG).routes
    table = pricing_table(routes)
    listed = [(row["provider"], row["model"]) for row in table["routes"]]
    assert listed == [(route.provider, route.model) for route in routes]


def test_each_supported_duration_in_own_unit_and_usd(rows: dict[str, dict[str, Any]]) -> None:
    turbo = rows["runway/gen4_turbo"]
    assert [entry["duration_s"] for entry in turbo["prices"]] == list(range(2, 11))
    assert _price(turbo, 5) == {
        "duration_s": 5, "resolution": None, "audio": None, "amount": "25", "unit": "credits",
        "cost_usd": "0.250000",
    }
    muvi = rows["muvi/runway/gen-4/image-to-video"]
    assert _price(muvi, 10)["amount"] == "1000000" and _price(muvi, 10)["unit"] == "micro_cents"
    assert _price(muvi, 10)["cost_usd"] == "1.000000"
    assert turbo["price"] == {"unit": "credits_per_second", "amount": "5", "usd_per_credit": "0.01"}
    assert turbo["price_source"] and turbo["price_as_of"] == "2026-11-01"


def test_variants_only_where_the_price_varies(rows: dict[str, dict[str, Any]]) -> None:
    pixverse = rows["fal/fal-ai/pixverse/v5.5/image-to-video"]
    assert len(pixverse["prices"]) == 4
    assert _price(pixverse, 5, "720p", False)["cost_usd"] == "0.200000"
    assert _price(pixverse, 5, "1080p", True)["cost_usd"] == "0.450000"
    veo = rows["runway/veo3.1"]
    assert _price(veo, 8, None, True)["cost_usd"] == "3.200000"
    assert _price(veo, 8, None, False)["cost_usd"] == "1.600000"
    seedance = rows["pixelapi/seedance"]
    assert seedance["prices"] == [
        {"duration_s": 5, "resolution": None, "audio": None, "amount": "55", "unit": "credits",
         "cost_usd": "0.055000"}
    ]


def test_local_route_is_priced_in_compute_seconds(rows: dict[str, dict[str, Any]]) -> None:
    local = rows["local/camera-motion"]
    entry = _price(local, 10, "720p")
    # 10 s at 0.2 compute s per output s = 2 compute s; 2 * 2.10 / 3600 = 0.0011666... USD.
    assert entry["unit"] == "compute_seconds" and entry["amount"] == "2"
    assert entry["cost_usd"] == "0.001167"


def test_unpriced_routes_say_so(rows: dict[str, dict[str, Any]]) -> None:
    doitong = rows["doitong/runway-i2v"]
    assert doitong["priced"] is False and doitong["price"] is None and doitong["prices"] == []
    assert "never chosen" in doitong["unpriced_reason"]
    assert all("unpriced_reason" not in row for row in rows.values() if row["priced"])
