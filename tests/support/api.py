"""Talking to the app under test: waiting for a job to reach a status."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp.test_utils import TestClient

from tests.support.deployment import auth

Client = TestClient[Any, Any]
# Real seconds a job may take: an emulated output that is normalized (a 720p re-encode) takes a few
# seconds of CPU, more on a busy machine.
PATIENCE_S = 30.0


async def wait_for_status(
    client: Client, job_id: str, *statuses: str, key: str | None = None
) -> dict[str, Any]:
    headers = auth(key) if key else auth()
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        response = await client.get(f"/v1/jobs/{job_id}", headers=headers)
        body: dict[str, Any] = await response.json()
        if body["status"] in statuses:
            return body
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {job_id} stayed {body['status']}")
