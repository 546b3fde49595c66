"""Errors the HTTP API raises; each maps to one status and code in the error envelope."""

from __future__ import annotations

from broker.schema import BrokerError, ErrorCode


class InvalidRequest(BrokerError):
    code = ErrorCode.INVALID_REQUEST
    http_status = 400


class InvalidJson(BrokerError):
    code = ErrorCode.INVALID_JSON
    http_status = 400


class Unauthorized(BrokerError):
    code = ErrorCode.UNAUTHORIZED
    http_status = 401


class Forbidden(BrokerError):
    code = ErrorCode.FORBIDDEN
    http_status = 403


class NotFound(BrokerError):
    code = ErrorCode.NOT_FOUND
    http_status = 404


class PayloadTooLarge(BrokerError):
    code = ErrorCode.PAYLOAD_TOO_LARGE
    http_status = 413


class UnsupportedMediaType(BrokerError):
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE
    http_status = 415


class NoFeasibleRoute(BrokerError):
    code = ErrorCode.NO_FEASIBLE_ROUTE
    http_status = 422


class BudgetExceeded(BrokerError):
    code = ErrorCode.BUDGET_EXCEEDED
    http_status = 402


class Conflict(BrokerError):
    code = ErrorCode.CONFLICT
    http_status = 409


class NotReady(BrokerError):
    code = ErrorCode.NOT_READY
    http_status = 503
