"""Shared HTTP for adapters: one request helper over the app's session, status-code classes, retries.

Every adapter sends through `send()`, which turns transport failures into the error hierarchy: a
request that never left (connection refused) is `ProviderUnavailable`; one that may have reached the
provider but whose answer was lost is `SubmissionUncertain` when the caller says so (a submit), else
`ProviderUnavailable` (a status poll, safe to repeat). Each adapter then classifies error answers in
one function of its own, falling back on `status_error()` for what its error codes do not decide.
`RetryPolicy` says when a call that failed on a rate limit or unavailability may be tried again,
honouring `Retry-After`, bounded in tries and time: the caller waits, as a due time, never in a request.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp

from adapters.base import TaskStatus
from adapters.errors import (
    AuthFailed,
    InsufficientFunds,
    OutputInvalid,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    Rejected,
    RequestInvalid,
    SubmissionUncertain,
)

MAX_REPLY_BYTES = 4 * 1024 * 1024  # JSON answers; outputs are streamed by `download()`
DOWNLOAD_CHUNK_BYTES = 256 * 1024
REQUEST_TIMEOUT_S = 30.0
OUTPUT_MAX_BYTES = 512 * 1024 * 1024
OUTPUT_TIMEOUT_S = 300.0


@dataclass(frozen=True, slots=True)
class Reply:
    """A provider's answer, read in full (bounded by `MAX_REPLY_BYTES`)."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body as JSON; ValueError if it is not JSON."""
        return json.loads(self.body)

    def json_object(self) -> dict[str, Any] | None:
        """The body as a JSON object, or None if it is not one."""
        try:
            value = self.json()
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Read a `Retry-After` header (delta-seconds or an HTTP date) as seconds from now."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def status_error(
    provider: str,
    status: int,
    message: str,
    *,
    provider_code: str | None = None,
    retry_after_s: float | None = None,
    details: Any = None,
) -> ProviderError:
    """The error class an HTTP status means when the provider's own code does not say more."""
    common: dict[str, Any] = {
        "provider": provider,
        "provider_code": provider_code,
        "status": status,
        "details": details,
    }
    if status == 429:
        return RateLimited(message, retry_after_s=retry_after_s, **common)
    if status in (401, 403):
        return AuthFailed(message, **common)
    if status == 402:
        return InsufficientFunds(message, **common)
    if status == 408 or status >= 500:
        return ProviderUnavailable(message, **common)
    if status in (400, 413, 415, 422):
        # The provider refused the request the broker built; a content refusal has a code of its own,
        # which the adapter maps before it falls back on the status.
        return RequestInvalid(message, **common)
    if status == 409:
        return Rejected(message, **common)
    return ProviderError(message, **common)


async def send(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    provider: str,
    uncertain_if_lost: bool,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
    json_body: Any = None,
    data: Any = None,
    params: Mapping[str, str] | None = None,
) -> Reply:
    """Send one request and read its answer; transport failures become provider errors."""
    try:
        async with session.request(
            method,
            url,
            headers=dict(headers or {}),
            json=json_body,
            data=data,
            params=params,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            allow_redirects=False,
        ) as response:
            body = await _read_capped(response, MAX_REPLY_BYTES)
            return Reply(response.status, response.headers, body)
    except aiohttp.InvalidURL as exc:
        raise ProviderError(f"{provider} URL is invalid: check its base_url", provider=provider) from exc
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        # The connection never opened, so the request never reached the provider.
        raise ProviderUnavailable(
            f"cannot connect to {provider}", provider=provider, details=type(exc).__name__
        ) from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        error_class = SubmissionUncertain if uncertain_if_lost else ProviderUnavailable
        raise error_class(f"{provider} did not answer ({type(exc).__name__})", provider=provider) from exc


def json_answer(
    reply: Reply, error: Callable[[Reply], ProviderError], *, provider: str, submit: bool
) -> dict[str, Any]:
    """The JSON object of a successful answer; `error(reply)` for an error status.

    A success whose body is not a JSON object is a lost answer: `SubmissionUncertain` for a submit
    (the provider may have started the task), `ProviderUnavailable` otherwise.
    """
    if not reply.ok:
        raise error(reply)
    body = reply.json_object()
    if body is None:
        error_class = SubmissionUncertain if submit else ProviderUnavailable
        raise error_class(
            f"{provider} answered HTTP {reply.status} with a malformed body",
            provider=provider,
            status=reply.status,
        )
    return body


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(DOWNLOAD_CHUNK_BYTES):
        size += len(chunk)
        if size > limit:
            raise aiohttp.ClientPayloadError(f"answer larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def download(
    session: aiohttp.ClientSession,
    url: str,
    dest: Path,
    *,
    provider: str,
    max_bytes: int,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
) -> int:
    """Stream `url` to the file `dest`, refusing more than `max_bytes`; returns its size."""
    part = dest.with_name(dest.name + ".part")
    size = 0
    try:
        async with session.get(
            url, headers=dict(headers or {}), timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as response:
            if not response.ok:
                raise status_error(provider, response.status, f"{provider} output download failed")
            with part.open("wb") as handle:
                async for chunk in response.content.iter_chunked(DOWNLOAD_CHUNK_BYTES):
                    size += len(chunk)
                    if size > max_bytes:
                        raise OutputInvalid(
                            f"{provider} output is larger than {max_bytes} bytes", provider=provider
                        )
                    handle.write(chunk)
    except (aiohttp.ClientError, TimeoutError) as exc:
        part.unlink(missing_ok=True)
        raise ProviderUnavailable(f"{provider} output download broke off", provider=provider) from exc
    except ProviderError:
        part.unlink(missing_ok=True)
        raise
    if size == 0:
        part.unlink(missing_ok=True)
        raise OutputInvalid(f"{provider} output is empty", provider=provider)
    part.replace(dest)
    return size


async def download_output(
    session: aiohttp.ClientSession, status: TaskStatus, dest: Path, *, provider: str
) -> None:
    """Download a finished task's MP4 from its output URL (signed or public: no auth header sent)."""
    if status.output_url is None:
        raise ProviderError(f"{provider} task has no output URL", provider=provider)
    await download(
        session,
        status.output_url,
        dest,
        provider=provider,
        max_bytes=OUTPUT_MAX_BYTES,
        timeout_s=OUTPUT_TIMEOUT_S,
    )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long a call that failed in a way worth repeating is tried again.

    The policy only decides; nobody sleeps on it inside a request. The broker turns each delay into
    the job's next due time (`broker.jobs.submit`), so a 429 with `Retry-After: 30` holds no worker,
    no lease and no task while it waits.
    """

    attempts: int = 3
    max_elapsed_s: float = 60.0
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0  # a longer Retry-After is not waited for: the error goes to the router
    retry_on: tuple[type[ProviderError], ...] = (RateLimited, ProviderUnavailable)

    def delay_before_next(self, tries: int, error: BaseException, elapsed_s: float) -> float | None:
        """Seconds to wait before try `tries + 1`, after try `tries` failed with `error` `elapsed_s`
        seconds after the first; None when the policy gives up (the router then falls back)."""
        if tries >= self.attempts or not isinstance(error, self.retry_on):
            return None
        if isinstance(error, RateLimited) and error.retry_after_s is not None:
            delay = error.retry_after_s
        else:
            delay = min(self.base_delay_s * 2 ** (tries - 1), self.max_delay_s)
        if delay > self.max_delay_s or elapsed_s + delay > self.max_elapsed_s:
            return None
        return float(delay)


NO_RETRY = RetryPolicy(attempts=1)
