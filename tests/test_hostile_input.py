"""The hostile inputs found by hand (issue 12), each a named case: every one gets a 4xx with a code and a
message, and a normal job submitted right after it succeeds — on SQLite and on Redis."""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from adapters.outbound import IpAddress
from broker.appkeys import STORE
from tests.support.api import wait_for_status
from tests.support.deployment import ADMIN_KEY, GROWTH_KEY, REDIS_URL, auth
from tests.support.fakes import FakeProvider
from tests.support.stores import STORE_KINDS

Client = TestClient[Any, Any]
SECRET = "team-webhook-secret-42"


def nested(depth: int, leaf: Any = 1) -> Any:
    """A list nested `depth` deep around `leaf`, built without recursion."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def deep_text(depth: int) -> str:
    return "[" * depth + "]" * depth


async def resolve_to_metadata(host: str, port: int) -> list[IpAddress]:
    return [ipaddress.ip_address("169.254.169.254")]


@pytest.fixture(params=sorted(STORE_KINDS))
async def client(
    request: pytest.FixtureRequest, make_client: Callable[..., Awaitable[Client]]
) -> AsyncIterator[Client]:
    """The app on each store kind, with a webhook secret (so webhook URLs are judged on their own)."""
    overrides: dict[str, Any] = {"webhook_secret": SECRET}
    if request.param == "redis":
        overrides |= {"store_url": REDIS_URL, "redis_prefix": f"test-{uuid.uuid4().hex[:12]}"}
    app_client = await make_client(resolver=resolve_to_metadata, **overrides)
    try:
        yield app_client
    finally:
        drop = getattr(app_client.app[STORE], "drop_all_keys", None)
        if drop is not None:
            await drop()


async def refused(response: aiohttp.ClientResponse, status: int = 400) -> dict[str, Any]:
    body = await response.json()
    assert response.status == status, body
    error: dict[str, Any] = body["error"]
    assert error["code"] and error["message"], body
    return error


async def then_a_normal_job_succeeds(client: Client) -> None:
    response = await client.post("/v1/jobs", json={"prompt": "a calm sea"}, headers=auth())
    assert response.status == 202, await response.text()
    done = await wait_for_status(client, (await response.json())["id"], "succeeded", "failed")
    assert done["status"] == "succeeded", done
    listing = await client.get("/v1/jobs", headers=auth())
    assert listing.status == 200
    assert (await client.get("/v1/reports/costs", headers=auth())).status == 200


async def test_multipart_metadata_nested_200_deep_is_400(client: Client) -> None:
    form = aiohttp.FormData(
        {"prompt": "x", "metadata": json.dumps({"k": nested(200)})}, default_to_multipart=True
    )
    error = await refused(await client.post("/v1/jobs", data=form, headers=auth()))
    assert "metadata" in error["message"]
    await then_a_normal_job_succeeds(client)


async def test_multipart_metadata_nested_5000_deep_is_400(client: Client) -> None:
    form = aiohttp.FormData({"prompt": "x", "metadata": deep_text(5000)}, default_to_multipart=True)
    error = await refused(await client.post("/v1/jobs", data=form, headers=auth()))
    assert error["details"][0]["field"] == "metadata"
    await then_a_normal_job_succeeds(client)


@pytest.mark.parametrize("depth", [9, 30, 300])
async def test_json_metadata_nested_deep_is_400_naming_metadata(client: Client, depth: int) -> None:
    body = {"prompt": "x", "metadata": {"k": nested(depth - 1)}}
    error = await refused(await client.post("/v1/jobs", json=body, headers=auth()))
    assert error["details"][0]["field"] == "metadata"
    await then_a_normal_job_succeeds(client)


async def test_json_nested_1000_deep_is_400_on_jobs_quotes_and_policies(client: Client) -> None:
    raw = '{"prompt": "x", "constraints": ' + deep_text(1000) + "}"
    json_headers = {"Content-Type": "application/json"}
    for path in ("/v1/jobs", "/v1/quotes"):
        error = await refused(await client.post(path, data=raw, headers={**auth(), **json_headers}))
        assert error["details"][0]["field"] == "constraints"
    admin = {**auth(ADMIN_KEY), **json_headers, "If-Match": '"0"'}
    await refused(await client.put("/v1/policies/growth", data=deep_text(1000), headers=admin))
    await then_a_normal_job_succeeds(client)


@pytest.mark.parametrize(
    "metadata",
    [
        '{"k": NaN}',
        '{"k": Infinity}',
        '{"k": 1e400}',
        '{"k": "\\udfff"}',
        '{"\\ud800": 1}',
        '{"k": 1' + "0" * 30 + "}",
    ],
)
async def test_metadata_that_would_not_read_back_unchanged_is_400(client: Client, metadata: str) -> None:
    raw = '{"prompt": "x", "metadata": ' + metadata + "}"
    headers = {**auth(), "Content-Type": "application/json"}
    await refused(await client.post("/v1/jobs", data=raw, headers=headers))
    await then_a_normal_job_succeeds(client)


async def test_an_integer_of_thousands_of_digits_is_400(client: Client) -> None:
    raw = '{"prompt": "x", "seed": ' + "9" * 5000 + "}"
    headers = {**auth(), "Content-Type": "application/json"}
    await refused(await client.post("/v1/jobs", data=raw, headers=headers))
    await then_a_normal_job_succeeds(client)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8778/internal-admin/delete-everything",
        "http://169.254.169.254/",
        "https://169.254.169.254/latest/meta-data/",
        "https://localhost/hook",
    ],
)
async def test_webhook_urls_inside_are_400(client: Client, url: str) -> None:
    body = {"prompt": "x", "webhook_url": url}
    error = await refused(await client.post("/v1/jobs", json=body, headers=auth()))
    assert error["details"][0]["field"] == "webhook_url"
    await then_a_normal_job_succeeds(client)


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/x.png",
        "https://169.254.169.254/x.png",
        "https://localhost/x.png",
        "https://[::1]/x.png",
        "https://0x7f000001/x.png",
        "https://2130706433/x.png",
        "https://[::ffff:127.0.0.1]/x.png",
        "https://10.0.0.1/x.png",
        "https://user:pass@127.0.0.1/x.png",
        "http://images.example.com/x.png",
    ],
)
async def test_image_urls_inside_are_400_at_submit(client: Client, url: str) -> None:
    body = {"prompt": "x", "image_url": url}
    for path in ("/v1/jobs", "/v1/quotes"):
        error = await refused(await client.post(path, json=body, headers=auth()))
        assert error["details"][0]["field"] == "image_url", error
    await then_a_normal_job_succeeds(client)


async def test_a_name_resolving_to_the_metadata_address_is_not_passed_to_a_provider(
    client: Client, providers: dict[str, FakeProvider]
) -> None:
    """The fake providers take image URLs, as Runway does: the broker checks the URL after DNS before
    handing it over, and fails the job instead."""
    body = {"prompt": "x", "image_url": "https://images.example.com/still.png"}
    response = await client.post("/v1/jobs", json=body, headers=auth())
    assert response.status == 202
    done = await wait_for_status(client, (await response.json())["id"], "succeeded", "failed")
    assert done["status"] == "failed" and done["error"]["code"] == "image_fetch_failed"
    assert "cloud metadata" in done["error"]["message"]
    assert all(task.image is None for fake in providers.values() for task in fake.submits)
    await then_a_normal_job_succeeds(client)


async def test_an_unknown_provider_or_model_is_400_naming_it(client: Client) -> None:
    body = {"prompt": "x", "constraints": {"providers": ["acme"], "models": ["c1", "warp-9"]}}
    for path in ("/v1/jobs", "/v1/quotes"):
        error = await refused(await client.post(path, json=body, headers=auth()))
        assert "acme" in error["message"] and "warp-9" in error["message"]
        fields = [d["field"] for d in error["details"]]
        assert fields == ["constraints.providers.0", "constraints.models.1"]
    await then_a_normal_job_succeeds(client)


async def test_the_bearer_scheme_is_case_insensitive(client: Client) -> None:
    for scheme in ("bearer", "BEARER", "Bearer"):
        response = await client.get("/v1/jobs", headers={"Authorization": f"{scheme} {GROWTH_KEY}"})
        assert response.status == 200
    error = await refused(await client.get("/v1/jobs", headers={"Authorization": GROWTH_KEY}), 401)
    assert error["code"] == "unauthorized"
    await then_a_normal_job_succeeds(client)


async def test_a_policy_edit_with_an_endless_list_is_400(client: Client) -> None:
    admin = {**auth(ADMIN_KEY), "If-Match": '"0"'}
    body = {"providers": ["cheap"] * 10_000}
    error = await refused(await client.put("/v1/policies/growth", json=body, headers=admin))
    assert "providers" in error["message"]
    await then_a_normal_job_succeeds(client)
