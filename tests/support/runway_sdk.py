"""What the official `runwayml` SDK accepts per model, read from its request types (test-only).

`runwayml/types/image_to_video_create_params.py` and `text_to_video_create_params.py` declare one
TypedDict per model: `model` as a one-value Literal, `ratio` as a Literal, `duration` as a Literal
or a plain `int` whose docstring may give the range ("an integer from 2 to 10"). Field names are
the wire names (the `PropertyInfo(alias=...)` of snake_case keys).
"""

from __future__ import annotations

import ast
import inspect
import re
import typing
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal, get_args, get_origin, get_type_hints

import typing_extensions
from runwayml._utils import PropertyInfo
from runwayml.types import image_to_video_create_params, text_to_video_create_params

_RANGE = re.compile(r"from (\d+) to (\d+)")


@dataclass(frozen=True, slots=True)
class SdkModel:
    """One model's request type on one endpoint, by wire field name."""

    fields: frozenset[str]
    required: frozenset[str]
    ratios: frozenset[str]
    durations: frozenset[int] | None  # None: any int (the SDK gives no range)


def _unwrap(hint: Any) -> tuple[Any, bool, str | None]:
    """(base type, required, wire alias) of one TypedDict field hint."""
    required, alias = False, None
    while True:
        origin = get_origin(hint)
        if origin in (typing.Required, typing_extensions.Required):
            required, hint = True, get_args(hint)[0]
        elif origin is typing.Annotated:
            for meta in hint.__metadata__:
                if isinstance(meta, PropertyInfo) and meta.alias:
                    alias = meta.alias
            hint = get_args(hint)[0]
        else:
            return hint, required, alias


def _literals(hint: Any) -> list[Any]:
    """Every Literal value in `hint` (through Unions); `int` for a bare int."""
    if get_origin(hint) is Literal:
        return list(get_args(hint))
    if get_origin(hint) is typing.Union:
        return [value for arg in get_args(hint) for value in _literals(arg)]
    return [hint]


def _docstrings(module: ModuleType) -> dict[tuple[str, str], str]:
    """(class, field) -> the string literal under the field, as Stainless writes them."""
    tree = ast.parse(inspect.getsource(module))
    found: dict[tuple[str, str], str] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        for field, after in zip(node.body, node.body[1:], strict=False):
            if (
                isinstance(field, ast.AnnAssign)
                and isinstance(field.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                found[(node.name, field.target.id)] = after.value.value
    return found


def _durations(hint: Any, doc: str) -> frozenset[int] | None:
    values = _literals(hint)
    literal = frozenset(v for v in values if isinstance(v, int) and not isinstance(v, bool))
    if int not in values:
        return literal
    match = _RANGE.search(" ".join(doc.split()))
    return frozenset(range(int(match[1]), int(match[2]) + 1)) if match else None


def _models(module: ModuleType, union_name: str) -> dict[str, SdkModel]:
    docs = _docstrings(module)
    models: dict[str, SdkModel] = {}
    for cls in get_args(getattr(module, union_name)):
        fields: set[str] = set()
        required: set[str] = set()
        ratios: frozenset[str] = frozenset()
        durations: frozenset[int] | None = None
        name = ""
        for key, hint in get_type_hints(cls, include_extras=True).items():
            base, is_required, alias = _unwrap(hint)
            wire = alias or key
            fields.add(wire)
            if is_required:
                required.add(wire)
            if key == "model":
                name = _literals(base)[0]
            elif key == "ratio":
                ratios = frozenset(v for v in _literals(base) if isinstance(v, str))
            elif key == "duration":
                durations = _durations(base, docs.get((cls.__name__, key), ""))
        models[name] = SdkModel(frozenset(fields), frozenset(required), ratios, durations)
    return models


IMAGE_TO_VIDEO = _models(image_to_video_create_params, "ImageToVideoCreateParams")
TEXT_TO_VIDEO = _models(text_to_video_create_params, "TextToVideoCreateParams")
BY_ENDPOINT = {"image_to_video": IMAGE_TO_VIDEO, "text_to_video": TEXT_TO_VIDEO}


def problems(endpoint: str, body: dict[str, Any]) -> list[str]:
    """Why the SDK's request type for `endpoint` would not take `body` (empty: it would)."""
    model = BY_ENDPOINT[endpoint].get(body.get("model", ""))
    if model is None:
        return [f"model {body.get('model')!r} is not in the SDK's {endpoint} models"]
    found = [
        f"field {key!r} is not a field of {body['model']} {endpoint}"
        for key in body
        if key not in model.fields
    ]
    found += [f"required field {key!r} missing" for key in model.required if key not in body]
    if body.get("ratio") not in model.ratios:
        found.append(f"ratio {body.get('ratio')!r} not in {sorted(model.ratios)}")
    duration = body.get("duration")
    if duration is not None and model.durations is not None and duration not in model.durations:
        found.append(f"duration {duration!r} not in {sorted(model.durations)}")
    return found
