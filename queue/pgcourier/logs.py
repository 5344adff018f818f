"""Structured log lines: one per event, as readable text or as JSON.

pgcourier logs a message's events with its fields in `extra` (see message_fields):
queue, msg_id, message_id, type, correlation_id and attempt. The formatters here put
them on the line: TextFormatter as `key=value` after the message, JsonFormatter as
the keys of one JSON object per line (with the error and traceback, if any, in
`error` and `traceback`, and the current trace and span ids when a span is active).

configure() sets up the root logger for a process: JSON when PGCOURIER_LOG_FORMAT=json
(or format="json"), text otherwise; PGCOURIER_LOG_LEVEL sets the level (INFO).
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from . import tracing

if TYPE_CHECKING:
    from .message import Message

# The fields of a message's events, in the order text lines show them.
FIELDS = ("queue", "msg_id", "message_id", "type", "correlation_id", "attempt", "error")
# Every attribute a LogRecord has of its own: anything else on a record came from `extra`.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def message_fields(message: Message, **more: Any) -> dict[str, Any]:
    """The `extra` of a log call about one message."""
    return {
        "queue": message.queue,
        "msg_id": message.msg_id,
        "message_id": message.id,
        "type": message.type,
        "correlation_id": message.correlation_id,
        "attempt": message.attempt,
        **more,
    }


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and v is not None}


class TextFormatter(logging.Formatter):
    """`time instance LEVEL message key=value ...`, for people reading a terminal."""

    def __init__(self, *, instance: str | None = None) -> None:
        prefix = f"%(asctime)s {instance} " if instance else "%(asctime)s "
        super().__init__(prefix + "%(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if not extras:
            return line
        ordered = [k for k in FIELDS if k in extras] + sorted(k for k in extras if k not in FIELDS)
        pairs = " ".join(f"{k}={_text(extras[k])}" for k in ordered)
        head, sep, rest = line.partition("\n")  # a traceback stays below the line
        return f"{head} {pairs}{sep}{rest}"


def _text(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n'):
        return orjson.dumps(text).decode()
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the event's fields."""

    def __init__(self, *, instance: str | None = None) -> None:
        super().__init__()
        self.instance = instance

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.instance:
            entry["instance"] = self.instance
        entry.update(_extras(record))
        ids = tracing.current_ids()
        if ids is not None:
            entry["trace_id"], entry["span_id"] = ids
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            entry.setdefault("error", f"{type(exc).__name__}: {exc}")
            entry["traceback"] = "".join(traceback.format_exception(*record.exc_info))
        return orjson.dumps(entry, default=str).decode()


def formatter(*, format: str | None = None, instance: str | None = None) -> logging.Formatter:
    """JsonFormatter for "json", TextFormatter otherwise; None reads PGCOURIER_LOG_FORMAT."""
    chosen = (format or os.environ.get("PGCOURIER_LOG_FORMAT") or "text").lower()
    if chosen == "json":
        return JsonFormatter(instance=instance)
    return TextFormatter(instance=instance)


def configure(
    *,
    format: str | None = None,
    level: int | str | None = None,
    instance: str | None = None,
) -> logging.Handler:
    """Sends the root logger's lines to stderr, one per event; replaces its handlers.

    format: "json" or "text" (None: PGCOURIER_LOG_FORMAT, else text). level: None reads
    PGCOURIER_LOG_LEVEL, else INFO. instance: a name for the process on every line.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(format=format, instance=instance))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level or os.environ.get("PGCOURIER_LOG_LEVEL", "INFO").upper())
    return handler
