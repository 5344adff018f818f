"""The shared pieces of the services' typed HTTP contracts.

Each service declares its request bodies, query parameters and responses in its own
models.py from these bases and types; services.shared.validation turns input into them
(or into a 422 naming every field at fault), services.shared.openapi documents them.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError


class RequestBody(BaseModel):
    """A JSON request body: exact JSON types (no "2" for 2, 1.0 for 1 or true for 1) and
    no field that is not declared (a typo must not be silently ignored)."""

    model_config = ConfigDict(strict=True, extra="forbid")


class Query(BaseModel):
    """Query parameters, each converted from text by its type (see query_int); others are
    ignored, as a cache-busting parameter should be."""

    model_config = ConfigDict(extra="ignore")


class ResponseBody(BaseModel):
    """A JSON response. Built from database rows: columns not declared are left out, so
    nothing leaves that the contract does not name."""

    model_config = ConfigDict(extra="ignore")


def omitted(*, description: str | None = None) -> Any:
    """The default of a field that may be absent but is never null (a PATCH field a
    client leaves out; an error's field). Documented without a default: null is not
    one of its values."""
    return Field(
        default=None,
        description=description,
        json_schema_extra=lambda schema: schema.pop("default", None),
    )


# The form OpenAPI's format "uuid" means (RFC 9562's 8-4-4-4-12 hex digits): not the
# braces, "urn:uuid:" prefix or bare 32 digits that uuid.UUID() also takes.
_UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")


def uuid_from_text(text: str) -> uuid.UUID | None:
    """The UUID text spells in the documented form; None for anything else."""
    return uuid.UUID(text) if _UUID_TEXT.fullmatch(text) else None


def _as_uuid(value: object) -> uuid.UUID:
    if isinstance(value, uuid.UUID):  # from a database row
        return value
    if isinstance(value, str) and (parsed := uuid_from_text(value)) is not None:
        return parsed
    raise PydanticCustomError("uuid_text", "must be a uuid")


# An id: in JSON a string of format uuid, in Python a uuid.UUID.
Id = Annotated[uuid.UUID, BeforeValidator(_as_uuid)]

# A moment, written as datetime.isoformat() (2026-01-02T03:04:05.123456+00:00), as the
# services always have.
Timestamp = Annotated[
    datetime,
    PlainSerializer(datetime.isoformat, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


def query_int(minimum: int, maximum: int) -> Any:
    """An integer query parameter within minimum..maximum, in ASCII digits only: not "²"
    or an Arabic-Indic one (digits to str.isdigit()), "+1", " 1", "1_000", nor 5,000 digits."""

    def parse(raw: object) -> object:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if (
            isinstance(raw, str)
            and raw.isascii()
            and raw.isdigit()
            and len(raw) <= len(str(maximum))
            and minimum <= int(raw) <= maximum
        ):
            return int(raw)
        raise PydanticCustomError(
            "integer_range",
            "must be an integer from {minimum} to {maximum}",
            {"minimum": minimum, "maximum": maximum},
        )

    return Annotated[int, Field(ge=minimum, le=maximum), BeforeValidator(parse)]


class FieldProblem(BaseModel):
    field: str = Field(description="the input at fault: lines[0].quantity, limit, a header")
    message: str


class ErrorBody(BaseModel):
    """Every error answer's body."""

    error: str = Field(
        description="what went wrong, for programs: validation_error, not_found, conflict, ..."
    )
    message: str = Field(description="what went wrong, for people")
    field: str | SkipJsonSchema[None] = omitted(
        description="the (first) input at fault, when the error is about input"
    )
    errors: list[FieldProblem] | SkipJsonSchema[None] = omitted(
        description="every input at fault, when the error is about input"
    )


class ConsumerHealth(BaseModel):
    queue: str
    live_workers: int = Field(description="workers of the service that beat within 15 s")
    last_claim_at: Timestamp | None
    oldest_ready_age_s: float | None = Field(
        description="seconds the oldest ready message has waited (null: none waits)"
    )


class Health(BaseModel):
    """/health's answer (built in services.shared.http; the tests hold it to this)."""

    status: Literal["ok", "degraded", "unavailable"]
    service: str
    consumer: ConsumerHealth | SkipJsonSchema[None] = omitted(
        description="the service's queue and its consumers (a service that consumes one)"
    )
    reasons: list[str] | SkipJsonSchema[None] = omitted(description="why it is degraded")
    error: str | SkipJsonSchema[None] = omitted(description="why the database is unavailable")
