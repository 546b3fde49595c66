"""Team webhooks: when a job ends, POST it to the job's `webhook_url`, signed.

Signature: `X-Broker-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>." + raw body>` with the secret in
`BROKER_WEBHOOK_SECRET`, and `X-Broker-Timestamp: <unix seconds>`, so a receiver can refuse replays.
Nothing is ever sent unsigned: without the secret the API refuses a `webhook_url` at submit.

A delivery goes only where the outbound policy lets it (`adapters.outbound`: checked after DNS and
again on connect), follows no redirect, and is retried with growing delays a bounded number of times.
Each try's outcome is written to the job's `webhook` field, so `GET /v1/jobs/{id}` shows the last one.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime

import aiohttp
import structlog

from adapters.base import Sleep
from adapters.outbound import OutboundPolicy, OutboundRefused
from broker.schema import BrokerError, DeliveryStatus, WebhookDelivery
from broker.store import JobRecord, Store

log = structlog.get_logger("broker.jobs.team_webhooks")

RETRY_DELAYS_S = (1.0, 5.0, 30.0, 120.0)
TIMEOUT_S = 10.0
NO_SECRET = "BROKER_WEBHOOK_SECRET is not set; the broker sends no unsigned webhooks"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The value of X-Broker-Signature for `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class _Refused(Exception):
    """A try that must not be repeated: the URL is refused, or the receiver rejected the request."""


class TeamWebhooks:
    """A job observer that delivers each finished job to its webhook URL."""

    def __init__(
        self,
        store: Store,
        secret: str | None,
        outbound: OutboundPolicy,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float],
    ) -> None:
        self._store, self._secret, self._outbound = store, secret, outbound
        self._sleep, self._clock = sleep, clock
        self._session: aiohttp.ClientSession | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def job_changed(self, before: JobRecord | None, after: JobRecord) -> None:
        ended = after.status.terminal and (before is None or not before.status.terminal)
        if ended and after.job.request.webhook_url:
            task = asyncio.get_running_loop().create_task(self.deliver(after))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def close(self) -> None:
        """Stop deliveries still waiting to retry."""
        for task in self._pending:
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def deliver(self, record: JobRecord) -> None:
        """Deliver a finished job to its webhook URL, retrying as need be; the outcome goes on the job."""
        url = record.job.request.webhook_url
        assert url is not None
        if not self._secret:
            await self._record(record, DeliveryStatus.FAILED, 0, None, NO_SECRET)
            log.error("webhook_not_sent", job_id=record.id, reason=NO_SECRET)
            return
        body = json.dumps(
            {"event": f"job.{record.status.value}", "job": record.job.model_dump(mode="json")}
        ).encode()
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS_S), start=1):
            await self._sleep(delay)
            last = attempt > len(RETRY_DELAYS_S)
            try:
                http_status = await self._post(url, body, self._secret)
            except _Refused as exc:
                await self._record(record, DeliveryStatus.FAILED, attempt, None, str(exc))
                log.warning("webhook_refused", job_id=record.id, error=str(exc), attempt=attempt)
                return
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
                status = DeliveryStatus.FAILED if last else DeliveryStatus.PENDING
                await self._record(record, status, attempt, None, error)
                log.warning("webhook_failed", job_id=record.id, error=error, attempt=attempt)
                continue
            if http_status < 300:
                await self._record(record, DeliveryStatus.DELIVERED, attempt, http_status, None)
                log.info("webhook_delivered", job_id=record.id, status=http_status, attempt=attempt)
                return
            # 4xx other than 408/429: the receiver says the request itself is wrong; retrying won't help.
            final = last or (400 <= http_status < 500 and http_status not in (408, 429))
            status = DeliveryStatus.FAILED if final else DeliveryStatus.PENDING
            await self._record(record, status, attempt, http_status, f"the receiver answered {http_status}")
            log.warning("webhook_not_accepted", job_id=record.id, status=http_status, attempt=attempt)
            if final:
                return
        log.error("webhook_abandoned", job_id=record.id)

    async def _post(self, url: str, body: bytes, secret: str) -> int:
        """One signed POST; the receiver's status. `_Refused` if the URL may not be reached."""
        try:
            await self._outbound.check(url)
        except OutboundRefused as exc:
            raise _Refused(f"webhook_url {exc}") from None
        if self._session is None:
            self._session = self._outbound.open_session()
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            "X-Broker-Timestamp": str(timestamp),
            "X-Broker-Signature": sign(secret, timestamp, body),
        }
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
        async with self._session.post(
            url, data=body, headers=headers, timeout=timeout, allow_redirects=False
        ) as response:
            if 300 <= response.status < 400:
                raise _Refused(f"the receiver redirected ({response.status}); webhooks follow no redirects")
            return response.status

    async def _record(
        self,
        record: JobRecord,
        status: DeliveryStatus,
        attempts: int,
        http_status: int | None,
        error: str | None,
    ) -> None:
        """Write the delivery's state onto the job (a few tries against concurrent writers)."""
        delivery = WebhookDelivery(
            status=status,
            attempts=attempts,
            http_status=http_status,
            error=error,
            last_attempt_at=datetime.fromtimestamp(self._clock(), UTC) if attempts else None,
        )
        try:
            for _ in range(5):
                current = await self._store.get_job(record.id)
                if current is None:
                    return
                job = current.job.model_copy(update={"webhook": delivery})
                if await self._store.replace_job(current.model_copy(update={"job": job})) is not None:
                    return
        except BrokerError as exc:  # the store is down: the delivery itself is unaffected
            log.warning("webhook_status_not_saved", job_id=record.id, error=exc.message)
