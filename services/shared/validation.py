"""Input to typed models, or a 422 that names every field at fault at once."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeVar

import pydantic

from .errors import FieldError, HTTPError

M = TypeVar("M", bound=pydantic.BaseModel)

# What a request may carry at all, whatever its model says: an integer past a bigint
# is past every column of the shop.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


def text_problem(text: str) -> str | None:
    """Why Postgres would refuse the text (None: it would not).

    text columns cannot hold NUL, and a lone surrogate (JSON may spell one as
    "\\ud800") has no UTF-8 encoding: either would fail in the driver as a 500.
    """
    if "\x00" in text:
        return "must not contain NUL characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (no lone surrogates)"
    return None


def storage_problems(data: Any, path: str = "") -> list[FieldError]:
    """Every string (keys too) that Postgres could not store and every number past a
    bigint, wherever they are in data. (Nesting is bounded before parsing: see
    services.shared.http.parse_json.)"""
    where = path or "body"
    if isinstance(data, str):
        if (problem := text_problem(data)) is not None:
            return [FieldError(where, problem)]
    elif isinstance(data, int) and not isinstance(data, bool):
        if not INT_MIN <= data <= INT_MAX:
            return [FieldError(where, "is too large a number")]
    elif isinstance(data, float):
        # parse_json turns an integer too long to convert into inf, as json turns 1e400.
        if data in (math.inf, -math.inf):
            return [FieldError(where, "is too large a number")]
        if math.isnan(data):
            return [FieldError(where, "must be a finite number")]
    elif isinstance(data, dict):
        problems = []
        for key, value in data.items():
            if (problem := text_problem(key)) is not None:
                problems.append(FieldError(where, f"has a key that {problem}"))
            else:
                problems += storage_problems(value, _join(path, key))
        return problems
    elif isinstance(data, list):
        return [p for i, item in enumerate(data) for p in storage_problems(item, f"{where}[{i}]")]
    return []


def validated_body(model: type[M], data: Any) -> M:
    """data (parsed JSON) as model; HTTPError 422 listing every field at fault."""
    problems = storage_problems(data)
    try:
        result = model.model_validate(data)
    except pydantic.ValidationError as exc:
        # A field already refused for what it holds is not refused twice; nor is a field
        # whose name could not be stored (it was reported as its parent's key).
        named = {p.field for p in problems}
        problems += [
            e
            for e in field_errors(exc, root="body")
            if e.field not in named and text_problem(e.field) is None
        ]
        raise HTTPError.invalid(problems) from None
    if problems:
        raise HTTPError.invalid(problems)
    return result


def validated_query(model: type[M], params: Mapping[str, str]) -> M:
    """The query parameters as model (their text is storable: the caller checked it)."""
    try:
        return model.model_validate(dict(params))
    except pydantic.ValidationError as exc:
        raise HTTPError.invalid(field_errors(exc, root="query")) from None


def field_errors(exc: pydantic.ValidationError, *, root: str) -> list[FieldError]:
    """Each of exc's errors as the field it names (root: the input as a whole) and a
    message in the services' words. The input itself is never repeated back: it may
    be a password."""
    return [
        FieldError(_location(e["loc"]) or root, _message(e))
        for e in exc.errors(include_url=False, include_input=False)
    ]


def _location(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path = f"{path}[{part}]" if isinstance(part, int) else _join(path, part)
    return path


_TYPES = {
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "bool_type": "must be a boolean",
    "bool_parsing": "must be a boolean",
    "list_type": "must be an array",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
    "missing": "is required",
    "extra_forbidden": "is not a known field",
}


def _message(error: Any) -> str:
    kind, ctx = error["type"], error.get("ctx", {})
    if kind in _TYPES:
        return _TYPES[kind]
    match kind:
        case "greater_than_equal":
            return f"must be at least {ctx['ge']}"
        case "less_than_equal":
            return f"must be at most {ctx['le']}"
        case "string_too_short" | "too_short" if ctx["min_length"] == 1:
            return "must not be empty"
        case "string_too_short":
            return f"must have at least {ctx['min_length']} characters"
        case "string_too_long":
            return f"must have at most {ctx['max_length']} characters"
        case "too_short":
            return f"must have at least {ctx['min_length']} items"
        case "too_long":
            return f"must have at most {ctx['max_length']} items"
        case "literal_error":
            return f"must be one of {ctx['expected']}"
    # The models' own checks (PydanticCustomError) speak the services' words already.
    return str(error["msg"])


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
