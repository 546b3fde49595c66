"""The edge: every request header is decoded once, here, before any handler reads it.

aiohttp hands header values over as `str` decoded with `surrogateescape`, so a byte that is not
UTF-8 reaches the handlers as a lone surrogate, which then fails wherever the text is encoded
again (a key digest, a SQLite parameter, a response header). This middleware answers such a request
with a 400 naming the header, as it does a header holding a control character; past it, every
header value is plain text.
"""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.typedefs import Handler

from broker.errors import InvalidRequest

# C0 controls but tab, and DEL: never part of a header value a client means to send.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# A header longer than this is refused whole (aiohttp itself stops at 8190 bytes per line).
HEADER_MAX_CHARS = 8190


def header_problem(value: str) -> str | None:
    """Why a header value is not text a handler may read, or None."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not UTF-8 text"
    if _CONTROL.search(value):
        return "holds a control character"
    if len(value) > HEADER_MAX_CHARS:
        return f"is longer than {HEADER_MAX_CHARS} characters"
    return None


def _refuse(where: str, problem: str) -> InvalidRequest:
    message = f"{where} {problem}"
    return InvalidRequest(message, details=[{"field": where, "message": problem}])


@web.middleware
async def decoded_input(request: web.Request, handler: Handler) -> web.StreamResponse:
    """400 naming the first header (or the path or query) that is not clean UTF-8 text."""
    for name, value in request.headers.items():
        if (problem := header_problem(value)) is not None:
            raise _refuse(f"header {name}", problem)
    if (problem := header_problem(request.path)) is not None:
        raise _refuse("the path", problem)
    for name, value in request.query.items():
        if (problem := header_problem(name) or header_problem(value)) is not None:
            raise _refuse(f"query parameter {name.encode('utf-8', 'replace').decode()[:64]}", problem)
    return await handler(request)
