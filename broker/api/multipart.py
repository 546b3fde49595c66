"""Reading a multipart/form-data job body with bounded work: each field at most once, an `image` part,
nothing more.

Every part's bytes are read raw and decoded here, once: text fields as UTF-8 (a part may declare
`charset=utf-8` or `us-ascii`; any other charset or transfer encoding is a 400 naming the field), the
image as bytes. The number of parts, each part's size and the whole body are capped while reading,
so a flood of tiny parts or an endless one stops at the first part past the cap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.helpers import parse_mimetype
from aiohttp.http_exceptions import HttpProcessingError

from adapters.images import ImageTooLarge
from broker.api.edge import header_problem
from broker.errors import InvalidRequest, PayloadTooLarge
from broker.schema import JobRequest

MULTIPART_FIELDS = frozenset(set(JobRequest.model_fields) - {"image_upload"})
# Each field once, plus the image: a body with more parts than this is not a job request.
MAX_PARTS = len(MULTIPART_FIELDS) + 1
_CHUNK = 64 * 1024
_TEXT_CHARSETS = {"utf-8", "utf8", "us-ascii", "ascii"}
_PLAIN_ENCODINGS = {"", "7bit", "8bit", "binary", "identity"}


def _refused(field: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {problem}", details=[{"field": field, "message": problem}])


def _part_name(part: BodyPartReader, index: int) -> str:
    """The part's field name, once its headers are known to be text."""
    for header, value in part.headers.items():
        if (problem := header_problem(value)) is not None:
            raise _refused(f"part {index}", f"header {header} {problem}")
    if part.name is None:
        raise _refused(f"part {index}", "has no name (Content-Disposition: form-data; name=...)")
    return part.name


def _text_decoding(part: BodyPartReader, name: str) -> None:
    """400 unless the part is plain UTF-8 text: no other charset, no transfer or content encoding."""
    charset = parse_mimetype(part.headers.get("Content-Type", "")).parameters.get("charset", "utf-8")
    if charset.strip().lower() not in _TEXT_CHARSETS:
        raise _refused(name, f"charset {charset[:40]!r} is not accepted; send the field as UTF-8")
    for header in ("Content-Transfer-Encoding", "Content-Encoding"):
        if part.headers.get(header, "").strip().lower() not in _PLAIN_ENCODINGS:
            raise _refused(name, f"{header} {part.headers[header][:40]!r} is not accepted; send it plain")


class _Budget:
    """What is left of the body limit while parts are read."""

    def __init__(self, limit: int) -> None:
        self.limit, self.left = limit, limit

    async def read(self, part: BodyPartReader, cap: int, too_large: Callable[[int], Exception]) -> bytes:
        """The part's raw bytes; `too_large(cap)` past `cap`, a 413 past the body limit."""
        chunks: list[bytes] = []
        size = 0
        while chunk := await part.read_chunk(_CHUNK):
            size += len(chunk)
            self.left -= len(chunk)
            if size > cap:
                raise too_large(cap)
            if self.left < 0:
                raise PayloadTooLarge(f"the request body is larger than the limit of {self.limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


def _image_too_large(limit: int) -> Exception:
    return ImageTooLarge(f"the image is larger than the limit of {limit} bytes")


def _field_too_large(name: str) -> Callable[[int], Exception]:
    return lambda limit: _refused(name, f"is longer than {limit} bytes")


async def _read_parts(
    request: web.Request, max_image_bytes: int, max_body_bytes: int
) -> tuple[dict[str, str], bytes | None]:
    fields: dict[str, str] = {}
    image: bytes | None = None
    budget = _Budget(max_body_bytes)
    reader = await request.multipart()
    index = 0
    while (part := await reader.next()) is not None:
        index += 1
        if not isinstance(part, BodyPartReader):
            raise InvalidRequest("nested multipart bodies are not accepted")
        if index > MAX_PARTS:
            raise InvalidRequest(f"the body has more than {MAX_PARTS} parts: each field once, and the image")
        name = _part_name(part, index)
        if name in fields or (name == "image" and image is not None):
            raise _refused(name, "sent twice")
        if name == "image":
            image = await budget.read(part, max_image_bytes, _image_too_large)
            continue
        if name not in MULTIPART_FIELDS:
            raise _refused(name[:64], "unknown field")
        _text_decoding(part, name)
        raw = await budget.read(part, max_body_bytes, _field_too_large(name))
        try:
            fields[name] = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _refused(name, "is not UTF-8 text") from None
    return fields, image


async def read_multipart(
    request: web.Request, max_image_bytes: int, max_body_bytes: int
) -> tuple[dict[str, Any], bytes | None]:
    """The text fields (decoded) and the image bytes of a multipart job body. A body aiohttp cannot
    parse (no boundary, broken part headers) is the caller's 400, not ours."""
    try:
        return await _read_parts(request, max_image_bytes, max_body_bytes)
    except (ValueError, AssertionError, HttpProcessingError) as exc:
        raise InvalidRequest(f"the multipart body is malformed: {type(exc).__name__}") from None
