"""Reading a job body from a request: JSON, or multipart with the same fields and an `image` part."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import ValidationError

from adapters.images import ImageTooLarge, InvalidImage, check_image
from broker.appkeys import ARTIFACTS, SETTINGS
from broker.errors import InvalidJson, InvalidRequest, UnsupportedMediaType
from broker.schema import JobRequest

_JSON_FIELDS = {"constraints", "metadata"}
_MULTIPART_FIELDS = set(JobRequest.model_fields) - {"image_upload"}


@dataclass(frozen=True, slots=True)
class Intake:
    request: JobRequest
    upload_bytes: int | None  # size of an uploaded image, if the body carried one

    @property
    def request_hash(self) -> str:
        """A digest of the validated request, for Idempotency-Key comparisons."""
        canonical = json.dumps(self.request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def validation_error(exc: ValidationError) -> InvalidRequest:
    """A 400 naming each bad field and what is wrong with it."""
    problems = [
        {"field": ".".join(str(p) for p in err["loc"]) or "body", "message": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]
    summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    return InvalidRequest(f"invalid request: {summary}", details=problems)


def parse_job_request(data: Any) -> JobRequest:
    """Validate a decoded body into a `JobRequest`, or raise a 400 naming the field."""
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object")
    if "image_upload" in data:
        raise InvalidRequest("image_upload: send the image as a multipart `image` part instead")
    return _validate(data)


def _validate(data: dict[str, Any]) -> JobRequest:
    try:
        return JobRequest.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


async def read_json(request: web.Request) -> Any:
    """The body as JSON; a 400 with code invalid_json if it is not."""
    try:
        return json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidJson(f"the body is not valid JSON: {exc}") from None


async def _read_multipart(request: web.Request) -> tuple[dict[str, Any], bytes | None]:
    fields: dict[str, Any] = {}
    image: bytes | None = None
    limit = request.app[SETTINGS].max_image_bytes
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name is None:
            raise InvalidRequest("nested multipart bodies are not accepted")
        if part.name == "image":
            image = await part.read(decode=False)
            if len(image) > limit:
                raise ImageTooLarge(f"the image is {len(image)} bytes; the limit is {limit}")
            continue
        if part.name not in _MULTIPART_FIELDS:
            raise InvalidRequest(f"{part.name}: unknown field")
        text = await part.text()
        if part.name in _JSON_FIELDS:
            try:
                fields[part.name] = json.loads(text)
            except json.JSONDecodeError:
                raise InvalidJson(f"{part.name}: not valid JSON") from None
        else:
            fields[part.name] = text
    return fields, image


async def _read_multipart_checked(request: web.Request) -> tuple[dict[str, Any], bytes | None]:
    """`_read_multipart`, with a body aiohttp cannot parse (no boundary, broken part headers, bad
    encoding) answered as the caller's error, not ours."""
    try:
        return await _read_multipart(request)
    except (ValueError, HttpProcessingError) as exc:
        raise InvalidRequest(f"the multipart body is malformed: {type(exc).__name__}") from None


async def read_intake(request: web.Request) -> Intake:
    """Parse and validate a job body; an uploaded image is checked and stored by its digest."""
    content_type = request.content_type
    if content_type == "application/json":
        return Intake(parse_job_request(await read_json(request)), None)
    if content_type != "multipart/form-data":
        raise UnsupportedMediaType("send application/json, or multipart/form-data with an image part")
    fields, image = await _read_multipart_checked(request)
    if image is None:
        return Intake(parse_job_request(fields), None)
    if not image:
        raise InvalidImage("the image part is empty")
    if "image_upload" in fields:
        raise InvalidRequest("image_upload: unknown field")
    check_image(image)
    job_request = _validate({**fields, "image_upload": hashlib.sha256(image).hexdigest()})
    # Stored only once the request is valid; the file is named by its digest, so a repeat is free.
    request.app[ARTIFACTS].save_upload(image)
    return Intake(job_request, len(image))
