"""Reading a job body from a request: JSON, or multipart with the same fields and an `image` part.

Input is bounded before it is parsed: no JSON text nests deeper than `JSON_MAX_DEPTH` (checked on the
raw bytes, so no parser recursion is ever reached), and NaN, Infinity and over-long integers are
refused, so everything accepted can be stored and read back. A body is then checked against the
deployment: provider and model names it knows, and URLs the broker is allowed to reach.
"""

from __future__ import annotations

import errno
import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from adapters.images import InvalidImage, check_image
from adapters.outbound import OutboundRefused
from broker.api.multipart import read_multipart
from broker.api.offload import in_process, off_loop
from broker.appkeys import ARTIFACTS, DEPLOYMENT, OUTBOUND, SETTINGS
from broker.errors import InsufficientStorage, InvalidJson, InvalidRequest, UnsupportedMediaType
from broker.schema import PROMPT_MAX_CHARS, JobRequest
from broker.store.artifacts import ArtifactStore
from policies.edits import unknown_names

# A real request nests 3 levels, plus metadata's 8; nothing legitimate comes near this.
JSON_MAX_DEPTH = 32
_JSON_FIELDS = {"constraints", "metadata"}
# A JSON string (skipped whole, escapes and all) or a bracket: enough to measure nesting.
_JSON_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


@dataclass(frozen=True, slots=True)
class Intake:
    request: JobRequest
    upload_bytes: int | None  # size of an uploaded image, if the body carried one
    request_hash: str  # a digest of the validated request, for Idempotency-Key comparisons


def request_digest(request: JobRequest) -> str:
    """The digest `Intake.request_hash` holds: SHA-256 of the request's canonical JSON."""
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
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


def _visible(text: str) -> bool:
    """True if `text` shows anything: not only spaces, zero-width marks and other format characters."""
    return any(unicodedata.category(c)[0] not in "CZ" for c in text)


def _check_prompt(data: dict[str, Any]) -> dict[str, Any]:
    """A new request's prompt: a control character (NUL, ESC, ...) other than a line break or tab is a
    400, and a prompt that shows nothing counts as none (so a mode that needs one says so)."""
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or len(prompt) > PROMPT_MAX_CHARS:  # too long: the schema says so
        return data
    if any(unicodedata.category(c) == "Cc" and c not in "\n\r\t" for c in prompt):
        message = "holds a control character"
        raise InvalidRequest(f"prompt: {message}", details=[{"field": "prompt", "message": message}])
    return data if _visible(prompt) else {**data, "prompt": ""}


def _validate(data: dict[str, Any]) -> JobRequest:
    try:
        return JobRequest.model_validate(_check_prompt(data))
    except ValidationError as exc:
        raise validation_error(exc) from None


def too_deep(raw: bytes, limit: int = JSON_MAX_DEPTH) -> str | None:
    """The top-level field (or "body") under which `raw` JSON nests deeper than `limit`, else None."""
    if raw.count(b"[") + raw.count(b"{") <= limit:  # too few brackets to nest that deep: skip the scan
        return None
    depth, key, last_string = 0, "body", b""
    for token in _JSON_TOKENS.finditer(raw):
        text = token.group()
        if text[0] == ord('"'):
            last_string = text if depth == 1 else last_string
        elif text in (b"[", b"{"):
            depth += 1
            if depth == 2 and last_string:
                key = last_string[1:-1].decode("utf-8", "replace")[:64]
            if depth > limit:
                return key
        else:
            depth -= 1
    return None


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


def parse_json(raw: bytes, what: str = "body") -> Any:
    """`raw` decoded as JSON, nesting bounded first; 400 if it is not JSON or nests too deep."""
    try:
        # UTF-8 only (as RFC 8259 asks): no ASCII byte hides inside another character, so the byte
        # scan for nesting below sees exactly the brackets the parser will.
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidJson(f"{what}: not UTF-8 text") from None
    if (field := too_deep(raw)) is not None:
        name = what if what != "body" else field
        message = f"nested deeper than {JSON_MAX_DEPTH} levels of objects and arrays"
        raise InvalidRequest(f"{name}: {message}", details=[{"field": name, "message": message}])
    try:
        return json.loads(text, parse_constant=_not_json)
    except (ValueError, RecursionError) as exc:  # not JSON; NaN, Infinity, an integer of 4,300+ digits
        raise InvalidJson(f"{what}: not valid JSON: {exc}") from None


