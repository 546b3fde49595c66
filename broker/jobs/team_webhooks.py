"""Team webhooks: when a job ends (or a reconciled charge corrects its cost), POST it to the job's
`webhook_url`, signed, from a durable outbox that any replica sends from.

The outbox is a store index of deliveries, "<job id>|<event>" by due time (`Store.schedule_webhook`).
The step that ends a job puts its delivery there before the job's end is written (`enqueue`), so no
crash loses it; a sender that finds the job not yet ended (the end is being written, or a crash
came between the two writes and the job will end later) looks again shortly. Every replica's
`TeamWebhooks` takes due deliveries under a hold (`claim_webhooks`), so two replicas never send one
at once, and a replica killed mid-send lets the hold lapse for another to send it. A restart or a
deploy loses none; a receiver may see one twice (after a kill) and de-duplicates by its id.

Each delivery is signed in the Standard Webhooks form: `webhook-id` (stable for the event: the same
on every retry), `webhook-timestamp` (unix seconds) and `webhook-signature: v1,<base64 HMAC-SHA256
of "<id>.<timestamp>.<body>">`, keyed by `BROKER_WEBHOOK_SECRET` (a `whsec_<base64>` secret is
decoded as the spec says; any other is used as its UTF-8 bytes). The body is `{"type": "job.<status>"
or "job.cost_corrected", "timestamp", "data": <the job>}`. The older `X-Broker-Signature: sha256=<hex
HMAC of "<timestamp>." + body>` and `X-Broker-Timestamp` headers are sent too. Nothing is ever sent
unsigned: without the secret the API refuses a `webhook_url` at submit.

A delivery goes only where the outbound policy lets it (`adapters.outbound`: checked after DNS and
again on connect), follows no redirect, and is retried on `RETRY_DELAYS_S` (as due times in the
outbox, never a sleep). Each try's outcome is written to the job's `webhook` field.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime

import aiohttp
import structlog

from adapters.outbound import OutboundPolicy, OutboundRefused
from broker.schema import BrokerError, DeliveryStatus, WebhookDelivery
from broker.store import JobRecord, Store

log = structlog.get_logger("broker.jobs.team_webhooks")

RETRY_DELAYS_S = (1.0, 5.0, 30.0, 120.0, 600.0)
TIMEOUT_S = 10.0
HOLD_S = 30.0  # a taken delivery is due again after this if its sender died (> TIMEOUT_S)
RECHECK_S = 5.0  # a delivery found before its job's end was written is looked at again after this
EVERY_S = 1.0  # how often a sender looks for due deliveries when nothing wakes it
SENDS_AT_ONCE = 16
ENDED, COST_CORRECTED = "ended", "cost_corrected"
NO_SECRET = "BROKER_WEBHOOK_SECRET is not set; the broker sends no unsigned webhooks"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The value of X-Broker-Signature for `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def standard_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The value of `webhook-signature` (Standard Webhooks, v1) for `body`."""
    key = secret.encode()
    if secret.startswith("whsec_"):
        with contextlib.suppress(binascii.Error, ValueError):
            key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


async def enqueue(store: Store, record: JobRecord, event: str = ENDED) -> None:
    """Put the job's delivery for `event` in the outbox, due at once (before the event is written)."""
    if record.job.request.webhook_url:
        await store.schedule_webhook(f"{record.id}|{event}", 0.0)


class _Refused(Exception):
    """A try that must not be repeated: the URL is refused, or the receiver rejected the request."""


