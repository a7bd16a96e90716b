"""Request-body pieces both APIs share: a strict base model that refuses lone surrogates, and the Bytes field type.

A size is published in OpenAPI as what the server really takes: an integer of bytes or a size string (SIZE_PATTERN).
"""

from __future__ import annotations

import math
import types
import typing
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

from headroom.sizes import SIZE_HELP, SIZE_PATTERN, parse_size

MAX_BYTES = 2**50  # 1 PiB: anything larger is a typo, not a request
MAX_DEPTH = 64  # JSON nesting a body or batch line may have


def find_surrogate(value: Any) -> str | None:
    """The path (e.g. 'labels.team' or 'messages[0].content') of the first string holding a lone surrogate, else None.

    JSON's "\\ud800" escape decodes to a str that cannot be encoded as UTF-8: SQLite and the JSON encoder then fail.
    """
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _has_surrogate(item):
                return path or "the value"
        elif isinstance(item, dict):
            for key, sub in item.items():
                name = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and not key.isascii() and _has_surrogate(key):
                    return (path + "." if path else "") + "<a key>"
                stack.append((name, sub))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", sub) for i, sub in enumerate(item))
    return None


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def nesting_depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How deep lists and objects nest in `value`, counted up to `limit + 1` (iterative: any depth is safe)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((sub, depth) for sub in (item.values() if isinstance(item, dict) else item))
    return deepest


class Body(BaseModel):
    """Base of every request body: unknown fields and lone surrogates anywhere in it are 422s naming the field.

    Strict: JSON types are taken as published (true is no number, "5" is no integer), as the OpenAPI schema says.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        where = find_surrogate(data)
        if where is not None:
            raise ValueError(
                f"{where}: holds a lone UTF-16 surrogate (such as \\ud800), which is no text; send valid Unicode"
            )
        return _whole_numbers(cls, data)


def _whole_numbers(model: type[BaseModel], data: Any) -> Any:
    """JSON Schema's integer includes 2.0: a whole, finite float sent for an integer field is taken as that integer
    (fractions, NaN and inf still get the strict 422)."""
    if not isinstance(data, dict):
        return data
    fixed = None
    for name, field in model.model_fields.items():
        value = data.get(field.alias or name)
        if isinstance(value, float) and math.isfinite(value) and value.is_integer() and _takes_int(field.annotation):
            fixed = fixed if fixed is not None else dict(data)
            fixed[field.alias or name] = int(value)
    return data if fixed is None else fixed


def _takes_int(annotation: Any) -> bool:
    """int, or int | None: a field whose published type is integer."""
    return annotation is int or (
        typing.get_origin(annotation) in (typing.Union, types.UnionType)
        and int in typing.get_args(annotation)
        and float not in typing.get_args(annotation)
    )


def _size_value(value: Any) -> Any:
    """Bytes from an int, a whole float (1e9) or a size string; ValueError for true/false, inf, NaN and fractions."""
    if isinstance(value, bool):
        raise ValueError(f"expected bytes or {SIZE_HELP}, got {str(value).lower()}")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise ValueError(f"expected a whole number of bytes or {SIZE_HELP}, got {value}")
        return int(value)
    if isinstance(value, str):
        return parse_size(value)
    return value


SIZE_SCHEMA = {
    "anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_BYTES}, {"type": "string", "pattern": SIZE_PATTERN}],
    "description": f"bytes (at most 1 PiB), or {SIZE_HELP}",
}

Bytes = Annotated[int, BeforeValidator(_size_value), Field(ge=0, le=MAX_BYTES), WithJsonSchema(SIZE_SCHEMA)]
