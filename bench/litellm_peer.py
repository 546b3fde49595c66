"""The peer for `bench.inflight`: provider submits per second through the LiteLLM proxy, on the same
kind of Runway emulator, in the same run.

LiteLLM is not a dependency of the broker: install it in a separate virtualenv
(`python3 -m venv /tmp/litellm && /tmp/litellm/bin/pip install "litellm[proxy]"`) and pass its `litellm`
executable as `--litellm`. The proxy listens on 127.0.0.1 and is sent `POST /v1/videos` with
`model: runwayml/gen4_turbo`, pointed at the emulator; each accepted request is one provider submit.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp
import yaml

MASTER_KEY = "sk-bench-master-key-0123456789abcdef"


async def litellm_submits_per_second(
    *,
    litellm: str,
    emulator_url: str,
    provider_key: str,
    jobs: int,
    clients: int,
    workdir: Path,
    free_port: int,
    stats_url: str,
) -> tuple[float, int]:
    """Send `jobs` video requests through the proxy; (submits per second at the emulator, tasks made)."""
    config = {
        "model_list": [
            {
                "model_name": "runwayml/gen4_turbo",
                "litellm_params": {
                    "model": "runwayml/gen4_turbo",
                    "api_base": f"{emulator_url}/v1",
                    "api_key": provider_key,
                },
            }
        ]
    }
    path = workdir / "litellm.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "LITELLM_MASTER_KEY": MASTER_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    log = (workdir / "litellm.log").open("wb")
    proxy = await asyncio.create_subprocess_exec(
        litellm,
        "--config",
        str(path),
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port),
        env=env,
        stdout=log,
        stderr=log,
        cwd=workdir,
    )
    url = f"http://127.0.0.1:{free_port}"
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    body = {
        "model": "runwayml/gen4_turbo",
        "prompt": "slow push in",
        "seconds": "5",
        "extra_body": {"promptImage": "https://example.com/still.png", "ratio": "1280:720"},
    }
    timeout = aiohttp.ClientTimeout(total=120)
    try:
        async with aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(limit=clients)
        ) as http:
            for _ in range(900):
                try:
                    async with http.get(f"{url}/health/liveliness") as reply:
                        if reply.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.2)
            before = await _tasks(http, stats_url)
            queue = iter(range(jobs))

            async def client() -> None:
                for _ in queue:
                    async with http.post(f"{url}/v1/videos", json=body, headers=headers) as reply:
                        await reply.read()

            started = time.monotonic()
            await asyncio.gather(*(client() for _ in range(clients)))
            elapsed = time.monotonic() - started
            made = await _tasks(http, stats_url) - before
    finally:
        proxy.terminate()
        await proxy.wait()
    return made / elapsed, made


async def _tasks(http: aiohttp.ClientSession, stats_url: str) -> int:
    async with http.get(stats_url) as reply:
        return int((await reply.json())["tasks"])
