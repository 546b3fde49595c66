"""`broker demo`: start the broker in-process on the embedded defaults, animate the bundled sample image
on the local backend through the real HTTP API, write the MP4 and print the job."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from broker.app import create_app
from broker.config import load_config
from broker.logging import configure_logging
from broker.settings import Settings

SAMPLE = Path(__file__).resolve().parent.parent / "local_backend" / "assets" / "sample.png"
DEMO_TEAM_ENV = "BROKER_KEY_GROWTH"


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _submit(http: aiohttp.ClientSession, base: str, prompt: str, duration: int) -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field("prompt", prompt)
    form.add_field("duration_s", str(duration))
    # The demo never spends money: it asks for the local route even when provider keys are set.
    form.add_field("constraints", json.dumps({"providers": ["local"]}))
    form.add_field("image", SAMPLE.read_bytes(), filename="sample.png", content_type="image/png")
    async with http.post(f"{base}/v1/jobs", data=form) as response:
        body: dict[str, Any] = await response.json()
        if response.status != 202:
            raise RuntimeError(f"submit answered {response.status}: {body}")
        return body


async def _wait(
    http: aiohttp.ClientSession, base: str, job_id: str, timeout_s: float = 300
) -> dict[str, Any]:
    started, last = time.monotonic(), ""
    while time.monotonic() - started < timeout_s:
        async with http.get(f"{base}/v1/jobs/{job_id}") as response:
            job: dict[str, Any] = await response.json()
        attempt = job["attempts"][-1]["status"] if job["attempts"] else "-"
        line = f"  {time.monotonic() - started:5.1f}s  job {job['status']:<9} attempt {attempt}"
        if line.split("s", 1)[1] != last:
            _say(line)
            last = line.split("s", 1)[1]
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        await asyncio.sleep(0.2)
    raise RuntimeError(f"job {job_id} did not finish in {timeout_s:.0f} s")


async def run_demo(out: Path, prompt: str, duration: int) -> int:
    """Run the demo; returns the process exit status."""
    settings = Settings(port=0)
    config = load_config(settings.config)
    env = dict(os.environ)
    env.setdefault(DEMO_TEAM_ENV, secrets.token_urlsafe(24))
    configure_logging("warning", [env[DEMO_TEAM_ENV]])
    app = create_app(settings, config, env=env)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}"
    _say(f"broker running at {base} (store {settings.store_url}, artifacts {settings.data_dir}/)")
    headers = {"Authorization": f"Bearer {env[DEMO_TEAM_ENV]}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            job = await _submit(http, base, prompt, duration)
            _say(
                f"submitted {job['id']}: {prompt!r}, {duration} s, route {job['route']['provider']}/"
                f"{job['route']['model']}, estimate ${job['estimated_cost_usd']}"
            )
            job = await _wait(http, base, job["id"])
            if job["status"] != "succeeded":
                _say(f"job ended {job['status']}: {job.get('error')}")
                print(json.dumps(job, indent=2))
                return 1
            async with http.get(f"{base}{job['output']['url']}") as response:
                out.write_bytes(await response.read())
    finally:
        await runner.cleanup()
    output = job["output"]
    size = f"{output['width']}x{output['height']}"
    _say(f"wrote {out} ({output['bytes']} bytes, {size}, {output['duration_s']} s)")
    _say(f"route {job['route']['provider']}/{job['route']['model']}, cost ${job['cost_usd']}")
    print(json.dumps(job, indent=2))
    return 0
