"""The scaffolding every HTTP provider adapter shares, so that each keeps only its protocol.

`HttpAdapter` holds the app's session, the provider's base URL and request timeout; it sends each
request once with the provider's auth headers (`Auth`: a bearer token, fal's `Key`, an `X-API-Key`),
turns transport failures into the error tree (`adapters.http.send`), an error answer into the class
its provider code or HTTP status means (`ErrorCodes`, with `Retry-After` on a 429), and a success
into its JSON object, a non-JSON body being a lost answer. It reads a new task's id (none: the
submit is uncertain) and a webhook's (none: refused), streams outputs to a file and refuses
webhooks where the provider sends none. It never waits and never repeats a request: a refused submit
is sent again by the broker, as a due time of the job, when `spec.submit_retry` says so.

A subclass declares `provider`, `spec`, `auth`, its `codes` and how its error body reads
(`error_fields`), then writes submit, status, cancel and (where its spec says it sends webhooks)
`parse_webhook`: paths, bodies, states and costs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

from adapters.base import AdapterContext, TaskHandle, TaskStatus, WebhookEvent
from adapters.errors import (
    ContentRejected,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    Rejected,
    SubmissionUncertain,
)
from adapters.http import (
    REQUEST_TIMEOUT_S,
    Reply,
    download_output,
    json_answer,
    retry_after_seconds,
    send,
    status_error,
)
from adapters.spec import ProviderSpec, Webhooks


@dataclass(frozen=True, slots=True)
class Auth:
    """How the API key travels: `header: scheme key` (no scheme: the bare key)."""

    header: str = "Authorization"
    scheme: str | None = "Bearer"

    def headers(self, api_key: str | None) -> dict[str, str]:
        key = api_key or ""
        return {self.header: f"{self.scheme} {key}" if self.scheme else key}


BEARER = Auth()


@dataclass(frozen=True, slots=True)
class ErrorCodes:
    """A provider's error codes in the error tree; what its code leaves open, the HTTP status decides.

    `by_code` is matched exactly, then `prefixes` in order. A 429 is `RateLimited` whatever the code
    says, unless the code's class is one of `over_429` (fal's content refusals; every PixelAPI code).
    """

    by_code: Mapping[str, type[ProviderError]] = field(default_factory=dict)
    prefixes: tuple[tuple[str, type[ProviderError]], ...] = ()
    over_429: tuple[type[ProviderError], ...] = ()

    def lookup(self, code: str | None) -> type[ProviderError] | None:
        if not code:
            return None
        found = self.by_code.get(code)
        return found or next((cls for prefix, cls in self.prefixes if code.startswith(prefix)), None)

    def error(
        self,
        provider: str,
        status: int | None,
        code: str | None,
        message: str,
        retry_after_s: float | None = None,
        details: Any = None,
    ) -> ProviderError:
        """The error for an answer (`status` set) or a failed task (`status` None)."""
        common: dict[str, Any] = {
            "provider": provider,
            "provider_code": code,
            "status": status,
            "details": details,
        }
        found = self.lookup(code)
        if found is RateLimited or (status == 429 and not (found and issubclass(found, self.over_429))):
            return RateLimited(message, retry_after_s=retry_after_s, **common)
        if found is not None:
            return found(message, **common)
        if status is not None:
            return status_error(
                provider, status, message, provider_code=code, retry_after_s=retry_after_s, details=details
            )
        return ProviderError(message, **common)


STATUS_ONLY = ErrorCodes()
# Codes the seed providers (muvi, doitong) spell alike: content refused, or a render that broke.
SEED_CODES: Mapping[str, type[ProviderError]] = {
    "CONTENT_POLICY_VIOLATION": ContentRejected,
    "CONTENT_MODERATED": ContentRejected,
    "GENERATION_FAILED": ProviderUnavailable,
}
SAFETY_PREFIX = (("SAFETY", ContentRejected),)  # SAFETY*: the same input fails everywhere


def signature_matches(secret: str, message: bytes, signature: str) -> bool:
    """Whether `signature` is `sha256=<hex HMAC-SHA256 of message>` under `secret` (constant time)."""
    expected = "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


class HttpAdapter:
    """An adapter over the app's shared session that sends each request once."""

    provider: str
    spec: ProviderSpec
    auth: ClassVar[Auth] = BEARER
    codes: ClassVar[ErrorCodes] = STATUS_ONLY
    no_message: ClassVar[str] = "no message"  # what an error answer without one says

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse an adapter whose spec promises what its code does not do."""
        super().__init_subclass__(**kwargs)
        spec = cls.__dict__.get("spec")
        if spec is None:
            return
        if spec.cancel.stops and "cancel" not in cls.__dict__:
            raise TypeError(f"{cls.__name__}: its spec says a cancel stops tasks, but it has no cancel()")
        if spec.webhooks is not Webhooks.NONE and "parse_webhook" not in cls.__dict__:
            raise TypeError(f"{cls.__name__}: its spec says it sends webhooks, but it parses none")

    def __init__(self, ctx: AdapterContext, *, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self._ctx = ctx
        self._base = ctx.base_url.rstrip("/")
        self._timeout_s = timeout_s

    @classmethod
    def from_context(cls, ctx: AdapterContext) -> Self:
        """The adapter the app builds: its request timeout is `providers.<name>.timeout_s`."""
        return cls(ctx, timeout_s=ctx.timeout_s)

    def headers(self) -> dict[str, str]:
        """Every request's headers: the key as the provider takes it (subclasses add their own)."""
        return self.auth.headers(self._ctx.api_key)

    async def request(
        self,
        method: str,
        url: str,
        *,
        submit: bool = False,
        json_body: Any = None,
        data: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """Send once. A lost answer is `SubmissionUncertain` for a submit, else `ProviderUnavailable`."""
        return await send(
            self._ctx.session,
            method,
            url,
            provider=self.provider,
            uncertain_if_lost=submit,
            timeout_s=self._timeout_s,
            headers={**self.headers(), **(headers or {})},
            json_body=json_body,
            data=data,
            params=params,
        )

    async def answer(self, method: str, url: str, *, submit: bool = False, **options: Any) -> dict[str, Any]:
        """Send once (`options` as `request` takes them) and return the answer's JSON object; an error
        answer is raised in the error tree."""
        reply = await self.request(method, url, submit=submit, **options)
        return json_answer(reply, self.reply_error, provider=self.provider, submit=submit)

    def error_fields(self, body: Mapping[str, Any]) -> tuple[str | None, str | None, Any]:
        """The provider's (code, message, details) in an error answer's JSON object."""
        return None, None, None

    def reply_error(self, reply: Reply) -> ProviderError:
        """The error an answer with an error status (or an error body) stands for."""
        code, message, details = self.error_fields(reply.json_object() or {})
        return self.codes.error(
            self.provider,
            reply.status,
            code,
            f"{self.provider} answered HTTP {reply.status}: {message or self.no_message}",
            retry_after_seconds(reply.headers.get("Retry-After")),
            details,
        )

    def created_id(self, answer: Mapping[str, Any], key: str) -> str:
        """The new task's id in a submit's answer. Without one the task may exist unseen, so the
        submit's outcome is unknown (`SubmissionUncertain`), not refused."""
        task_id = answer.get(key)
        if not isinstance(task_id, str) or not task_id:
            raise SubmissionUncertain(
                f"{self.provider} accepted the submit but its answer has no {key}", provider=self.provider
            )
        return task_id

    async def cancel_request(
        self,
        method: str,
        url: str,
        *,
        too_late: frozenset[int] = frozenset({404}),
        too_late_codes: frozenset[str] = frozenset(),
    ) -> bool:
        """Ask for a cancel: True when accepted, False when the task is past cancelling or unknown."""
        reply = await self.request(method, url)
        if reply.ok:
            return True
        error = self.reply_error(reply)
        if reply.status in too_late or error.provider_code in too_late_codes:
            return False
        raise error

    async def cancel(self, handle: TaskHandle) -> bool:
        """A provider that cannot cancel (its `spec.cancel` stops nothing) says so."""
        return False

    async def fetch_output(self, status: TaskStatus, dest: Path) -> None:
        """Stream the task's MP4 from its output URL to `dest` (signed or public: no auth header)."""
        await download_output(self._ctx.session, status, dest, provider=self.provider)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """A provider that sends no webhooks refuses anything claiming to be one."""
        raise Rejected(f"{self.provider} sends no webhooks", provider=self.provider)

    def webhook_secret(self) -> str:
        """The secret signed webhooks are checked with; without one, no webhook can be trusted."""
        secret = self._ctx.webhook_secret
        if not secret:
            raise Rejected(
                f"no {self.provider} webhook secret is configured, so no webhook can be trusted",
                provider=self.provider,
            )
        return secret

    def webhook_task_id(self, payload: Mapping[str, Any], key: str, statuses: Collection[str]) -> str:
        """The task id a (verified) webhook reports on; `Rejected` unless it has one and a status
        among the provider's `statuses`."""
        task_id = payload.get(key)
        if not isinstance(task_id, str) or payload.get("status") not in statuses:
            raise Rejected(f"{self.provider} webhook lacks {key} or a known status", provider=self.provider)
        return task_id

    def webhook_json(self, body: bytes) -> dict[str, Any]:
        """A webhook's body as a JSON object; `Rejected` otherwise."""
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise Rejected(f"{self.provider} webhook is not JSON", provider=self.provider) from exc
        if not isinstance(payload, dict):
            raise Rejected(f"{self.provider} webhook is not a JSON object", provider=self.provider)
        return payload
