"""Reading `POST /v1/videos`: OpenAI's create body (JSON, or multipart with `input_reference` as an image
file, which is how the `openai` package always sends it) turned into the broker's `JobRequest`.

OpenAI's fields: `prompt`, `model` (`auto` or omitted: the cheapest feasible route; `provider/model`: that
route only), `seconds` (→ `duration_s`), `size` (`1280x720` → 16:9 at 720p), `input_reference` (an image
file, or `{"image_url": ...}`). The broker's own fields come in the SDK's `extra_body`: `constraints`,
`metadata`, `seed`, `audio`, `camera_fixed`, `webhook_url`, `mode`. In multipart the SDK writes nested
values with brackets (`constraints[providers][]=fal`); a `constraints` or `metadata` part may also be JSON.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import ValidationError

from adapters.images import ImageTooLarge, InvalidImage, check_image
from broker.api.intake import Intake, deployment_problems, parse_json, request_digest, save_upload
from broker.api.video_views import AUTO, SIZES, Catalog
from broker.appkeys import ARTIFACTS, SETTINGS
from broker.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from broker.schema import JobRequest

OPENAI_FIELDS = ("prompt", "model", "seconds", "size", "input_reference")
BROKER_FIELDS = ("constraints", "metadata", "seed", "audio", "camera_fixed", "webhook_url", "mode")
_JSON_FIELDS = ("constraints", "metadata")
# The broker's field names as the OpenAI request spells them, for error messages.
_OPENAI_NAMES = {
    "duration_s": "seconds",
    "aspect_ratio": "size",
    "resolution": "size",
    "image_url": "input_reference",
}
_FORM_NAME = re.compile(r"^([A-Za-z_]\w{0,63})((?:\[\w{0,64}\]){0,3})$")
_FORM_KEY = re.compile(r"\[(\w*)\]")


def shown(value: Any, limit: int = 64) -> str:
    """A caller's value for an error message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def bad(param: str, message: str) -> InvalidRequest:
    """A 400 naming the parameter (it becomes OpenAI's `error.param`)."""
    return InvalidRequest(f"{param}: {message}", details=[{"field": param, "message": message}])


def _put(fields: dict[str, Any], name: str, value: Any) -> None:
    """Store one form value under its bracketed name: `a[b][]` → fields["a"]["b"] += [value]."""
    match = _FORM_NAME.match(name)
    if match is None:
        raise bad(name[:64], "not a field name this endpoint knows")
    keys = [match.group(1), *_FORM_KEY.findall(match.group(2))]
    node: Any = fields
    for key, following in itertools.pairwise(keys):
        if key == "" or not isinstance(node, dict):
            raise bad(name, "lists of objects are not accepted in a form; send JSON instead")
        node = node.setdefault(key, [] if following == "" else {})
    last = keys[-1]
    if last == "" and isinstance(node, list):
        node.append(value)
    elif last != "" and isinstance(node, dict) and last not in node:
        node[last] = value
    else:
        raise bad(name, "given twice, or both as a value and as a list")


async def _read_part(part: BodyPartReader, limit: int, what: str) -> bytes:
    """A part's bytes, refused as soon as they pass `limit` (a part is not bounded by aiohttp)."""
    data = bytearray()
    while chunk := await part.read_chunk():
        data += chunk
        if len(data) > limit:
            if what == "input_reference":
                raise ImageTooLarge(f"input_reference: the image is over the limit of {limit} bytes")
            raise PayloadTooLarge(f"{what}: over the limit of {limit} bytes")
    return bytes(data)


async def _read_form(request: web.Request) -> tuple[dict[str, Any], bytes | None]:
    fields: dict[str, Any] = {}
    image: bytes | None = None
    settings = request.app[SETTINGS]
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name is None:
            raise InvalidRequest("nested multipart bodies are not accepted")
        if part.name == "input_reference" and part.filename is not None:
            if image is not None:
                raise bad("input_reference", "give one image")
            image = await _read_part(part, settings.max_image_bytes, part.name)
            continue
        raw = await _read_part(part, settings.max_body_bytes, part.name[:64])
        if part.name in _JSON_FIELDS:
            _put(fields, part.name, parse_json(raw, part.name))
        else:
            try:
                text = raw.decode(part.get_charset("utf-8"))
            except (LookupError, UnicodeDecodeError):
                raise bad(part.name[:64], "not text in its charset") from None
            _put(fields, part.name, text)
    return fields, image


async def read_form(request: web.Request) -> tuple[dict[str, Any], bytes | None]:
    """The multipart body's fields and image; a body aiohttp cannot parse is the caller's error."""
    try:
        return await _read_form(request)
    except (ValueError, HttpProcessingError) as exc:
        raise InvalidRequest(f"the multipart body is malformed: {type(exc).__name__}") from None


def _seconds(value: Any, catalog: Catalog) -> int:
    text = str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""
    served = ", ".join(map(str, catalog.seconds))
    if not text.isdigit() or int(text) not in catalog.seconds:
        message = f"no route of this broker makes a {shown(value)}-second video; use one of {served}"
        raise bad("seconds", message)
    return int(text)


