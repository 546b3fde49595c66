"""The provider error hierarchy. Adapters classify failures by status code and provider error code,
never by message text, and the router decides from the class alone:

    BrokerError
     └── ProviderError                 anything a provider did wrong or refused
          ├── RateLimited              429 / over quota; retry after `retry_after_s`; fall back
          ├── ProviderUnavailable      5xx, timeouts, dropped connections; retry, then fall back
          ├── Rejected                 the provider refused this input (an invalid image, an asset); stop
          │    ├── RequestInvalid      400/422 on the broker's own request, no content code: the catalog
          │    │                       or the adapter is wrong for this route; the next route may serve
          │    ├── GenerationFailed    a failed task explained in words only (PixelAPI documents no
          │    │                       codes: a safety block or a broken render); another provider may serve
          │    └── ContentRejected     moderation / SAFETY.*; the same input fails everywhere; stop
          ├── AuthFailed               401/403 on our key; fall back (the operator must fix the key)
          ├── InsufficientFunds        402 / out of credits; fall back
          ├── SubmissionUncertain      a submit whose answer never arrived; never resubmitted blindly
          └── OutputInvalid            the output could not be fetched as a bounded, non-empty file, or is
                                       not a decodable video (raised by the download and the artifact store)

What the job does next is `adapters.failures.classify`'s table, by error code. The whole tree, the
broker's own errors included, is drawn in `broker/errors.py`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from broker.schema import BrokerError, ErrorCode


class ProviderError(BrokerError):
    """A failure at a provider. `fallback` says whether another route could fix it."""

    code: ClassVar[ErrorCode] = ErrorCode.PROVIDER_ERROR
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

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after_s = retry_after_s


class ProviderUnavailable(ProviderError):
    code = ErrorCode.PROVIDER_UNAVAILABLE


class Rejected(ProviderError):
    code = ErrorCode.REJECTED
    fallback = False


class RequestInvalid(Rejected):
    """The provider refused the request the broker built (validation, not content): a route defect."""

    code = ErrorCode.REQUEST_INVALID
    fallback = True


class GenerationFailed(Rejected):
    """The task failed and the provider says why only in words: possibly its own content filter."""

    code = ErrorCode.GENERATION_FAILED
    fallback = True


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


class OutputInvalid(ProviderError):
    """The provider's output could not be downloaded as a bounded, non-empty file, or is no video."""

    code = ErrorCode.OUTPUT_INVALID
