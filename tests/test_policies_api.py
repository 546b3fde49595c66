"""`/v1/policies`: who may read and edit, validation, versions and conflicts, the history, and edits
taking effect on the next quote; a request narrows its team's policy and never widens it."""

from __future__ import annotations

from typing import Any

from tests.support.deployment import ADMIN_KEY, STUDIO_KEY, auth, fake_config

ADMIN = auth(ADMIN_KEY)


def if_match(version: int) -> dict[str, str]:
    return {**ADMIN, "If-Match": f'"{version}"'}


async def chosen_and_reasons(client: Any, **body: Any) -> tuple[str | None, dict[str, list[str]]]:
    response = await client.post("/v1/quotes", json={"prompt": "a pan", **body}, headers=auth())
    assert response.status == 200, await response.text()
    answer = await response.json()
    chosen = answer["chosen"]["provider"] if answer["chosen"] else None
    return chosen, {r["provider"]: r["reasons"] for r in answer["rejected"]}


async def test_an_edit_takes_effect_on_the_next_quote_and_shows_in_the_history(make_client: Any) -> None:
    client = await make_client(fake_config(growth={"monthly_budget_usd": "500.00"}))
    assert (await chosen_and_reasons(client))[0] == "cheap"
    no_cheap = {"exclude_providers": ["cheap"]}
    first = await client.put("/v1/policies/growth", json=no_cheap, headers=if_match(0))
    assert first.status == 200, await first.text()
    assert first.headers["ETag"] == '"1"'
    chosen, reasons = await chosen_and_reasons(client)
    assert chosen == "dear" and reasons["cheap"] == ["provider cheap is excluded"]
    second = await client.put(
        "/v1/policies/growth", json={"version": 1, "max_cost_usd": "0.20"}, headers=ADMIN
    )
    assert second.status == 200, await second.text()
    chosen, reasons = await chosen_and_reasons(client)
    assert chosen == "cheap" and reasons["dear"] == ["cost 0.500000 USD above max_cost_usd 0.200000"]

    history = await (await client.get("/v1/policies/growth/history", headers=ADMIN)).json()
    versions = history["versions"]
    assert [v["version"] for v in versions] == [0, 1, 2]
    assert versions[0]["policy"] == {"monthly_budget_usd": "500.00"} and versions[0]["actor"] == "config.yaml"
    assert [v["actor"] for v in versions[1:]] == ["admin", "admin"]
    assert all(v["changed_at"] for v in versions[1:])
    assert versions[1]["change"] == {
        "exclude_providers": [None, ["cheap"]],
        "monthly_budget_usd": ["500.00", None],
    }
    assert versions[2]["change"] == {"exclude_providers": [["cheap"], None], "max_cost_usd": [None, "0.20"]}


async def test_get_shows_own_fields_effective_policy_version_and_budgets(make_client: Any) -> None:
    client = await make_client(fake_config(growth={"daily_budget_usd": "5.00"}))
    response = await client.get("/v1/policies/growth", headers=auth())
    body = await response.json()
    assert response.status == 200 and response.headers["ETag"] == '"0"'
    assert body["source"] == "config" and body["version"] == 0
    assert body["policy"] == {"daily_budget_usd": "5.00"}
    assert body["effective"]["max_attempts"] == 3  # from the default policy
    [day] = body["budgets"]
    assert day["window"].startswith("growth:day:")
    assert (day["limit_usd"], day["spent_usd"], day["remaining_usd"]) == ("5.000000", "0.000000", "5.000000")


async def test_a_stale_version_is_a_409_and_the_store_keeps_the_first_edit(make_client: Any) -> None:
    client = await make_client()
    ok = await client.put("/v1/policies/growth", json={"min_quality": "standard"}, headers=if_match(0))
    stale = await client.put("/v1/policies/growth", json={"min_quality": "premium"}, headers=if_match(0))
    assert ok.status == 200 and stale.status == 409
    assert (await stale.json())["error"]["code"] == "conflict"
    current = await (await client.get("/v1/policies/growth", headers=ADMIN)).json()
    assert current["version"] == 1 and current["policy"] == {"min_quality": "standard"}


async def test_only_the_admin_key_edits(make_client: Any) -> None:
    client = await make_client()
    team_key = {**auth(), "If-Match": '"0"'}
    own = await client.put("/v1/policies/growth", json={"max_attempts": 1}, headers=team_key)
    assert own.status == 403 and (await own.json())["error"]["code"] == "forbidden"
    history = await (await client.get("/v1/policies/growth/history", headers=auth())).json()
    assert [v["version"] for v in history["versions"]] == [0]


