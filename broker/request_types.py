"""Strict field types of a request: JSON `true` does not pass for the number 1, nor 1 for `true`.

pydantic's lax mode converts both ways; a caller who sends `"duration_s": true` has made a mistake
the broker should name, not a 1-second video. Text still converts (multipart fields are text).
Imports pydantic only, like `broker.schema`, which uses these.
"""

from __future__ import annotations

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
