"""What an emulator received: every provider request, in order, for tests to assert on."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from adapters.emulators.faults import Endpoint


@dataclass(frozen=True, slots=True)
class UploadedFile:
    filename: str | None
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the emulator saw it; `json` is None when the body was not JSON."""

    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    endpoint: Endpoint
    body: bytes = b""
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """A JSON-safe view for the admin endpoint: credentials masked, file contents reduced to sizes."""
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": {name: _masked(name, value) for name, value in self.headers.items()},
            "endpoint": self.endpoint.value,
            "json": self.json,
            "form": self.form,
            "files": {
                name: {"filename": f.filename, "content_type": f.content_type, "bytes": len(f.data)}
                for name, f in self.files.items()
            },
        }


SECRET_HEADERS = frozenset({"authorization", "x-api-key"})


def _masked(name: str, value: str) -> str:
    """Keep the auth scheme (tests check it) but never echo a credential over HTTP."""
    if name.lower() not in SECRET_HEADERS:
        return value
    scheme, _, credential = value.partition(" ")
    return f"{scheme} ***" if credential else "***"


class Recorder:
    """The list of recorded requests, with counts by endpoint kind."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []

    def count(self, endpoint: Endpoint | str | None = None) -> int:
        """How many requests hit `endpoint` (all requests when None)."""
        if endpoint is None:
            return len(self.requests)
        return sum(1 for r in self.requests if r.endpoint == Endpoint(endpoint))

    def of(self, endpoint: Endpoint | str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.endpoint == Endpoint(endpoint)]

    def clear(self) -> None:
        self.requests.clear()

    async def record(self, request: web.Request, endpoint: Endpoint) -> RecordedRequest:
        """Read and keep the request's body. aiohttp caches it, so handlers can read it again."""
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=CIMultiDict(request.headers),
            endpoint=endpoint,
            **await _read_body(request),
        )
        self.requests.append(recorded)
        return recorded


async def _read_body(request: web.Request) -> dict[str, Any]:
    if request.content_type == "multipart/form-data":
        form: dict[str, str] = {}
        files: dict[str, UploadedFile] = {}
        for name, value in (await request.post()).items():
            if isinstance(value, web.FileField):
                data = value.file.read()
                value.file.seek(0)  # the handler reads the same file object after us
                files[name] = UploadedFile(value.filename, value.content_type, data)
            else:
                form[name] = str(value)
        return {"form": form, "files": files}
    body = await request.read() if request.body_exists else b""
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    return {"body": body, "json": parsed}
