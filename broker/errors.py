"""The broker's error tree, drawn whole here; this module holds the errors the HTTP API raises.

Every error the broker raises on purpose is a `BrokerError` (`broker/schema.py`): its `code` is the
envelope's `error.code`. `broker/api/middleware.py` turns it into `{"error": {"code", "message",
"details"}}` with the status its table `STATUSES` maps the class to (the nearest ancestor it names):
statuses live there only. Anything else reaching the edge is a logged 500 `internal`. Code and
status of each class:

    BrokerError                           internal 500      broker/schema.py
     ├── InvalidRequest                   invalid_request 400     (this module: the API's own)
     ├── InvalidJson                      invalid_json 400
     ├── Unauthorized                     unauthorized 401
     ├── Forbidden                        forbidden 403
     ├── NotFound                         not_found 404
     ├── PayloadTooLarge                  payload_too_large 413
     ├── UnsupportedMediaType             unsupported_media_type 415
     ├── NoFeasibleRoute                  no_feasible_route 422
     ├── BudgetExceeded                   budget_exceeded 402
     ├── Conflict                         conflict 409
     ├── NotReady                         not_ready 503
     ├── InsufficientStorage              insufficient_storage 507   (the data directory is full)
     ├── InvalidImage                     invalid_image 422        adapters/images.py: a caller's image
     ├── ImageTooLarge                    image_too_large 413
     ├── ImageFetchFailed                 image_fetch_failed 422
     ├── StoreUnavailable                 store_unavailable 503    broker/store/base.py
     ├── IdempotencyConflict              idempotency_conflict 409
     ├── VersionConflict                  conflict 409
     ├── RecordUnreadable                 internal 410             (that one job is set aside)
     └── ProviderError                    provider_error 502       adapters/errors.py: a provider's failure
          ├── RateLimited                 rate_limited 429
          ├── ProviderUnavailable         provider_unavailable 503
          │    └── TaskTimedOut           timed_out 504            adapters/polling.py: past the deadline
          ├── Rejected                    rejected 422
          │    ├── RequestInvalid         request_invalid 422
          │    ├── GenerationFailed       generation_failed 422
          │    └── ContentRejected        content_rejected 422
          ├── AuthFailed                  auth_failed 502
          ├── InsufficientFunds           insufficient_funds 502
          ├── SubmissionUncertain         submission_uncertain 502
          └── OutputInvalid               output_invalid 502       (download and artifact store alike)

Provider errors end attempts, not requests: the runner records them on the job (what it does next
is `adapters.failures.classify`'s table). Outside the tree, by design: `ConfigError`
(`broker/config.py`, stops the start), `PolicyInvalid` (`policies/edits.py`, becomes an
`InvalidRequest`), `UnknownPrice` (`pricing/money.py`), `ImageError`/`FormatError`/`RenderCancelled`
(`local_backend/`, mapped by `adapters/local.py`), `OutboundRefused` (`adapters/outbound.py`, mapped
to an image or webhook error), `BadParameter` (`broker/observability/reports.py`, an
`InvalidRequest`), the runner's internal signals (`LeaseLost`, `WaitForCapacity`), and on the client
side `BrokerAPIError`, `BrokerUnreachable` and the CLI's `CommandError`/`CommandFailed`.
"""

from __future__ import annotations

from broker.schema import BrokerError, ErrorCode


class InvalidRequest(BrokerError):
    code = ErrorCode.INVALID_REQUEST


class InvalidJson(BrokerError):
    code = ErrorCode.INVALID_JSON


class Unauthorized(BrokerError):
    code = ErrorCode.UNAUTHORIZED


class Forbidden(BrokerError):
    code = ErrorCode.FORBIDDEN


class NotFound(BrokerError):
    code = ErrorCode.NOT_FOUND


class PayloadTooLarge(BrokerError):
    code = ErrorCode.PAYLOAD_TOO_LARGE


class UnsupportedMediaType(BrokerError):
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE


class NoFeasibleRoute(BrokerError):
    code = ErrorCode.NO_FEASIBLE_ROUTE


class BudgetExceeded(BrokerError):
    code = ErrorCode.BUDGET_EXCEEDED


class Conflict(BrokerError):
    code = ErrorCode.CONFLICT


class NotReady(BrokerError):
    code = ErrorCode.NOT_READY


class InsufficientStorage(BrokerError):
    """The data directory has no room for an upload (ENOSPC, a quota): nothing of it is kept."""

    code = ErrorCode.INSUFFICIENT_STORAGE
