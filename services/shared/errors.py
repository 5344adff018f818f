"""The error an HTTP handler raises to answer with a 4xx JSON body."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldError:
    """One input at fault: field is its path (lines[0].quantity, limit, Idempotency-Key)."""

    field: str
    message: str


class HTTPError(Exception):
    """status with body {"error", "message", "field"?, "errors"?}.

    An error about input names every field at fault in errors; field and message repeat
    the first of them, as they did before errors was added, so older clients still work.
    """

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        *,
        field: str | None = None,
        errors: Sequence[FieldError] = (),
    ):
        super().__init__(message)
        self.status, self.error, self.message, self.field = status, error, message, field
        if field is not None and not errors:
            errors = (FieldError(field, message),)
        self.errors = tuple(errors)

    @classmethod
    def invalid(cls, errors: Sequence[FieldError]) -> HTTPError:
        """422 validation_error naming every field in errors (at least one)."""
        first = errors[0]
        return cls(422, "validation_error", first.message, field=first.field, errors=errors)
