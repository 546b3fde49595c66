"""What a failed attempt means for the rest of its job: leave the provider, leave the route, or stop.

Pure functions over error codes, so the same rule reads a live `ProviderError` and an attempt's
stored `JobError` alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from adapters.errors import ProviderError
from broker.schema import Attempt, AttemptStatus, ErrorCode


class Scope(StrEnum):
    """How far a failure reaches within one job."""

    PROVIDER = "provider"  # leave every route of the provider for the rest of the job
    ROUTE = "route"  # leave this route; the next one, even at the same provider, may serve
    JOB = "job"  # stop the job: no other route would do better


class Health(StrEnum):
    """What the failure counts against."""

    PROVIDER = "provider"  # the provider's breaker
    ROUTE = "route"  # the route alone (the provider answered properly)
    NONE = "none"  # the input's doing, not the provider's


@dataclass(frozen=True, slots=True)
class Failure:
    """The rule for one error code."""

    scope: Scope
    health: Health
    defect: bool = False  # log as a catalog or adapter defect (the broker built a request it should not)

    @property
    def falls_back(self) -> bool:
        """Whether another route should be tried."""
        return self.scope is not Scope.JOB


_RULES: dict[ErrorCode, Failure] = {
    ErrorCode.RATE_LIMITED: Failure(Scope.PROVIDER, Health.PROVIDER),
    ErrorCode.PROVIDER_UNAVAILABLE: Failure(Scope.PROVIDER, Health.PROVIDER),
    ErrorCode.AUTH_FAILED: Failure(Scope.PROVIDER, Health.PROVIDER),
    ErrorCode.INSUFFICIENT_FUNDS: Failure(Scope.PROVIDER, Health.PROVIDER),
    ErrorCode.REQUEST_INVALID: Failure(Scope.ROUTE, Health.ROUTE, defect=True),
    ErrorCode.GENERATION_FAILED: Failure(Scope.PROVIDER, Health.NONE),
    ErrorCode.CONTENT_REJECTED: Failure(Scope.JOB, Health.NONE),
    ErrorCode.REJECTED: Failure(Scope.JOB, Health.NONE),
    ErrorCode.SUBMISSION_UNCERTAIN: Failure(Scope.JOB, Health.NONE),
}
_OTHER = Failure(Scope.ROUTE, Health.PROVIDER)


def classify(error: ProviderError | ErrorCode) -> Failure:
    """The rule for a failed attempt, by its error code:

    | code (class)                                 | scope    | health   | why                         |
    |----------------------------------------------|----------|----------|-----------------------------|
    | rate_limited (RateLimited, after retries)    | provider | provider | its limits hold for every   |
    | provider_unavailable (5xx, timeouts, INTERNAL)| provider | provider | route of the provider       |
    | auth_failed (401/403 on our key)             | provider | provider | one key per provider        |
    | insufficient_funds (402, out of credits)     | provider | provider | one balance per provider    |
    | request_invalid (400/422 on our own request, | route    | route    | the catalog or the adapter  |
    |   no content code; logged as a defect)       |          |          | is wrong for this route     |
    | generation_failed (failed, reason in words   | provider | none     | maybe the provider's filter;|
    |   only: PixelAPI)                            |          |          | the next provider's decides |
    | content_rejected (moderation, SAFETY.*)      | job      | none     | fails everywhere            |
    | rejected (the input itself: an image, asset) | job      | none     | fails everywhere            |
    | submission_uncertain                         | job      | none     | never paid for twice        |
    | anything else (provider_error,               | route    | provider | the next route may serve    |
    |   output_invalid, timed_out)                 |          |          |                             |

    An open circuit is no error here: the quote leaves such a provider out of every route it offers.
    """
    code = error.code if isinstance(error, ProviderError) else error
    return _RULES.get(code, _OTHER)


def providers_to_exclude(attempts: Iterable[Attempt]) -> set[str]:
    """The providers a job must not go back to: those with a failed attempt of provider scope."""
    return {
        attempt.provider
        for attempt in attempts
        if attempt.status is AttemptStatus.FAILED
        and attempt.error is not None
        and classify(attempt.error.code).scope is Scope.PROVIDER
    }
