"""The message envelope: payload plus headers naming id, type and lineage."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from .errors import InvalidMessageError, PayloadTooLargeError, UnreadableMessageError

# Header keys. The envelope's (message_id, type, correlation_id, causation_id,
# sent_at) are plain names other clients may read and write; x-pgmq-group is pgmq's
# own FIFO group header, so ordering keys mean the same thing to pgmq's read_grouped
# functions. What only pgcourier writes and acts on is namespaced, so that another
# client's headers never collide with it.
MESSAGE_ID = "message_id"
TYPE = "type"
CORRELATION_ID = "correlation_id"
CAUSATION_ID = "causation_id"
SENT_AT = "sent_at"
ORDERING_KEY = "x-pgmq-group"
IDEMPOTENCY_KEY = "x-pgcourier-idempotency-key"
ERRORS = "x-pgcourier-errors"

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
_RESERVED = {MESSAGE_ID, SENT_AT, ERRORS, IDEMPOTENCY_KEY}


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message about to be sent: its encoded payload, headers and delay."""

    payload: str
    headers: str
    delay_s: float
    message_id: str
    # Carries an idempotency key: sent with ON CONFLICT, whose speculative insertion
    # costs every row of a batch, so only where it can matter.
    idempotent: bool = False


# Dataclasses, datetimes and subclasses of the JSON types go to the standard library
# too, so that what is accepted, and how it is written, is what json.dumps does.
_STDLIB_TYPES_ONLY = (
    orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def encode_json(value: Any, *, what: str = "payload") -> bytes:
    """JSON as UTF-8 bytes. orjson does the work (~15x faster than the standard
    library, which a batch of 100 small messages would spend most of its time in);
    what it refuses or passes through (integers over 64 bits, non-string keys, see
    _STDLIB_TYPES_ONLY) goes through the standard library. NaN and infinities are rejected: JSON
    has no such numbers, and orjson would quietly write them as null."""
    try:
        data = orjson.dumps(value, option=_STDLIB_TYPES_ONLY)
    except TypeError:
        try:
            return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise InvalidMessageError(f"{what} is not JSON-serialisable: {exc}") from None
    if b"null" in data and _has_non_finite(value):
        raise InvalidMessageError(f"{what} is not JSON-serialisable: NaN or infinity")
    return data


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite(v) for v in value)
    return False


def encode_payload(payload: Any, *, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> str:
    data = encode_json(payload)
    if len(data) > max_bytes:
        raise PayloadTooLargeError(
            f"payload is {len(data)} bytes, over the limit of {max_bytes} bytes"
        )
    return data.decode()


# uuid4's variant nibble: 10xx in binary.
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def new_message_ids(count: int) -> list[str]:
    """Random (version 4) UUIDs as strings, from one read of the system's random source:
    `str(uuid.uuid4())` per message costs more than encoding the message."""
    raw = os.urandom(16 * count).hex()
    ids = []
    for i in range(0, 32 * count, 32):
        h = raw[i : i + 32]
        ids.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}")
    return ids


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
    common.pop(CORRELATION_ID, None)
    # The envelope is the common part, encoded once, plus each message's id: ids are
    # hex and dashes, so they are spliced in without escaping.
    head = encode_json(common, what="headers").decode()[:-1] + ',"message_id":"'
    shared_correlation = None
    if correlation_id is not None:
        shared_correlation = encode_json(correlation_id).decode()
    batch = []
    for payload, message_id in zip(payloads, new_message_ids(len(payloads)), strict=True):
        body = encode_payload(payload, max_bytes=max_payload_bytes)
        correlation = shared_correlation or f'"{message_id}"'
        header_text = f'{head}{message_id}","correlation_id":{correlation}}}'
        batch.append(Outgoing(body, header_text, delay_s, message_id, idempotency_key is not None))
    return batch


@dataclass(frozen=True, slots=True)
class Message:
    """A claimed message as a handler sees it.

    attempt: pgcourier's attempts at it, this one included (1 + the failures it
    recorded); reads by other pgmq clients do not count. read_ct is pgmq's count of
    every read, which fences this claim's acknowledgement. sender: the database role
    that inserted it, stamped by Postgres (None for messages queued before senders
    were recorded).
    """

    queue: str
    msg_id: int
    attempt: int
    enqueued_at: datetime
    payload: Any
    headers: dict[str, Any] = field(default_factory=dict)
    read_ct: int = 1
    sender: str | None = None

    @property
    def id(self) -> str:
        """The envelope id. A message without one (sent by another pgmq client) is named by
        its queue, row id and enqueue time: msg_ids start again when a queue is dropped
        and created again, and such a message must not look handled already."""
        value = self.headers.get(MESSAGE_ID)
        if isinstance(value, str) and value:
            return value
        return f"{self.queue}:{self.msg_id}:{self.enqueued_at.timestamp():.6f}"

    @property
    def type(self) -> str | None:
        value = self.headers.get(TYPE)
        return value if isinstance(value, str) else None

    @property
    def correlation_id(self) -> str:
        value = self.headers.get(CORRELATION_ID)
        return value if isinstance(value, str) and value else self.id

    @property
    def causation_id(self) -> str | None:
        value = self.headers.get(CAUSATION_ID)
        return value if isinstance(value, str) else None

    @property
    def ordering_key(self) -> str | None:
        value = self.headers.get(ORDERING_KEY)
        return value if isinstance(value, str) else None

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Errors of earlier attempts, oldest first."""
        return _error_history(self.headers)


def _error_history(headers: dict[str, Any]) -> list[dict[str, Any]]:
    value = headers.get(ERRORS)
    return [e for e in value if isinstance(e, dict)] if isinstance(value, list) else []


def _decode(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        # What orjson refuses (numbers beyond a double's range) the standard library
        # still reads, as other clients may legally have written it.
        try:
            return json.loads(text)
        except ValueError as exc:
            raise UnreadableMessageError(f"{what} is not readable JSON: {exc}") from None


def decode_claimed(
    queue: str,
    msg_id: int,
    read_ct: int,
    enqueued_at: datetime,
    payload_text: str | None,
    headers_text: str | None,
    sender: str | None = None,
) -> Message:
    """A claimed row as a Message; raises UnreadableMessageError for what is no envelope:
    headers that are not a JSON object (other pgmq clients may send any JSON there),
    or JSON that cannot be decoded."""
    # The common case first, in as few calls as possible: this runs for every message.
    try:
        headers = {} if headers_text is None else orjson.loads(headers_text)
        payload = None if payload_text is None else orjson.loads(payload_text)
    except orjson.JSONDecodeError:
        headers = _decode(headers_text, "headers")
        if headers is None:
            headers = {}
        payload = _decode(payload_text, "payload")
    if type(headers) is not dict:
        if headers is None:  # the JSON null
            headers = {}
        elif not isinstance(headers, dict):
            raise UnreadableMessageError(
                f"headers must be a JSON object, got {type(headers).__name__}: "
                f"{headers_text!r:.200}"
            )
    attempt = 1 if ERRORS not in headers else len(_error_history(headers)) + 1
    return Message(queue, msg_id, attempt, enqueued_at, payload, headers, read_ct, sender)
