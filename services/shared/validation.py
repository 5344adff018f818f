"""Declarative request schemas: one description serves validation and /openapi.json."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


class ValidationError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


_JSON_TYPES = {str: "string", int: "integer", bool: "boolean", list: "array", dict: "object"}

# What a request may carry at all, whatever its schema says: an integer past a bigint
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


def check_values(data: Any, path: str = "") -> None:
    """Every string (keys too) storable and every number within a bigint; ValidationError
    naming the first value that is not. (Nesting is bounded before parsing: see
    services.shared.http.parse_json.)"""
    where = path or "body"
    if isinstance(data, str):
        if (problem := text_problem(data)) is not None:
            raise ValidationError(where, problem)
    elif isinstance(data, int) and not isinstance(data, bool):
        if not INT_MIN <= data <= INT_MAX:
            raise ValidationError(where, "is too large a number")
    elif isinstance(data, float):
        # parse_json turns an integer too long to convert into inf, as json turns 1e400.
        if data in (math.inf, -math.inf):
            raise ValidationError(where, "is too large a number")
        if math.isnan(data):
            raise ValidationError(where, "must be a finite number")
    elif isinstance(data, dict):
        for key, value in data.items():
            if (problem := text_problem(key)) is not None:
                raise ValidationError(where, f"has a key that {problem}")
            check_values(value, _join(path, key))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            check_values(item, f"{where}[{i}]")


@dataclass(frozen=True)
class Field:
    name: str
    type: type[Any]
    required: bool = True
    minimum: int | None = None
    maximum: int | None = None
    min_length: int | None = None
    max_length: int | None = None
    items: Schema | None = None  # for lists of objects
    choices: tuple[str, ...] | None = None

    def check(self, value: Any, path: str) -> Any:
        # bool is an int in Python; JSON true is not a number.
        if not isinstance(value, self.type) or (self.type is int and isinstance(value, bool)):
            raise ValidationError(path, f"must be {_JSON_TYPES[self.type]}")
        if self.minimum is not None and value < self.minimum:
            raise ValidationError(path, f"must be at least {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise ValidationError(path, f"must be at most {self.maximum}")
        if self.min_length is not None and len(value) < self.min_length:
            raise ValidationError(path, f"must have at least {self.min_length} items/characters")
        if self.max_length is not None and len(value) > self.max_length:
            raise ValidationError(path, f"must have at most {self.max_length} items/characters")
        if self.choices is not None and value not in self.choices:
            raise ValidationError(path, f"must be one of {', '.join(self.choices)}")
        if self.items is not None:
            return [self.items.validate(item, f"{path}[{i}]") for i, item in enumerate(value)]
        return value

    def openapi(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"type": _JSON_TYPES[self.type]}
        for key, value in (
            ("minimum", self.minimum),
            ("maximum", self.maximum),
            ("minLength" if self.type is str else "minItems", self.min_length),
            ("maxLength" if self.type is str else "maxItems", self.max_length),
        ):
            if value is not None:
                spec[key] = value
        if self.choices:
            spec["enum"] = list(self.choices)
        if self.items is not None:
            spec["items"] = self.items.openapi()
        return spec


@dataclass(frozen=True)
class Schema:
    fields: tuple[Field, ...]
    partial: bool = field(default=False)  # every field optional (PATCH)

    def validate(self, data: Any, path: str = "") -> dict[str, Any]:
        if not isinstance(data, dict):
            raise ValidationError(path or "body", "must be a JSON object")
        known = {f.name for f in self.fields}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValidationError(_join(path, unknown[0]), "is not a known field")
        result: dict[str, Any] = {}
        for f in self.fields:
            name = _join(path, f.name)
            if f.name not in data:
                if f.required and not self.partial:
                    raise ValidationError(name, "is required")
                continue
            result[f.name] = f.check(data[f.name], name)
        if self.partial and not result:
            raise ValidationError(path or "body", "must set at least one field")
        return result

    def openapi(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "type": "object",
            "properties": {f.name: f.openapi() for f in self.fields},
            "additionalProperties": False,
        }
        required = [f.name for f in self.fields if f.required and not self.partial]
        if required:
            spec["required"] = required
        return spec


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
