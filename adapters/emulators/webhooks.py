"""Webhook delivery and the one definition of what each provider signs.

Signatures (HMAC-SHA256 with the provider's webhook secret, lower-case hex digest):

    muvi     X-PixelByte-Timestamp: <unix seconds, integer>
             X-PixelByte-Signature: sha256=HMAC(secret, "<timestamp>." + raw body)
             [docs name both headers; the signed message is not public, so we define it as above,
             binding the timestamp to the body so a captured delivery cannot be replayed later]
    doitong  X-Doitong-Signature: sha256=HMAC(secret, raw body)   [seed 004]
    fal      unsigned here (fal signs with ED25519 keys from its JWKS, which an emulator cannot mint)
    runway, pixelapi: no webhooks in their protocols.

The raw body is the exact bytes POSTed (UTF-8 JSON); verify over those bytes, never a re-encoding.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

import aiohttp

MUVI_TIMESTAMP_HEADER = "X-PixelByte-Timestamp"
MUVI_SIGNATURE_HEADER = "X-PixelByte-Signature"
DOITONG_SIGNATURE_HEADER = "X-Doitong-Signature"


def hmac_hex(secret: str, message: bytes) -> str:
    """Lower-case hex HMAC-SHA256 of `message` under `secret`."""
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def muvi_signature_headers(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The headers muvi sends with a webhook whose raw body is `body`."""
    signed = str(timestamp).encode() + b"." + body
    return {
        MUVI_TIMESTAMP_HEADER: str(timestamp),
        MUVI_SIGNATURE_HEADER: "sha256=" + hmac_hex(secret, signed),
    }


def doitong_signature_headers(secret: str, body: bytes) -> dict[str, str]:
    """The header doitong sends with a webhook whose raw body is `body`."""
    return {DOITONG_SIGNATURE_HEADER: "sha256=" + hmac_hex(secret, body)}


def encode_body(payload: Any) -> bytes:
    """The exact bytes a webhook POSTs (compact UTF-8 JSON); signatures cover these."""
    return json.dumps(payload, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One webhook POST the emulator made; `status` is None when it could not be delivered."""

    task_id: str
    url: str
    headers: dict[str, str]
    body: bytes
    status: int | None
    error: str | None = None

    @property
    def json(self) -> Any:
        return json.loads(self.body)


async def deliver(
    session: aiohttp.ClientSession, task_id: str, url: str, body: bytes, headers: dict[str, str]
) -> WebhookDelivery:
    """POST one webhook, once; the outcome is recorded, never raised."""
    all_headers = {"Content-Type": "application/json", **headers}
    try:
        async with session.post(url, data=body, headers=all_headers) as response:
            await response.read()
            return WebhookDelivery(task_id, url, all_headers, body, response.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return WebhookDelivery(task_id, url, all_headers, body, None, error=type(exc).__name__)
