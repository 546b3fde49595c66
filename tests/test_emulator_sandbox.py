"""The sandbox starts every emulator on loopback; one emulator also runs as its own process."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp
import pytest

from adapters.emulators.doitong import GENERATE_MUTATION
from adapters.emulators.media import probe
from adapters.emulators.sandbox import PROVIDERS, start_sandbox

REPO = Path(__file__).resolve().parents[1]


async def test_sandbox_serves_all_providers_with_their_own_keys() -> None:
    async with await start_sandbox(render_seconds=0.05) as sandbox:
        assert set(sandbox.endpoints) == set(PROVIDERS)
        env = sandbox.env()
        assert set(env) == {
            "RUNWAYML_API_SECRET",
            "FAL_KEY",
            "MUVI_API_KEY",
            "DOITONG_API_KEY",
            "PIXELAPI_KEY",
            "MUVI_WEBHOOK_SECRET",
            "DOITONG_WEBHOOK_SECRET",
            "REPLICATE_API_TOKEN",
            "REPLICATE_WEBHOOK_SECRET",
        }
        assert sandbox.env()["REPLICATE_WEBHOOK_SECRET"].startswith("whsec_")
        assert len(set(sandbox.base_urls().values())) == 6
        assert all(url.startswith("http://127.0.0.1:") for url in sandbox.base_urls().values())
        runway = sandbox.endpoints["runway"]
        headers = {"Authorization": f"Bearer {runway.api_key}", "X-Runway-Version": "2024-11-06"}
        body = {
            "model": "gen4_turbo",
            "promptImage": "https://a.example/x.png",
            "ratio": "960:960",
            "duration": 2,
        }
        async with aiohttp.ClientSession(runway.base_url) as session:
            async with session.post("/v1/image_to_video", json=body, headers=headers) as created:
                task_id = (await created.json())["id"]
            await asyncio.sleep(0.1)
            async with session.get(f"/v1/tasks/{task_id}", headers=headers) as polled:
                task = await polled.json()
            assert task["status"] == "SUCCEEDED"
            async with session.get(task["output"][0]) as video:
                assert probe(await video.read())[1:3] == (960, 960)  # the ratio in pixels
            wrong_key = {**headers, "Authorization": f"Bearer {sandbox.endpoints['fal'].api_key}"}
            async with session.post("/v1/image_to_video", json=body, headers=wrong_key) as refused:
                assert refused.status == 401
        doitong = sandbox.endpoints["doitong"]
        assert doitong.webhook_secret is not None
        assert doitong.emulator.webhook_secret == doitong.webhook_secret
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(runway.base_url + "/v1/tasks/x")


async def test_two_sandboxes_do_not_share_keys() -> None:
    async with await start_sandbox() as first, await start_sandbox() as second:
        assert first.env()["FAL_KEY"] != second.env()["FAL_KEY"]
        assert first.base_urls()["fal"] != second.base_urls()["fal"]


async def test_standalone_emulator_takes_faults_over_http() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "adapters.emulators",
        "doitong",
        "--port",
        "0",
        "--api-key",
        "k1",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=60)).decode()
        base_url = line.removeprefix("listening on ").strip()
        assert base_url.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession(base_url) as session:
            fault = {"kind": "rate_limit", "endpoint": "submit", "retry_after_s": 9}
            async with session.post("/_emulator/faults", json=fault) as added:
                assert added.status == 201
            variables = {
                "input": {"type": "VIDEO", "provider": "runway-i2v", "input": {"imageUrl": "https://a/b.png"}}
            }
            request = {"query": GENERATE_MUTATION, "variables": variables}
            headers = {"Authorization": "Bearer k1"}
            async with session.post("/graphql", json=request, headers=headers) as limited:
                assert (limited.status, limited.headers["Retry-After"]) == (429, "9")
            async with session.post("/graphql", json=request, headers=headers) as created:
                assert created.status == 200
                assert (await created.json())["data"]["generate"]["status"] == "processing"
            async with session.get("/_emulator/requests") as recorded:
                assert [r["endpoint"] for r in await recorded.json()] == ["submit", "submit"]
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
