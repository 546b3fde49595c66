"""The job API: auth, validation, limits, idempotency, visibility, and jobs through the runner."""

from __future__ import annotations

import asyncio
import hashlib
import io
from typing import Any

import aiohttp
from PIL import Image

from tests.support.adapters import png_bytes as png
from tests.support.api import wait_for_status
from tests.support.deployment import ADMIN_KEY, STUDIO_KEY, auth, fake_config
from tests.support.fakes import FakeProvider


async def test_health_and_openapi_need_no_key(make_client: Any) -> None:
    client = await make_client()
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    document = await (await client.get("/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    assert "/v1/jobs" in document["paths"]
    assert "JobRequest" in document["components"]["schemas"]


async def test_missing_or_wrong_key_is_401(make_client: Any) -> None:
    client = await make_client()
    missing = await client.post("/v1/jobs", json={"prompt": "x"})
    wrong = await client.get("/v1/jobs", headers=auth("nope-not-a-key"))
    assert missing.status == 401 and wrong.status == 401
    assert (await missing.json())["error"]["code"] == "unauthorized"


async def test_out_of_range_field_is_400_naming_the_field(make_client: Any) -> None:
    client = await make_client()
    response = await client.post("/v1/jobs", json={"prompt": "x", "duration_s": 99}, headers=auth())
    body = await response.json()
    assert response.status == 400
    assert body["error"]["code"] == "invalid_request"
    assert body["error"]["details"][0]["field"] == "duration_s"


async def test_malformed_bodies_are_400_not_500(make_client: Any) -> None:
    client = await make_client()
    cases = [
        ("{not json", "application/json", "invalid_json"),
        ("[1, 2]", "application/json", "invalid_request"),
        ('{"prompt": "x", "aspect_ratio": "5:4"}', "application/json", "invalid_request"),
        ('{"prompt": "x", "image_url": "http://plain.example/a.png"}', "application/json", "invalid_request"),
        ('{"prompt": "x", "mode": "image_to_video"}', "application/json", "invalid_request"),
        ('{"prompt": "x", "surprise": 1}', "application/json", "invalid_request"),
    ]
    for body, content_type, code in cases:
        response = await client.post("/v1/jobs", data=body, headers={**auth(), "Content-Type": content_type})
        assert response.status == 400, body
        assert (await response.json())["error"]["code"] == code, body
    text = await client.post("/v1/jobs", data="prompt", headers={**auth(), "Content-Type": "text/plain"})
    assert text.status == 415


async def test_oversized_body_is_413(make_client: Any) -> None:
    client = await make_client(max_body_bytes=2048)
    response = await client.post("/v1/jobs", json={"prompt": "x" * 5000}, headers=auth())
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "payload_too_large"
    listing = await client.get("/v1/jobs", headers=auth())
    assert (await listing.json())["jobs"] == []


async def test_job_runs_to_success_and_output_downloads(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    client = await make_client()
    response = await client.post("/v1/jobs", json={"prompt": "a lighthouse, slow zoom in"}, headers=auth())
    assert response.status == 202
    job = await response.json()
    assert job["status"] == "queued" and job["route"]["provider"] == "cheap"
    assert job["estimated_cost_usd"] == "0.100000"
    done = await wait_for_status(client, job["id"], "succeeded", "failed")
    assert done["status"] == "succeeded", done
    assert done["cost_usd"] == "0.100000"
    assert [a["status"] for a in done["attempts"]] == ["succeeded"]
    output = done["output"]
    assert (output["width"], output["height"], output["fps"], output["codec"]) == (1280, 720, 24.0, "h264")
    assert output["normalized"] is False and output["normalized_from"] is None  # delivered as asked
    video = await client.get(output["url"], headers=auth())
    assert video.status == 200 and video.content_type == "video/mp4"
    assert hashlib.sha256(await video.read()).hexdigest() == output["sha256"]
    poster = await client.get(f"/v1/jobs/{job['id']}/poster", headers=auth())
    assert poster.status == 200 and poster.content_type == "image/jpeg"
    assert Image.open(io.BytesIO(await poster.read())).size == (1280, 720)
    assert len(providers["cheap"].submits) == 1


async def test_multipart_upload_makes_image_to_video(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    client = await make_client()
    form = aiohttp.FormData()
    form.add_field("prompt", "pan left")
    form.add_field("duration_s", "3")
    form.add_field("constraints", '{"max_cost_usd": "0.20"}')
    form.add_field("image", png(), filename="still.png", content_type="image/png")
    response = await client.post("/v1/jobs", data=form, headers=auth())
    assert response.status == 202, await response.text()
    job = await response.json()
    assert job["request"]["mode"] == "image_to_video" and job["request"]["duration_s"] == 3
    await wait_for_status(client, job["id"], "succeeded")
    task = providers["cheap"].submits[0]
    assert task.image is not None and task.image.content_type == "image/png" and task.image.data == png()


async def test_multipart_non_image_is_rejected(make_client: Any) -> None:
    client = await make_client()
    form = aiohttp.FormData()
    form.add_field("prompt", "pan left")
    form.add_field("image", b"GIF89a but not really", filename="x.gif", content_type="image/gif")
    response = await client.post("/v1/jobs", data=form, headers=auth())
    assert 400 <= response.status < 500
    assert (await response.json())["error"]["code"] == "invalid_image"


async def test_other_teams_job_is_404(make_client: Any) -> None:
    client = await make_client()
    job = await (await client.post("/v1/jobs", json={"prompt": "x"}, headers=auth())).json()
    other = await client.get(f"/v1/jobs/{job['id']}", headers=auth(STUDIO_KEY))
    assert other.status == 404
    admin = await client.get(f"/v1/jobs/{job['id']}", headers=auth(ADMIN_KEY))
    assert admin.status == 200
    studio_list = await (await client.get("/v1/jobs", headers=auth(STUDIO_KEY))).json()
    assert studio_list["jobs"] == []


async def test_idempotency_key_same_body_same_job_other_body_409(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    client = await make_client()
    headers = {**auth(), "Idempotency-Key": "order-42"}
    first = await client.post("/v1/jobs", json={"prompt": "x"}, headers=headers)
    second = await client.post("/v1/jobs", json={"prompt": "x"}, headers=headers)
    third = await client.post("/v1/jobs", json={"prompt": "y"}, headers=headers)
    assert first.status == 202 and second.status == 200
    assert (await first.json())["id"] == (await second.json())["id"]
    assert third.status == 409
    assert (await third.json())["error"]["code"] == "idempotency_conflict"
    await wait_for_status(client, (await first.json())["id"], "succeeded")
    assert len(providers["cheap"].submits) == 1


async def test_no_feasible_route_is_422_with_reasons(make_client: Any) -> None:
    client = await make_client()
    body = {"prompt": "x", "constraints": {"max_cost_usd": "0.01"}}
    response = await client.post("/v1/jobs", json=body, headers=auth())
    error = (await response.json())["error"]
    assert response.status == 422 and error["code"] == "no_feasible_route"
    assert {r["provider"] for r in error["details"]["rejected"]} == {"cheap", "dear"}
    assert all(r["reasons"] for r in error["details"]["rejected"])


async def test_list_pages_with_cursor_and_validates_query(make_client: Any) -> None:
    client = await make_client()
    ids = [
        (await (await client.post("/v1/jobs", json={"prompt": f"p{i}"}, headers=auth())).json())["id"]
        for i in range(3)
    ]
    page = await (await client.get("/v1/jobs?limit=2", headers=auth())).json()
    assert [j["id"] for j in page["jobs"]] == [ids[2], ids[1]]
    rest = await (await client.get(f"/v1/jobs?limit=2&cursor={page['next_cursor']}", headers=auth())).json()
    assert [j["id"] for j in rest["jobs"]] == [ids[0]] and rest["next_cursor"] is None
    assert (await client.get("/v1/jobs?limit=0", headers=auth())).status == 400
    assert (await client.get("/v1/jobs?status=bogus", headers=auth())).status == 400


async def test_output_before_success_is_409_and_unknown_route_404(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    providers["cheap"].script.polls_to_finish = 10_000
    client = await make_client()
    job = await (await client.post("/v1/jobs", json={"prompt": "x"}, headers=auth())).json()
    early = await client.get(f"/v1/jobs/{job['id']}/output", headers=auth())
    assert early.status == 409
    nowhere = await client.get("/v1/nothing", headers=auth())
    assert nowhere.status == 404 and (await nowhere.json())["error"]["code"] == "not_found"


async def test_cancel_running_job_cancels_at_provider(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    providers["cheap"].script.polls_to_finish = 10_000
    client = await make_client()
    job = await (await client.post("/v1/jobs", json={"prompt": "x"}, headers=auth())).json()
    await wait_for_status(client, job["id"], "running")
    while not providers["cheap"].submits:
        await asyncio.sleep(0.01)
    response = await client.delete(f"/v1/jobs/{job['id']}", headers=auth())
    assert response.status == 202
    done = await wait_for_status(client, job["id"], "cancelled")
    assert providers["cheap"].cancels == ["cheap-0"]
    assert done["attempts"][0]["status"] == "cancelled"
    again = await client.delete(f"/v1/jobs/{job['id']}", headers=auth())
    assert again.status == 409


async def test_malformed_multipart_is_400_not_500(make_client: Any) -> None:
    client = await make_client()
    no_boundary = {**auth(), "Content-Type": "multipart/form-data"}
    broken_part = {**auth(), "Content-Type": "multipart/form-data; boundary=xyz"}
    for path in ("/v1/jobs", "/v1/quotes"):
        first = await client.post(path, data=b'{"prompt": "x"}', headers=no_boundary)
        second = await client.post(path, data=b"--xyz\r\n[0]--xyz--\r\n", headers=broken_part)
        for response in (first, second):
            assert response.status == 400, path
            assert (await response.json())["error"]["code"] == "invalid_request"
    listing = await (await client.get("/v1/jobs", headers=auth())).json()
    assert listing["jobs"] == []


async def test_idempotent_replay_returns_the_job_even_when_the_budget_is_spent(
    make_client: Any, providers: dict[str, FakeProvider]
) -> None:
    client = await make_client(fake_config(growth={"daily_budget_usd": "0.10"}))
    headers = {**auth(), "Idempotency-Key": "order-99"}
    first = await client.post("/v1/jobs", json={"prompt": "x"}, headers=headers)
    assert first.status == 202
    # The budget now holds exactly this job: a new job is refused, the retry of this one is not.
    other = await client.post("/v1/jobs", json={"prompt": "other"}, headers=auth())
    assert other.status == 402
    retry = await client.post("/v1/jobs", json={"prompt": "x"}, headers=headers)
    assert retry.status == 200 and (await retry.json())["id"] == (await first.json())["id"]
    changed = await client.post("/v1/jobs", json={"prompt": "y"}, headers=headers)
    assert changed.status == 409
    await wait_for_status(client, (await first.json())["id"], "succeeded")
    assert len(providers["cheap"].submits) == 1


async def test_oversized_and_bomb_images_are_clear_4xx(make_client: Any) -> None:
    client = await make_client(max_image_bytes=4096)
    big = aiohttp.FormData()
    big.add_field("prompt", "pan left")
    big.add_field("image", png(900, 900) + b"\0" * 8192, filename="big.png", content_type="image/png")
    response = await client.post("/v1/jobs", data=big, headers=auth())
    assert response.status == 413 and (await response.json())["error"]["code"] == "image_too_large"

    # A PNG whose header claims 20000 x 20000 pixels: refused from the header, never decoded.
    bomb_buffer = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(bomb_buffer, format="PNG")
    client = await make_client()
    bomb = aiohttp.FormData()
    bomb.add_field("prompt", "pan left")
    bomb.add_field("image", bomb_buffer.getvalue(), filename="bomb.png", content_type="image/png")
    response = await client.post("/v1/jobs", data=bomb, headers=auth())
    assert 400 <= response.status < 500
    assert (await response.json())["error"]["code"] in ("invalid_image", "image_too_large")
    listing = await (await client.get("/v1/jobs", headers=auth())).json()
    assert listing["jobs"] == []