async def test_bad_bodies_are_400_naming_the_field(make_client: Any) -> None:
    client = await make_client()
    cases: list[tuple[Any, str]] = [
        ({"min_quality": "ultra"}, "min_quality"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_cost_usd": "1.5 dollars"}, "max_cost_usd"),
        ({"surprise": True}, "surprise"),
        ({"providers": ["cheap", "runwy"]}, "providers.1"),
        ({"exclude_models": ["nope"]}, "exclude_models.0"),
        ({"daily_budget_usd": "50.00", "monthly_budget_usd": "10.00"}, "daily_budget_usd"),
    ]
    for body, field in cases:
        response = await client.put("/v1/policies/growth", json=body, headers=if_match(0))
        error = (await response.json())["error"]
        assert response.status == 400, body
        assert error["code"] == "invalid_request" and error["details"][0]["field"] == field, error
    not_object = await client.put("/v1/policies/growth", json=["x"], headers=if_match(0))
    not_json = await client.put(
        "/v1/policies/growth", data="{", headers={**if_match(0), "Content-Type": "application/json"}
    )
    no_version = await client.put("/v1/policies/growth", json={"max_attempts": 2}, headers=ADMIN)
    bad_tag = await client.put("/v1/policies/growth", json={}, headers={**ADMIN, "If-Match": "abc"})
    disagree = await client.put("/v1/policies/growth", json={"version": 1}, headers=if_match(0))
    for response in (not_object, not_json, no_version, bad_tag, disagree):
        assert response.status == 400
    assert (await not_json.json())["error"]["code"] == "invalid_json"
    assert (await (await client.get("/v1/policies/growth", headers=ADMIN)).json())["version"] == 0


async def test_a_team_reads_only_its_own_policy(make_client: Any) -> None:
    client = await make_client()
    assert (await client.get("/v1/policies/studio", headers=auth())).status == 403
    assert (await client.get("/v1/policies/studio/history", headers=auth())).status == 403
    assert (await client.get("/v1/policies/studio", headers=auth(STUDIO_KEY))).status == 200
    assert (await client.get("/v1/policies/nobody", headers=ADMIN)).status == 404
    assert (await client.put("/v1/policies/nobody", json={}, headers=if_match(0))).status == 404
    mine = await (await client.get("/v1/policies", headers=auth())).json()
    every = await (await client.get("/v1/policies", headers=ADMIN)).json()
    assert [p["team"] for p in mine["policies"]] == ["growth"]
    assert [p["team"] for p in every["policies"]] == ["growth", "studio"]
    assert (await client.get("/v1/policies")).status == 401


async def test_a_provider_the_policy_excludes_gets_no_route_even_when_asked_for(make_client: Any) -> None:
    client = await make_client(fake_config(growth={"exclude_providers": ["cheap"]}))
    chosen, reasons = await chosen_and_reasons(client, constraints={"providers": ["cheap"]})
    assert chosen is None and "provider cheap is excluded" in reasons["cheap"]
    response = await client.post(
        "/v1/jobs", json={"prompt": "a pan", "constraints": {"providers": ["cheap"]}}, headers=auth()
    )
    assert response.status == 422
    rejected = {r["provider"]: r["reasons"] for r in (await response.json())["error"]["details"]["rejected"]}
    assert "provider cheap is excluded" in rejected["cheap"]
    chosen, _ = await chosen_and_reasons(client, constraints={"providers": ["cheap", "dear"]})
    assert chosen == "dear"


async def test_a_request_tightens_the_policy_but_never_loosens_it(make_client: Any) -> None:
    client = await make_client(fake_config(growth={"providers": ["dear"], "max_cost_usd": "0.40"}))
    chosen, reasons = await chosen_and_reasons(client, constraints={"max_cost_usd": "5.00"})
    assert chosen is None
    assert reasons["dear"] == ["cost 0.500000 USD above max_cost_usd 0.400000"]
    assert any("not in the allowed providers" in reason for reason in reasons["cheap"])
    cheap_only = {"prompt": "a pan", "constraints": {"max_cost_usd": "0.20"}}
    studio = await client.post("/v1/quotes", json=cheap_only, headers=auth(STUDIO_KEY))
    assert (await studio.json())["chosen"]["provider"] == "cheap"  # studio's default policy: any provider
