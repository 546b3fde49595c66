"""The provider error hierarchy. Adapters classify failures by status code and provider error code,
never by message text, and the router decides from the class alone:

    BrokerError
     └── ProviderError                 anything a provider did wrong or refused
          ├── RateLimited              429 / over quota; retry after `retry_after_s`; fall back
          ├── ProviderUnavailable      5xx, timeouts, dropped connections; retry, then fall back
          ├── Rejected                 the provider refused this input (400/422); stop
          │    └── ContentRejected     moderation / SAFETY.*; the same input fails everywhere; stop
          ├── AuthFailed               401/403 on our key; fall back (the operator must fix the key)
          ├── InsufficientFunds        402 / out of credits; fall back
          └── SubmissionUncertain      a submit whose answer never arrived; never resubmitted blindly
"""

from __future__ import annotations

from typing import Any, ClassVar

from broker.schema import BrokerError, ErrorCode


class ProviderError(BrokerError):
    """A failure at a provider. `fallback` says whether another route could fix it."""

    code: ClassVar[ErrorCode] = ErrorCode.PROVIDER_ERROR
    http_status: ClassVar[int] = 502
    fallback: ClassVar[bool] = True

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        provider_code: str | None = None,
        status: int | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message, details=details)
        self.provider = provider
        self.provider_code = provider_code
        self.status = status


class RateLimited(ProviderError):
    code = ErrorCode.RATE_LIMITED
    http_status = 429

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after_s = retry_after_s


class ProviderUnavailable(ProviderError):
    code = ErrorCode.PROVIDER_UNAVAILABLE
    http_status = 503


class Rejected(ProviderError):
    code = ErrorCode.REJECTED
    http_status = 422
    fallback = False


class ContentRejected(Rejected):
    code = ErrorCode.CONTENT_REJECTED


class AuthFailed(ProviderError):
    code = ErrorCode.AUTH_FAILED


class InsufficientFunds(ProviderError):
    code = ErrorCode.INSUFFICIENT_FUNDS


class SubmissionUncertain(ProviderError):
    """The submit may have reached the provider: resolve by asking it, never by submitting again."""

    code = ErrorCode.SUBMISSION_UNCERTAIN
    fallback = False
