"""`/v1/batches` on the real app: all-or-none acceptance against the team's budget, validation by item
index, the 1,000-item limit, idempotent replay, counts and the manifest, cancel, and team isolation."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.support.api import PATIENCE_S, Client
from tests.support.deployment import STUDIO_KEY, auth, fake_config
from tests.support.fakes import FakeProvider


def items(count: int, **fields: Any) -> list[dict[str, Any]]:
    return [{"prompt": f"shot {i}", **fields} for i in range(count)]


async def wait_for_batch(client: Client, batch_id: str, key: str | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        body: dict[str, Any] = await (
            await client.get(f"/v1/batches/{batch_id}", headers=auth(key) if key else auth())
        ).json()
        if body["status"] == "ended":
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"batch {batch_id} still running: {body['counts']}")


async def budget(client: Client) -> list[dict[str, str]]:
    policy = await (await client.get("/v1/policies/growth", headers=auth())).json()
    windows: list[dict[str, str]] = policy["budgets"]
    return windows


async def job_count(client: Client) -> int:
    return len((await (await client.get("/v1/jobs?limit=200", headers=auth())).json())["jobs"])


async def test_a_batch_runs_every_item_and_lists_the_outputs(make_client: Any) -> None:
    client = await make_client()
    response = await client.post(
        "/v1/batches", json={"items": items(5), "metadata": {"order": "o-1"}}, headers=auth()
    )
    assert response.status == 202, await response.text()
    accepted = await response.json()
    assert response.headers["Location"] == f"/v1/batches/{accepted['id']}"
    assert accepted["id"].startswith("bat_") and accepted["total"] == 5
    assert accepted["estimated_cost_usd"] == "0.500000"  # five jobs on the 0.10 route
    ended = await wait_for_batch(client, accepted["id"])
    assert ended["counts"]["succeeded"] == 5 and ended["cost_usd"] == "0.500000"
    assert [item["index"] for item in ended["items"]] == [0, 1, 2, 3, 4]
    job = await (await client.get(f"/v1/jobs/{ended['items'][3]['job_id']}", headers=auth())).json()
    assert job["request"]["prompt"] == "shot 3" and job["request"]["priority"] == "batch"
    manifest = await (await client.get(f"/v1/batches/{accepted['id']}/manifest", headers=auth())).json()
    assert [o["index"] for o in manifest["outputs"]] == [0, 1, 2, 3, 4] and manifest["without_output"] == []
    clip = await client.get(manifest["outputs"][0]["url"], headers=auth())
    assert clip.status == 200 and (await clip.read())[4:8] == b"ftyp"
    csv_text = await (
        await client.get(f"/v1/batches/{accepted['id']}/manifest?format=csv", headers=auth())
    ).text()
    assert csv_text.splitlines()[0].startswith("index,job_id,url") and len(csv_text.splitlines()) == 6


async def test_an_item_keeps_its_own_priority(make_client: Any) -> None:
    client = await make_client()
    body = {"items": [{"prompt": "a", "priority": "interactive"}, {"prompt": "b"}]}
    accepted = await (await client.post("/v1/batches", json=body, headers=auth())).json()
    jobs = [
        await (await client.get(f"/v1/jobs/{i['job_id']}", headers=auth())).json() for i in accepted["items"]
    ]
    assert [j["request"]["priority"] for j in jobs] == ["interactive", "batch"]


async def test_a_batch_over_budget_is_refused_whole_with_the_figures(make_client: Any) -> None:
    client = await make_client(fake_config(growth={"daily_budget_usd": "1.00"}))
    assert (await client.post("/v1/jobs", json={"prompt": "first"}, headers=auth())).status == 202
    before = await budget(client)
    # Nine items at 0.10 need 0.90; 0.90 is left, so nine fit and ten do not.
    refused = await client.post("/v1/batches", json={"items": items(10)}, headers=auth())
    assert refused.status == 402
    error = (await refused.json())["error"]
    assert error["code"] == "budget_exceeded"
    day = next(iter(error["details"]["remaining_usd"]))
    assert error["details"]["estimated_cost_usd"] == "1.000000" and error["details"]["items"] == 10
    assert error["details"]["remaining_usd"][day] == "0.900000" and error["details"]["short_windows"] == [day]
    assert "1.000000 USD for 10 items" in error["message"] and "0.900000 USD left" in error["message"]
    assert await budget(client) == before and await job_count(client) == 1
    fits = await client.post("/v1/batches", json={"items": items(9)}, headers=auth())
    assert fits.status == 202 and await job_count(client) == 10


async def test_an_invalid_item_refuses_the_batch_naming_its_index(make_client: Any) -> None:
    client = await make_client()
    body = {"items": [*items(3), {"prompt": "x", "duration_s": 99}, *items(2)]}
    response = await client.post("/v1/batches", json=body, headers=auth())
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "invalid_request" and error["message"].startswith("item 3 is invalid")
    assert error["details"][0]["field"] == "items[3].duration_s" and error["details"][0]["index"] == 3
    unknown = {"items": [{"prompt": "x", "constraints": {"providers": ["acme"]}}]}
    named = (await (await client.post("/v1/batches", json=unknown, headers=auth())).json())["error"]
    assert named["details"][0]["field"].startswith("items[0].constraints.providers")
    assert await job_count(client) == 0


async def test_an_item_no_route_serves_refuses_the_batch_naming_its_index(make_client: Any) -> None:
    client = await make_client()
    body = {"items": [*items(2), {"prompt": "x", "constraints": {"max_cost_usd": "0.01"}}]}
    response = await client.post("/v1/batches", json=body, headers=auth())
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["code"] == "no_feasible_route" and error["details"]["index"] == 2
    assert await job_count(client) == 0


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"items": items(1001)}, 413),
        ({"items": []}, 400),
        ({"items": "x"}, 400),
        ({"items": items(1), "x": 1}, 400),
    ],
)
async def test_batch_shapes_are_refused_with_a_code(
    make_client: Any, body: dict[str, Any], status: int
) -> None:
    client = await make_client()
    response = await client.post("/v1/batches", json=body, headers=auth())
    assert response.status == status
    error = (await response.json())["error"]
    if status == 413:
        assert (
            error["code"] == "payload_too_large"
            and "at most 1000 items; this one has 1001" in error["message"]
        )
        assert error["details"]["limit"] == 1000
    assert await job_count(client) == 0


async def test_the_same_key_and_body_returns_the_same_batch_another_body_conflicts(make_client: Any) -> None:
    client = await make_client(fake_config(growth={"daily_budget_usd": "0.30"}))
    headers = {**auth(), "Idempotency-Key": "orders-7"}
    first = await client.post("/v1/batches", json={"items": items(3)}, headers=headers)
    assert first.status == 202
    # The budget is now spent on this batch: its replay still answers it, and creates nothing.
    again = await client.post("/v1/batches", json={"items": items(3)}, headers=headers)
    assert again.status == 200 and (await again.json())["id"] == (await first.json())["id"]
    racing = await asyncio.gather(
        *(client.post("/v1/batches", json={"items": items(3)}, headers=headers) for _ in range(3))
    )
    assert {r.status for r in racing} == {200}
    other = await client.post("/v1/batches", json={"items": items(2)}, headers=headers)
    assert other.status == 409 and (await other.json())["error"]["code"] == "idempotency_conflict"
    assert await job_count(client) == 3


async def test_delete_cancels_the_items_that_have_not_ended(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    providers["cheap"].script.polls_to_finish = 10_000  # every job stays running
    client = await make_client()
    accepted = await (await client.post("/v1/batches", json={"items": items(4)}, headers=auth())).json()
    cancelled = await client.delete(f"/v1/batches/{accepted['id']}", headers=auth())
    assert cancelled.status == 202
    body = await cancelled.json()
    assert body["cancel_requested"] == 4
    ended = await wait_for_batch(client, accepted["id"])
    assert ended["counts"]["cancelled"] == 4 and ended["counts"]["succeeded"] == 0
    again = await (await client.delete(f"/v1/batches/{accepted['id']}", headers=auth())).json()
    assert again["cancel_requested"] == 0 and again["counts"]["cancelled"] == 4


async def test_another_team_sees_no_batch(make_client: Any) -> None:
    client = await make_client()
    accepted = await (await client.post("/v1/batches", json={"items": items(1)}, headers=auth())).json()
    for method, tail in (("GET", ""), ("GET", "/manifest"), ("DELETE", "")):
        response = await client.request(
            method, f"/v1/batches/{accepted['id']}{tail}", headers=auth(STUDIO_KEY)
        )
        assert response.status == 404, (method, tail)
    assert (await client.get("/v1/batches/bat_nope", headers=auth())).status == 404
