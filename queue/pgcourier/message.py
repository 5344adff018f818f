"""The message envelope: payload plus headers naming id, type and lineage."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .errors import InvalidMessageError, PayloadTooLargeError

# Header keys. x-pgmq-group is pgmq's own FIFO group header, so ordering keys mean
# the same thing to pgmq's read_grouped functions.
MESSAGE_ID = "message_id"
TYPE = "type"
CORRELATION_ID = "correlation_id"
CAUSATION_ID = "causation_id"
SENT_AT = "sent_at"
IDEMPOTENCY_KEY = "idempotency_key"
ORDERING_KEY = "x-pgmq-group"
ERRORS = "pgcourier_errors"

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
_RESERVED = {MESSAGE_ID, SENT_AT, ERRORS}


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message about to be sent: its encoded payload, headers and delay."""

    payload: str
    headers: str
    delay_s: float
    message_id: str


def encode_payload(payload: Any, *, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> str:
    try:
        text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidMessageError(f"payload is not JSON-serialisable: {exc}") from None
    size = len(text.encode())
    if size > max_bytes:
        raise PayloadTooLargeError(f"payload is {size} bytes, over the limit of {max_bytes} bytes")
    return text


def check_delay(delay: float) -> float:
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not math.isfinite(delay):
        raise InvalidMessageError(f"delay must be a finite number of seconds, not {delay!r}")
    if delay < 0:
        raise InvalidMessageError(f"delay must not be negative, got {delay}")
    return float(delay)


def build_outgoing(payload: Any, **options: Any) -> Outgoing:
    """Validates and encodes one message; raises before anything is written."""
    return build_outgoing_batch([payload], **options)[0]


def build_outgoing_batch(
    payloads: Sequence[Any],
    *,
    type: str | None = None,
    delay: float = 0,
    headers: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    ordering_key: str | None = None,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> list[Outgoing]:
    """Validates and encodes messages sharing their options; raises before anything is written.

    The options are checked once and the envelope's common part built once, so a
    batch costs one payload encoding, one id and one header encoding per message.
    """
    delay_s = check_delay(delay)
    extra = dict(headers or {})
    clash = _RESERVED.intersection(extra)
    if clash:
        raise InvalidMessageError(f"headers {sorted(clash)} are set by pgcourier")
    for name, value in (
        ("type", type),
        ("idempotency_key", idempotency_key),
        ("ordering_key", ordering_key),
        ("correlation_id", correlation_id),
        ("causation_id", causation_id),
    ):
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidMessageError(f"{name} must be a non-empty string, not {value!r}")
    common: dict[str, Any] = {**extra, SENT_AT: datetime.now(UTC).isoformat()}
    if type is not None:
        common[TYPE] = type
    if causation_id is not None:
        common[CAUSATION_ID] = causation_id
    if idempotency_key is not None:
        common[IDEMPOTENCY_KEY] = idempotency_key
    if ordering_key is not None:
        common[ORDERING_KEY] = ordering_key
    batch = []
    for payload in payloads:
        body = encode_payload(payload, max_bytes=max_payload_bytes)
        message_id = str(uuid.uuid4())
        envelope = {**common, MESSAGE_ID: message_id, CORRELATION_ID: correlation_id or message_id}
        try:
            header_text = json.dumps(envelope, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidMessageError(f"headers are not JSON-serialisable: {exc}") from None
        batch.append(Outgoing(body, header_text, delay_s, message_id))
    return batch


@dataclass(frozen=True, slots=True)
class Message:
    """A claimed message as a handler sees it."""

    queue: str
    msg_id: int
    attempt: int
    enqueued_at: datetime
    payload: Any
    headers: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """The envelope id; messages sent by other pgmq clients fall back to the queue row id."""
        return str(self.headers.get(MESSAGE_ID) or f"{self.queue}:{self.msg_id}")

    @property
    def type(self) -> str | None:
        return self.headers.get(TYPE)

    @property
    def correlation_id(self) -> str:
        return str(self.headers.get(CORRELATION_ID) or self.id)

    @property
    def causation_id(self) -> str | None:
        return self.headers.get(CAUSATION_ID)

    @property
    def ordering_key(self) -> str | None:
        return self.headers.get(ORDERING_KEY)

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Errors of earlier attempts, oldest first."""
        return list(self.headers.get(ERRORS) or [])
