"""The one place exceptions become HTTP answers, and where each request gets its id.

Errors carry a code and a message; the status each answers with is decided here only, by the
nearest class in the error's ancestry that `STATUSES` names (the tree is drawn in `broker/errors.py`).
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from adapters.errors import ProviderError, ProviderUnavailable, RateLimited, Rejected
from adapters.images import ImageFetchFailed, ImageTooLarge, InvalidImage
from adapters.polling import TaskTimedOut
from broker.api.common import json_response
from broker.errors import (
    BudgetExceeded,
    Conflict,
    Forbidden,
    InsufficientStorage,
    InvalidJson,
    InvalidRequest,
    NoFeasibleRoute,
    NotFound,
    NotReady,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from broker.schema import BrokerError, ErrorCode
from broker.store.base import IdempotencyConflict, RecordUnreadable, StoreUnavailable, VersionConflict

log = structlog.get_logger("broker.http")
# A caller's X-Request-Id is echoed back and logged only if it is short printable ASCII.
_REQUEST_ID = re.compile(r"[!-~]{1,64}")

STATUSES: dict[type[BrokerError], int] = {
    BrokerError: 500,
    InvalidRequest: 400,
    InvalidJson: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    NoFeasibleRoute: 422,
    BudgetExceeded: 402,
    Conflict: 409,
    NotReady: 503,
    InsufficientStorage: 507,
    InvalidImage: 422,
    ImageTooLarge: 413,
    ImageFetchFailed: 422,
    StoreUnavailable: 503,
    IdempotencyConflict: 409,
    VersionConflict: 409,
    # Not a 500: the broker is fine and says what became of the job; its record is set aside.
    RecordUnreadable: 410,
    ProviderError: 502,
    RateLimited: 429,
    ProviderUnavailable: 503,
    TaskTimedOut: 504,
    Rejected: 422,
}


def status_for(error: type[BrokerError]) -> int:
    """The HTTP status an error answers with: its nearest ancestor's in `STATUSES`."""
    return next(STATUSES[cls] for cls in error.__mro__ if cls in STATUSES)


_HTTP_CODES = {
    400: ErrorCode.INVALID_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
}


def error_response(status: int, code: str, message: str, details: Any = None) -> web.Response:
    return json_response({"error": {"code": code, "message": message, "details": details}}, status=status)


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind a request id to every log line of this request and echo it back."""
    given = request.headers.get("X-Request-Id", "")
    request_id = given if _REQUEST_ID.fullmatch(given) else secrets.token_hex(8)
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        response = await handler(request)
        response.headers["X-Request-Id"] = request_id
        return response


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map every exception to the error envelope; only a bug in the broker answers 500."""
    try:
        return await handler(request)
    except BrokerError as exc:
        status = status_for(type(exc))
        if status >= 500:
            log.warning("request_failed", code=exc.code.value, error=exc.message, path=request.path)
        return error_response(status, exc.code.value, exc.message, exc.details)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, ErrorCode.INVALID_REQUEST)
        message = exc.reason if exc.status != 413 else "the request body is larger than the limit"
        return error_response(exc.status, code.value, message)
    except ConnectionResetError:  # the caller left mid-request (a body cut short): nobody to answer
        log.info("client_disconnected", path=request.path, method=request.method)
        return error_response(400, ErrorCode.INVALID_REQUEST.value, "the request ended before its body did")
    except Exception:
        log.exception("unhandled_error", path=request.path, method=request.method)
        return error_response(500, ErrorCode.INTERNAL.value, "internal error; it has been logged")
