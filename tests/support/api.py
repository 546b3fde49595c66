"""Talking to the app under test: waiting for a job to reach a status."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from tests.support.deployment import auth

Client = TestClient[Any, Any]


async def wait_for_status(
    client: Client, job_id: str, *statuses: str, key: str | None = None
) -> dict[str, Any]:
    headers = auth(key) if key else auth()
    for _ in range(400):
        response = await client.get(f"/v1/jobs/{job_id}", headers=headers)
        body: dict[str, Any] = await response.json()
        if body["status"] in statuses:
            return body
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {job_id} stayed {body['status']}")
