"""The quote engine over the real catalog: ranking, every rejection reason, and the pinned choices."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from broker.config import load_config
from broker.schema import Constraints, JobRequest, Quality
from pricing.catalog import DurationRange, RouteSpec
from pricing.quote import Quote, quote
from pricing.rules import PriceRule, PriceUnit

CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"
IMAGE = "https://example.com/still.png"


@pytest.fixture(scope="module")
def catalog() -> list[RouteSpec]:
    return load_config(CONFIG).routes


def i2v(**fields: Any) -> JobRequest:
    return JobRequest.model_validate({"prompt": "slow zoom", "image_url": IMAGE, **fields})


def t2v(**fields: Any) -> JobRequest:
    return JobRequest.model_validate({"prompt": "a misty valley at dawn", **fields})


def reasons_for(result: Quote, key: str) -> list[str]:
    for rejection in result.rejected:
        if f"{rejection.provider}/{rejection.model}" == key:
            return rejection.reasons
    raise AssertionError(f"{key} was not rejected")


def route(model: str, *, provider: str = "p", usd: str | None = "0.10", latency: int = 60,
          quality: str = "standard", durations: DurationRange | None = None) -> RouteSpec:
    price = None if usd is None else PriceRule(unit=PriceUnit.USD_PER_VIDEO, amount=Decimal(usd))
    return RouteSpec.model_validate({
        "provider": provider, "model": model, "modes": ["image_to_video"],
        "durations": durations or DurationRange(min=1, max=10), "aspect_ratios": ["16:9"],
        "resolutions": ["720p"], "quality": quality, "expected_latency_s": latency, "price": price,
    })


def test_standard_5s_720p_image_to_video_picks_pixelapi_seedance(catalog: list[RouteSpec]) -> None:
    result = quote(i2v(constraints={"min_quality": "standard"}), catalog)
    assert result.chosen is not None
    assert result.chosen.key == "pixelapi/seedance"
    assert str(result.chosen.cost) == "0.055000"
    assert "quality basic below min_quality standard" in reasons_for(result, "local/camera-motion")


def test_max_cost_below_every_route_leaves_no_route_and_says_why(catalog: list[RouteSpec]) -> None:
    result = quote(i2v(constraints={"min_quality": "standard", "max_cost_usd": "0.05"}), catalog)
    assert result.chosen is None and result.routes == [] and result.baseline is None
    assert "cost 0.055000 USD above max_cost_usd 0.050000" in reasons_for(result, "pixelapi/seedance")
    assert len(result.rejected) == len(catalog)
    assert all(rejection.reasons for rejection in result.rejected)


def test_seven_seconds_never_chooses_a_five_second_only_route(catalog: list[RouteSpec]) -> None:
    five_only = {r.key for r in catalog if r.durations.all() == [5]}
    assert {"pixelapi/seedance", "pixelapi/video"} <= five_only
    for request in (i2v(duration_s=7), i2v(duration_s=7, constraints={"min_quality": "standard"}),
                    t2v(duration_s=7)):
        result = quote(request, catalog)
        assert result.chosen is not None
        assert all(quoted.route.durations.allows(7) for quoted in result.routes)
        assert not five_only & {quoted.key for quoted in result.routes}
        assert "duration 7 s not supported (supports 5 s)" in reasons_for(result, "pixelapi/seedance")


def test_feasible_routes_are_ranked_cheapest_first_and_baseline_is_the_priciest(
    catalog: list[RouteSpec],
) -> None:
    result = quote(i2v(), catalog)
    costs = [quoted.cost for quoted in result.routes]
    assert costs == sorted(costs)
    assert result.chosen == result.routes[0]
    assert result.baseline == result.routes[-1]
    assert result.chosen.key == "local/camera-motion"  # basic quality allowed: compute time is cheapest


def test_every_route_is_either_feasible_or_rejected_once(catalog: list[RouteSpec]) -> None:
    result = quote(t2v(resolution="1080p", audio=True), catalog)
    keys = [q.key for q in result.routes] + [f"{r.provider}/{r.model}" for r in result.rejected]
    assert sorted(keys) == sorted(r.key for r in catalog)


def test_a_rejection_keeps_all_of_its_reasons(catalog: list[RouteSpec]) -> None:
    request = t2v(duration_s=7, aspect_ratio="21:9", resolution="1080p", seed=3)
    constraints = Constraints(max_latency_s=30, min_quality=Quality.PREMIUM, providers=["runway"])
    result = quote(request, catalog, constraints=constraints, exclude_models=["video"])
    assert reasons_for(result, "pixelapi/video") == [
        "duration 7 s not supported (supports 5 s)",
        "aspect ratio 21:9 not supported (supports 16:9)",
        "feature seed not supported",
        "expected latency 120 s above max_latency_s 30",
        "quality standard below min_quality premium",
        "provider pixelapi not in the allowed providers (runway)",
        "model video is excluded",
    ]
    assert reasons_for(result, "pixelapi/seedance")[0] == (
        "mode text_to_video not supported (supports image_to_video)"
    )


def test_an_allow_list_narrowed_to_nothing_says_why(catalog: list[RouteSpec]) -> None:
    # What a team policy allowing only runway, narrowed by a request for pixelapi, leaves.
    result = quote(t2v(duration_s=5), catalog, constraints=Constraints(providers=[], models=[]))
    assert reasons_for(result, "pixelapi/video") == [
        "provider pixelapi not in the allowed providers: none, as the request and its team's policy"
        " name none in common",
        "model video not in the allowed models: none, as the request and its team's policy name none in"
        " common",
    ]


def test_text_to_video_aspect_ratios_can_be_narrower_than_image_to_video(catalog: list[RouteSpec]) -> None:
    wide = quote(t2v(aspect_ratio="4:3", duration_s=5), catalog)
    assert "aspect ratio 4:3 not supported (supports 16:9, 9:16)" in reasons_for(wide, "runway/gen4.5")
    still = quote(i2v(aspect_ratio="4:3", duration_s=5), catalog)
    assert "runway/gen4.5" in {quoted.key for quoted in still.routes}


def test_unpriced_routes_are_never_chosen_and_say_so(catalog: list[RouteSpec]) -> None:
    result = quote(i2v(), catalog, constraints=Constraints(providers=["doitong"]))
    assert result.chosen is None
    assert any(reason.startswith("unpriced") for reason in reasons_for(result, "doitong/runway-i2v"))


def test_unavailable_providers_and_routes_carry_the_brokers_reason(catalog: list[RouteSpec]) -> None:
    unavailable = {
        "pixelapi": "provider pixelapi has no API key configured (PIXELAPI_KEY)",
        "runway/gen4_turbo": "circuit open after 5 failures",
    }
    result = quote(i2v(constraints={"min_quality": "standard"}), catalog, unavailable=unavailable)
    assert result.chosen is not None and result.chosen.route.provider != "pixelapi"
    assert reasons_for(result, "pixelapi/seedance") == [unavailable["pixelapi"]]
    assert reasons_for(result, "runway/gen4_turbo") == [unavailable["runway/gen4_turbo"]]


def test_routes_already_tried_and_excluded_models_are_skipped(catalog: list[RouteSpec]) -> None:
    request = i2v(constraints={"min_quality": "standard"})
    first = quote(request, catalog)
    assert first.chosen is not None
    second = quote(request, catalog, exclude_routes=[first.chosen.key], exclude_models=["video"])
    assert second.chosen is not None and second.chosen.key not in {first.chosen.key, "pixelapi/video"}
    assert reasons_for(second, first.chosen.key) == ["already tried for this job"]
    assert reasons_for(second, "pixelapi/video") == ["model video is excluded"]


def test_constraints_default_to_the_request_and_an_explicit_set_replaces_them(
    catalog: list[RouteSpec],
) -> None:
    request = i2v(constraints={"providers": ["runway"]})
    own = quote(request, catalog)
    assert own.routes and {quoted.route.provider for quoted in own.routes} == {"runway"}
    widened = quote(request, catalog, constraints=Constraints(models=["fal-ai/ovi/image-to-video"]))
    assert [quoted.key for quoted in widened.routes] == ["fal/fal-ai/ovi/image-to-video"]


def test_models_are_named_by_id_or_by_route_key(catalog: list[RouteSpec]) -> None:
    by_id = quote(i2v(), catalog, constraints=Constraints(models=["gen4_turbo"]))
    by_key = quote(i2v(), catalog, constraints=Constraints(models=["runway/gen4_turbo"]))
    assert [q.key for q in by_id.routes] == [q.key for q in by_key.routes] == ["runway/gen4_turbo"]


def test_audio_requests_only_reach_routes_with_audio_and_pay_for_it(catalog: list[RouteSpec]) -> None:
    result = quote(i2v(duration_s=8, audio=True), catalog)
    assert result.routes and all("audio" in quoted.route.features for quoted in result.routes)
    veo = next(quoted for quoted in result.routes if quoted.key == "runway/veo3.1")
    assert str(veo.cost) == "3.200000"


def test_ties_break_on_latency_then_key_whatever_the_catalog_order() -> None:
    routes = [route("c", latency=60), route("b", latency=60), route("a", latency=90), route("d", usd="0.05")]
    for ordering in (routes, routes[::-1]):
        result = quote(i2v(), ordering)
        assert [quoted.route.model for quoted in result.routes] == ["d", "b", "c", "a"]


def test_to_json_has_the_api_shape(catalog: list[RouteSpec]) -> None:
    body = quote(i2v(constraints={"min_quality": "standard", "max_cost_usd": "0.10"}), catalog).to_json()
    assert set(body) == {"chosen", "routes", "rejected"}
    assert body["chosen"] == {
        "provider": "pixelapi", "model": "seedance", "cost_usd": "0.055000",
        "expected_latency_s": 120, "quality": "standard", "unpriced": False, "predicted_wait_s": 0,
    }
    assert [entry["model"] for entry in body["routes"]] == ["seedance", "video"]
    assert all(set(entry) == {"provider", "model", "reasons"} for entry in body["rejected"])
    empty = quote(i2v(constraints={"max_cost_usd": "0"}), catalog).to_json()
    assert empty["chosen"] is None and empty["routes"] == []


def test_reasons_from_provider_and_route_unavailability_are_both_kept(catalog: list[RouteSpec]) -> None:
    unavailable = {"runway": "circuit open for runway", "runway/gen4_turbo": "image too large for gen4_turbo"}
    result = quote(i2v(), catalog, unavailable=unavailable)
    assert reasons_for(result, "runway/gen4_turbo") == [
        "circuit open for runway; image too large for gen4_turbo"
    ]
    assert reasons_for(result, "runway/gen4.5") == ["circuit open for runway"]


def test_reading_reasons_gives_a_copy_and_the_same_answer_each_time(catalog: list[RouteSpec]) -> None:
    result = quote(i2v(duration_s=7), catalog)
    rejection = next(r for r in result.rejected if r.model == "seedance")
    first = rejection.reasons
    first.append("tampered")
    assert rejection.reasons == ["duration 7 s not supported (supports 5 s)"]
    assert rejection.provider == "pixelapi"