class TeamWebhooks:
    """Sends the outbox's due deliveries; every replica runs one."""

    def __init__(
        self,
        store: Store,
        secret: str | None,
        outbound: OutboundPolicy,
        *,
        clock: Callable[[], float],
        every_s: float = EVERY_S,
    ) -> None:
        self._store, self._secret, self._outbound = store, secret, outbound
        self._clock, self._every_s = clock, every_s
        self._session: aiohttp.ClientSession | None = None
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._gate = asyncio.Semaphore(SENDS_AT_ONCE)

    def job_changed(self, before: JobRecord | None, after: JobRecord) -> None:
        """A job ended here: send its delivery now rather than at the next look."""
        if after.status.terminal and after.job.request.webhook_url:
            self._wakeup.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="team-webhooks")

    async def close(self) -> None:
        """Stop sending; deliveries not yet sent stay in the outbox for any replica."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.send_due()
            except BrokerError as exc:  # the store is down: the next look
                log.warning("webhooks_not_read", code=exc.code.value, error=exc.message)
            except Exception:  # a bug must not end deliveries for good; it is logged
                log.exception("webhooks_crashed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._every_s):
                    await self._wakeup.wait()
            self._wakeup.clear()

    async def send_due(self) -> int:
        """Send every delivery due now; returns how many were taken."""
        due = await self._store.claim_webhooks(self._clock(), HOLD_S)
        await asyncio.gather(*(self._guarded(delivery, tries) for delivery, tries in due))
        return len(due)

    async def _guarded(self, delivery: str, tries: int) -> None:
        async with self._gate:
            try:
                await self._send(delivery, tries)
            except BrokerError as exc:  # the store failed: the hold lapses and the delivery is due again
                log.warning("webhook_not_recorded", delivery=delivery, error=exc.message)

    async def _send(self, delivery: str, tries: int) -> None:
        job_id, _, event = delivery.partition("|")
        record = await self._store.get_job(job_id)
        url = None if record is None else record.job.request.webhook_url
        if record is None or url is None:
            await self._store.drop_webhook(delivery)
            return
        if event == ENDED and not record.status.terminal:
            await self._store.schedule_webhook(delivery, self._clock() + RECHECK_S, tries)
            return
        if not self._secret:
            await self._record(record, DeliveryStatus.FAILED, tries, None, NO_SECRET)
            await self._store.drop_webhook(delivery)
            log.error("webhook_not_sent", job_id=job_id, reason=NO_SECRET)
            return
        attempt = tries + 1
        message_id, body = self._message(record, event)
        try:
            http_status = await self._post(url, message_id, body, self._secret)
        except _Refused as exc:
            await self._ended(delivery, record, DeliveryStatus.FAILED, attempt, None, str(exc))
            log.warning("webhook_refused", job_id=job_id, error=str(exc), attempt=attempt)
            return
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            await self._failed(delivery, record, attempt, None, f"{type(exc).__name__}: {exc}"[:300])
            return
        if http_status < 300:
            await self._ended(delivery, record, DeliveryStatus.DELIVERED, attempt, http_status, None)
            log.info("webhook_delivered", job_id=job_id, status=http_status, attempt=attempt, id=message_id)
            return
        # 4xx other than 408/429: the receiver says the request itself is wrong; retrying won't help.
        if 400 <= http_status < 500 and http_status not in (408, 429):
            error = f"the receiver answered {http_status}"
            await self._ended(delivery, record, DeliveryStatus.FAILED, attempt, http_status, error)
            return
        await self._failed(delivery, record, attempt, http_status, f"the receiver answered {http_status}")

    def _message(self, record: JobRecord, event: str) -> tuple[str, bytes]:
        """The delivery's id (the same on every retry of the event) and its body."""
        if event == COST_CORRECTED:
            kind = "job.cost_corrected"
            message_id = f"msg_{record.id}_cost_{record.job.cost_usd.micros}"
        else:
            kind = f"job.{record.status.value}"
            message_id = f"msg_{record.id}_{record.status.value}"
        body = {
            "type": kind,
            "timestamp": datetime.fromtimestamp(self._clock(), UTC).isoformat(),
            "data": record.job.model_dump(mode="json"),
        }
        return message_id, json.dumps(body).encode()

    async def _failed(
        self, delivery: str, record: JobRecord, attempt: int, http_status: int | None, error: str
    ) -> None:
        """A try that may work later: due again after the next delay, or given up after the last."""
        log.warning("webhook_failed", job_id=record.id, error=error, attempt=attempt)
        if attempt > len(RETRY_DELAYS_S):
            await self._ended(delivery, record, DeliveryStatus.FAILED, attempt, http_status, error)
            log.error("webhook_abandoned", job_id=record.id)
            return
        await self._record(record, DeliveryStatus.PENDING, attempt, http_status, error)
        await self._store.schedule_webhook(delivery, self._clock() + RETRY_DELAYS_S[attempt - 1], attempt)

    async def _ended(
        self,
        delivery: str,
        record: JobRecord,
        status: DeliveryStatus,
        attempt: int,
        http_status: int | None,
        error: str | None,
    ) -> None:
        await self._record(record, status, attempt, http_status, error)
        await self._store.drop_webhook(delivery)

    async def _post(self, url: str, message_id: str, body: bytes, secret: str) -> int:
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
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": standard_signature(secret, message_id, timestamp, body),
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
        for _ in range(5):
            current = await self._store.get_job(record.id)
            if current is None:
                return
            job = current.job.model_copy(update={"webhook": delivery})
            if await self._store.replace_job(current.model_copy(update={"job": job})) is not None:
                return