async def read_json(request: web.Request) -> Any:
    """The body as JSON; a 400 with code invalid_json if it is not."""
    raw = await request.read()
    return await off_loop(request.app, len(raw), parse_json, raw)


def _job_from_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Multipart text fields as a body: the JSON ones (constraints, metadata) parsed."""
    return {
        name: parse_json(value.encode("utf-8"), name) if name in _JSON_FIELDS else value
        for name, value in fields.items()
    }


def deployment_problems(app: web.Application, job: JobRequest) -> list[dict[str, str]]:
    """What this deployment cannot do for a valid request: names it does not know, URLs it will not
    reach, a webhook it cannot sign."""
    config = app[DEPLOYMENT].config
    problems = unknown_names(job.constraints, config.providers, config.routes, prefix="constraints.")
    outbound = app[OUTBOUND]
    if job.image_url is not None and not job.image_url.startswith("data:"):
        try:
            outbound.check_url(job.image_url)
        except OutboundRefused as exc:
            problems.append({"field": "image_url", "message": f"{exc}; the broker fetches only public URLs"})
    if job.webhook_url is not None:
        if not app[SETTINGS].webhook_secret:
            message = (
                "this broker has no BROKER_WEBHOOK_SECRET, so it cannot sign webhooks and sends none;"
                " leave webhook_url out, or ask the operator to set the secret"
            )
            problems.append({"field": "webhook_url", "message": message})
        else:
            try:
                outbound.check_url(job.webhook_url)
            except OutboundRefused as exc:
                problems.append({"field": "webhook_url", "message": str(exc)})
    return problems


def _checked(app: web.Application, job: JobRequest) -> JobRequest:
    if problems := deployment_problems(app, job):
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        raise InvalidRequest(f"invalid request: {summary}", details=problems)
    return job


async def read_intake(request: web.Request) -> Intake:
    """Parse and validate a job body; an uploaded image is checked and stored by its digest. Work that
    grows with the body (parsing, decoding, hashing, checking the image) runs off the event loop once
    the body is large (`broker.api.offload`)."""
    content_type, app = request.content_type, request.app
    if content_type == "application/json":
        raw = await request.read()
        job, digest = await in_process(app, len(raw), _json_job, raw)
        return Intake(_checked(app, job), None, digest)
    if content_type != "multipart/form-data":
        raise UnsupportedMediaType("send application/json, or multipart/form-data with an image part")
    settings = app[SETTINGS]
    raw_fields, image = await read_multipart(request, settings.max_image_bytes, settings.max_body_bytes)
    fields = _job_from_fields(raw_fields)
    if image is None:
        job = _checked(app, parse_job_request(fields))
        return Intake(job, None, request_digest(job))
    if not image:
        raise InvalidImage("the image part is empty")
    image_digest = await off_loop(app, len(image), _checked_image_digest, image)
    job_request = _checked(app, _validate({**fields, "image_upload": image_digest}))
    # Stored only once the request is valid; the file is named by its digest, so a repeat is free.
    await save_upload(request.app[ARTIFACTS], image, image_digest)
    return Intake(job_request, len(image), request_digest(job_request))


def _json_job(raw: bytes) -> tuple[JobRequest, str]:
    """A JSON job body parsed and validated, with its request digest (one piece of work off the loop)."""
    job = parse_job_request(parse_json(raw))
    return job, request_digest(job)


def _checked_image_digest(image: bytes) -> str:
    """The image's SHA-256, once it is known to be an image the broker takes."""
    check_image(image)
    return hashlib.sha256(image).hexdigest()


async def save_upload(artifacts: ArtifactStore, image: bytes, digest: str) -> str:
    """Store an uploaded image off the event loop; a full disk is a 507, with nothing left behind."""
    try:
        return await artifacts.save_upload(image, digest)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorage(
                "the broker has no room to store the image right now; try again later or send image_url"
            ) from None
        raise
