"""Strict field types of a request, and the checks of its image and metadata fields.

Strict: JSON `true` does not pass for the number 1, nor 1 for `true`. pydantic's lax mode converts both
ways; a caller who sends `"duration_s": true` has made a mistake the broker should name, not a 1-second
video. Text still converts (multipart fields are text). Imports pydantic only; `broker.schema` uses
these and re-exports the checks.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BeforeValidator, Field


def _not_a_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a whole number, not true or false")
    return value


def _not_a_number(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError("must be true or false, not a number")
    return value


WholeNumber = Annotated[int, BeforeValidator(_not_a_bool)]
YesNo = Annotated[bool, BeforeValidator(_not_a_number)]

# A provider's or a model's name in a request's constraints.
ProviderName = Annotated[str, Field(min_length=1, max_length=64)]
ModelName = Annotated[str, Field(min_length=1, max_length=128)]


class Priority(StrEnum):
    """A job's place among its own team's waiting jobs: `interactive` before `batch`."""

    INTERACTIVE = "interactive"
    BATCH = "batch"


METADATA_MAX_DEPTH = 8  # levels of objects and arrays, metadata itself being the first
_DATA_URI = re.compile(r"^data:(image/[a-z0-9.+-]+);base64,(.*)$", re.IGNORECASE | re.DOTALL)


def decode_data_uri(uri: str) -> tuple[str, bytes]:
    """Split a `data:image/...;base64,` URI into its media type and bytes; ValueError if malformed."""
    match = _DATA_URI.match(uri)
    if match is None:
        raise ValueError("must be data:image/<type>;base64,<data>")
    try:
        data = base64.b64decode(match.group(2), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("data URI is not valid base64") from exc
    if not data:
        raise ValueError("data URI holds no bytes")
    return match.group(1).lower(), data


def _text_problem(text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "holds a lone surrogate, which is not text"
    return None


def _value_problem(value: Any) -> str | None:
    """Why a leaf of metadata would not come back from storage as it went in, or None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return _text_problem(value)
    if isinstance(value, int):
        return None if -(2**63) <= value < 2**63 else "integers must fit in 64 bits"
    if isinstance(value, float):
        return None if math.isfinite(value) else "numbers must be finite"
    return f"{type(value).__name__} is not a JSON value"


def metadata_problem(metadata: dict[str, Any]) -> str | None:
    """What keeps `metadata` from being stored and read back unchanged (too deep, not plain JSON),
    naming where; None if nothing does. Iterative, so no input can exhaust the stack."""
    stack: list[tuple[Any, int, str]] = [(metadata, 1, "metadata")]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, dict | list):
            if depth > METADATA_MAX_DEPTH:
                return f"{path} nests deeper than {METADATA_MAX_DEPTH} levels of objects and arrays"
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, child in items:
                if isinstance(node, dict) and (not isinstance(key, str) or _text_problem(key)):
                    return f"{path}: keys must be text"
                stack.append((child, depth + 1, f"{path}.{key}"))
        elif (problem := _value_problem(node)) is not None:
            return f"{path}: {problem}"
    return None
