"""Helpers every handler uses: who is calling, and JSON answers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from broker.appkeys import DEPLOYMENT
from broker.auth import Identity

_IDENTITY = web.RequestKey("identity", Identity)


def identity_of(request: web.Request) -> Identity:
    """The caller's identity from its bearer key (401 without a valid one)."""
    identity = request.get(_IDENTITY)
    if identity is None:
        identity = request.app[DEPLOYMENT].auth.authenticate(request.headers.get("Authorization"))
        request[_IDENTITY] = identity
    return identity


def json_response(body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        text=json.dumps(body, separators=(",", ":")),
        status=status,
        content_type="application/json",
        headers=headers,
    )
