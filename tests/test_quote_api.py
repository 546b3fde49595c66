"""`POST /v1/quotes` and `GET /v1/pricing` through the app, on the real `config.yaml` catalog."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from broker.api.app import create_app
from broker.config import load_config
from broker.settings import Settings
from tests.support.deployment import GROWTH_KEY, STUDIO_KEY, TEST_ENV, auth, fast_sleep
from tests.support.fakes import FakeProvider

CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"
PROVIDER_KEYS = {
    "RUNWAYML_API_SECRET": "rw-test",
    "FAL_KEY": "fal-test",
    "MUVI_API_KEY": "muvi-test",
    "DOITONG_API_KEY": "doitong-test",
    "PIXELAPI_KEY": "pixel-test",
}
I2V = {"prompt": "slow zoom", "image_url": "https://example.com/still.png"}

MakeClient = Callable[[Mapping[str, str]], Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def real_client(aiohttp_client: Any, settings: Settings) -> MakeClient:
    """The app on the real catalog, every provider faked, with the given provider keys set."""

    async def make(keys: Mapping[str, str]) -> TestClient[Any, Any]:
        config = load_config(CONFIG)
        factories = {name: FakeProvider(name).build for name in config.providers}
        app = create_app(settings, config, env={**TEST_ENV, **keys}, factories=factories, sleep=fast_sleep)
        client: TestClient[Any, Any] = await aiohttp_client(app)
        return client

    return make


def _rejected(body: dict[str, Any], key: str) -> list[str]:
    for entry in body["rejected"]:
        if f"{entry['provider']}/{entry['model']}" == key:
            reasons: list[str] = entry["reasons"]
            return reasons
    raise AssertionError(f"{key} not rejected")


async def test_all_keys_standard_quality_quotes_pixelapi_seedance(real_client: MakeClient) -> None:
    client = await real_client(PROVIDER_KEYS)
    response = await client.post(
        "/v1/quotes", json={**I2V, "constraints": {"min_quality": "standard"}}, headers=auth()
    )
    assert response.status == 200
    body = await response.json()
    assert body["chosen"] == {
        "provider": "pixelapi", "model": "seedance", "cost_usd": "0.055000",
        "expected_latency_s": 120, "quality": "standard", "unpriced": False, "predicted_wait_s": 0,
    }
    assert body["routes"][0] == body["chosen"]
    costs = [entry["cost_usd"] for entry in body["routes"]]
    assert costs == sorted(costs, key=float)
    # growth's policy allows runway, fal, pixelapi and local only.
    assert "provider muvi not in the allowed providers (fal, local, pixelapi, runway)" in _rejected(
        body, "muvi/runway/gen-4/image-to-video"
    )


async def test_a_provider_without_its_key_is_rejected_with_the_env_name(real_client: MakeClient) -> None:
    keys = {name: value for name, value in PROVIDER_KEYS.items() if name != "PIXELAPI_KEY"}
    client = await real_client(keys)
    response = await client.post(
        "/v1/quotes", json={**I2V, "constraints": {"min_quality": "standard"}}, headers=auth()
    )
    body = await response.json()
    missing = "provider pixelapi has no API key configured (PIXELAPI_KEY)"
    assert _rejected(body, "pixelapi/seedance") == [missing]
    assert body["chosen"]["provider"] != "pixelapi"
    assert body["chosen"]["cost_usd"] == "0.200000"  # fal Pixverse v5.5 at 720p is next cheapest


async def test_a_cost_cap_below_every_route_answers_no_choice_with_reasons(real_client: MakeClient) -> None:
    client = await real_client(PROVIDER_KEYS)
    body = {**I2V, "constraints": {"min_quality": "standard", "max_cost_usd": "0.05"}}
    response = await client.post("/v1/quotes", json=body, headers=auth(STUDIO_KEY))
    assert response.status == 200
    quote = await response.json()
    assert quote["chosen"] is None and quote["routes"] == []
    assert "cost 0.055000 USD above max_cost_usd 0.050000" in _rejected(quote, "pixelapi/seedance")


async def test_a_bad_quote_body_is_a_400_not_a_500(real_client: MakeClient) -> None:
    client = await real_client(PROVIDER_KEYS)
    response = await client.post("/v1/quotes", json={**I2V, "duration_s": 99}, headers=auth())
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_request"
    unauthenticated = await client.post("/v1/quotes", json=I2V)
    assert unauthenticated.status == 401


async def test_pricing_lists_every_route_in_its_unit_and_in_usd(real_client: MakeClient) -> None:
    client = await real_client({})
    response = await client.get("/v1/pricing", headers=auth(GROWTH_KEY))
    assert response.status == 200
    rows = {f"{row['provider']}/{row['model']}": row for row in (await response.json())["routes"]}
    assert len(rows) == len(load_config(CONFIG).routes)
    muvi_10s = [e for e in rows["muvi/runway/gen-4/image-to-video"]["prices"] if e["duration_s"] == 10]
    assert muvi_10s == [{"duration_s": 10, "resolution": None, "audio": None, "amount": "1000000",
                         "unit": "micro_cents", "cost_usd": "1.000000"}]
    assert rows["doitong/runway-i2v"]["priced"] is False
    assert (await client.get("/v1/pricing")).status == 401
