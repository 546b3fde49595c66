"""Hosted inputs: a job's uploaded or `data:` image served to providers that take only URLs (muvi,
doitong) at `GET /v1/inputs/{job_id}?expires=&sig=` under `BROKER_PUBLIC_URL`.

The URL names the job, not the upload: uploads are stored by content and shared between jobs, while
a job's input is released when the job ends (the handler then answers 404). `sig` is the hex
HMAC-SHA256 of `"{job_id}\\n{expires}"` under `BROKER_INPUT_SIGNING_SECRET`, one secret for every
replica (a per-process secret would fail on any other replica), so hosting is off until it is set.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass, replace
from urllib.parse import quote, urlencode

from adapters.base import ImageAcceptance, ImageInput
from broker.settings import Settings

# Past the provider's own deadline: a provider may fetch the image late in a slow queue.
EXPIRY_MARGIN_S = 300.0
HOSTING_OFF = "set BROKER_PUBLIC_URL and BROKER_INPUT_SIGNING_SECRET for the broker to host it"


@dataclass(frozen=True, slots=True)
class InputHosting:
    """Where and under which secret the broker hosts inputs."""

    public_url: str
    secret: str

    @classmethod
    def from_settings(cls, settings: Settings) -> InputHosting | None:
        """The hosting the settings allow, or None when the public URL or the secret is missing."""
        if not settings.public_url or settings.input_signing_secret is None:
            return None
        return cls(settings.public_url, settings.input_signing_secret.get_secret_value())


def _signature(input_id: str, expires_at: int, secret: str) -> str:
    message = f"{input_id}\n{expires_at}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign_input_url(public_url: str, input_id: str, expires_at: int, secret: str) -> str:
    """The URL a provider fetches the input from, valid until `expires_at` (Unix seconds)."""
    query = urlencode({"expires": expires_at, "sig": _signature(input_id, expires_at, secret)})
    return f"{public_url.rstrip('/')}/v1/inputs/{quote(input_id, safe='')}?{query}"


def verify(input_id: str, expires: str | None, sig: str | None, secret: str, now: float) -> str | None:
    """Why the signed URL is refused (bad or missing signature, expired), or None if it holds."""
    # ASCII digits, and few: isdigit() alone admits "²", and int() refuses 4,300+ digits.
    if not expires or not sig or not (expires.isascii() and expires.isdigit() and len(expires) <= 18):
        return "the input URL needs expires and sig"
    expires_at = int(expires)
    if not hmac.compare_digest(_signature(input_id, expires_at, secret), sig):
        return "the input URL's signature does not match"
    if expires_at < now:
        return "the input URL has expired"
    return None


def hosted_image(
    image: ImageInput,
    acceptance: ImageAcceptance,
    *,
    job_id: str,
    hosting: InputHosting | None,
    now: float,
    deadline_s: float,
) -> ImageInput:
    """The image as a URL-only provider can take it: given a signed broker URL when it has bytes but
    no URL and the provider takes no bytes; unchanged otherwise (and where hosting is off)."""
    takes_bytes = acceptance.data_uri_max_bytes is not None or acceptance.file_max_bytes is not None
    if hosting is None or image.url is not None or image.data is None or takes_bytes or not acceptance.url:
        return image
    expires_at = math.ceil(now + deadline_s + EXPIRY_MARGIN_S)
    return replace(image, url=sign_input_url(hosting.public_url, job_id, expires_at, hosting.secret))