def _size(value: Any, catalog: Catalog) -> dict[str, str]:
    if not isinstance(value, str) or value not in catalog.sizes:
        sizes = ", ".join(catalog.sizes)
        raise bad("size", f"no route of this broker makes {shown(value)}; use one of {sizes} (WIDTHxHEIGHT)")
    aspect, resolution = SIZES[value]
    return {"aspect_ratio": aspect.value, "resolution": resolution.value}


def _pin(model: Any, constraints: dict[str, Any], catalog: Catalog) -> None:
    """`provider/model` allows that route only; `auto` (or no model) leaves the choice to the router."""
    if model is None or model == AUTO:
        return
    if not isinstance(model, str) or model not in catalog.routes:
        example = next(iter(catalog.routes), "runway/gen4_turbo")
        raise bad(
            "model",
            f"{shown(model)} is not a model of this broker. Use 'auto' (or leave it out) for the cheapest"
            f" route that can make the video, or 'provider/model' to pin one route, e.g. {example!r}; "
            "GET /v1/pricing lists every route",
        )
    wanted = constraints.get("models")
    route = catalog.routes[model]
    if isinstance(wanted, list) and model not in wanted and route.model not in wanted:
        raise bad("model", f"{model!r} is not among constraints.models {shown(wanted, 200)}")
    constraints["models"] = [model]


def _reference(value: Any) -> str | None:
    """The image URL of an `input_reference` object (a file comes as a multipart part instead)."""
    if value is None:
        return None
    if isinstance(value, dict) and set(value) == {"image_url"} and isinstance(value["image_url"], str):
        return value["image_url"]
    if isinstance(value, dict) and "file_id" in value:
        raise bad(
            "input_reference", "this broker has no Files API: send the image as a file, or its image_url"
        )
    raise bad(
        "input_reference", 'send an image file (multipart), or {"image_url": "https://..." or a data: URI}'
    )


def _renamed(exc: ValidationError) -> InvalidRequest:
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = [str(p) for p in err["loc"]]
        if loc:
            loc[0] = _OPENAI_NAMES.get(loc[0], loc[0])
        problems.append({"field": ".".join(loc) or "body", "message": err["msg"]})
    summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    return InvalidRequest(f"invalid request: {summary}", details=problems)


def job_request(fields: Any, catalog: Catalog, image_digest: str | None = None) -> JobRequest:
    """The `JobRequest` an OpenAI create body asks for; a 400 naming the field otherwise."""
    if not isinstance(fields, dict):
        raise InvalidRequest("the body must be a JSON object")
    for name in fields:
        if name not in OPENAI_FIELDS and name not in BROKER_FIELDS:
            known = ", ".join((*OPENAI_FIELDS, *BROKER_FIELDS))
            raise bad(str(name)[:64], f"unknown parameter; this endpoint takes {known}")
    body = {name: fields[name] for name in BROKER_FIELDS if name in fields}
    constraints = body.setdefault("constraints", {})
    if not isinstance(constraints, dict):
        raise bad("constraints", "must be an object")
    body["prompt"] = fields.get("prompt", "")
    if "seconds" in fields:
        body["duration_s"] = _seconds(fields["seconds"], catalog)
    if "size" in fields:
        body.update(_size(fields["size"], catalog))
    _pin(fields.get("model"), constraints, catalog)
    image_url = _reference(fields.get("input_reference"))
    if image_url is not None:
        body["image_url"] = image_url
    if image_digest is not None:
        body["image_upload"] = image_digest
    try:
        return JobRequest.model_validate(body)
    except ValidationError as exc:
        raise _renamed(exc) from None


def _checked(app: web.Application, job: JobRequest) -> JobRequest:
    if problems := deployment_problems(app, job):
        for problem in problems:
            head, dot, rest = problem["field"].partition(".")
            problem["field"] = _OPENAI_NAMES.get(head, head) + dot + rest
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        raise InvalidRequest(f"invalid request: {summary}", details=problems)
    return job


async def read_video_request(request: web.Request, catalog: Catalog) -> Intake:
    """Parse and check a create body; an uploaded image is checked and stored by its digest."""
    app = request.app
    if request.content_type == "application/json":
        return _intake(_checked(app, job_request(parse_json(await request.read()), catalog)), None)
    if request.content_type == "application/x-www-form-urlencoded":
        fields: dict[str, Any] = {}
        for name, value in (await request.post()).items():
            _put(fields, name, value)
        return _intake(_checked(app, job_request(fields, catalog)), None)
    if request.content_type != "multipart/form-data":
        raise UnsupportedMediaType(
            "send multipart/form-data (what the openai package sends), a URL-encoded form or application/json"
        )
    fields, image = await read_form(request)
    if image is None:
        return _intake(_checked(app, job_request(fields, catalog)), None)
    if not image:
        raise InvalidImage("input_reference: the image file is empty")
    if "input_reference" in fields:
        raise bad("input_reference", "give the image either as a file or as image_url, not both")
    digest = await asyncio.to_thread(_checked_digest, image)
    job = _checked(app, job_request(fields, catalog, digest))
    await save_upload(app[ARTIFACTS], image, digest)  # only once the request is valid; 507 on a full disk
    return _intake(job, len(image))


def _checked_digest(image: bytes) -> str:
    check_image(image)
    return hashlib.sha256(image).hexdigest()


def _intake(job: JobRequest, upload_bytes: int | None) -> Intake:
    return Intake(job, upload_bytes, request_digest(job))
