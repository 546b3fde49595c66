"""Team webhooks: when a job ends, POST it to the job's `webhook_url`, signed.

Signature: `X-Broker-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>." + raw body>` with the secret in
`BROKER_WEBHOOK_SECRET`, and `X-Broker-Timestamp: <unix seconds>`, so a receiver can refuse replays.
Delivery is best effort with bounded retries; the job itself is always readable with GET /v1/jobs/{id}.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time

import aiohttp
import structlog

from adapters.base import Sleep
from broker.store import JobRecord

log = structlog.get_logger("broker.webhooks")

RETRY_DELAYS_S = (1.0, 5.0, 30.0)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The value of X-Broker-Signature for `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class TeamWebhooks:
    """A job observer that delivers each finished job to its webhook URL."""

    def __init__(
        self, session: aiohttp.ClientSession, secret: str | None, sleep: Sleep = asyncio.sleep
    ) -> None:
        self._session, self._secret, self._sleep = session, secret, sleep
        self._pending: set[asyncio.Task[None]] = set()

    def job_changed(self, before: JobRecord | None, after: JobRecord) -> None:
        ended = after.status.terminal and (before is None or not before.status.terminal)
        if ended and after.job.request.webhook_url:
            task = asyncio.get_running_loop().create_task(self._deliver(after))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def close(self) -> None:
        """Stop deliveries still waiting to retry."""
        for task in self._pending:
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)

    async def _deliver(self, record: JobRecord) -> None:
        url = record.job.request.webhook_url
        assert url is not None
        body = json.dumps(
            {"event": f"job.{record.status.value}", "job": record.job.model_dump(mode="json")}
        ).encode()
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS_S)):
            await self._sleep(delay)
            timestamp = int(time.time())
            headers = {"Content-Type": "application/json", "X-Broker-Timestamp": str(timestamp)}
            if self._secret:
                headers["X-Broker-Signature"] = sign(self._secret, timestamp, body)
            try:
                async with self._session.post(
                    url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
                ) as r:
                    if r.status < 300:
                        log.info("webhook_delivered", job_id=record.id, status=r.status, attempt=attempt + 1)
                        return
                    log.warning("webhook_refused", job_id=record.id, status=r.status, attempt=attempt + 1)
                    if 400 <= r.status < 500 and r.status not in (408, 429):
                        return  # the receiver says the request itself is wrong: retrying won't help
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("webhook_failed", job_id=record.id, error=type(exc).__name__, attempt=attempt + 1)
        log.error("webhook_abandoned", job_id=record.id)
