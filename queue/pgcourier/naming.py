"""Validation of names that end up in table and channel identifiers."""

from __future__ import annotations

import re

from psycopg import sql

from .errors import InvalidNameError

# pgmq prefixes tables with q_/a_ and partitioned ones with template_pgmq_q_, which
# leaves 47 characters of Postgres's 63 for the queue name itself.
QUEUE_NAME_MAX = 47
_QUEUE_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_TOPIC_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_PATTERN_SEGMENT = re.compile(r"[A-Za-z0-9_-]+|\*|#")
TOPIC_MAX = 255


def check_queue_name(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidNameError(f"queue name must be a string, not {type(name).__name__}")
    if not name or len(name) > QUEUE_NAME_MAX or not _QUEUE_NAME.fullmatch(name):
        raise InvalidNameError(
            f"invalid queue name {name!r}: use 1-{QUEUE_NAME_MAX} lowercase letters, "
            "digits or underscores, not starting with a digit"
        )
    return name


def _check_dotted(kind: str, value: object, segment: re.Pattern[str]) -> str:
    if not isinstance(value, str):
        raise InvalidNameError(f"{kind} must be a string, not {type(value).__name__}")
    parts = value.split(".")
    if not value or len(value) > TOPIC_MAX or not all(segment.fullmatch(p) for p in parts):
        raise InvalidNameError(
            f"invalid {kind} {value!r}: use dot-separated segments of letters, digits, "
            f"_ or -, at most {TOPIC_MAX} characters"
        )
    return value


def check_topic(topic: object) -> str:
    return _check_dotted("topic", topic, _TOPIC_SEGMENT)


def check_topic_pattern(pattern: object) -> str:
    """A subscription pattern: `*` matches one segment, `#` zero or more."""
    return _check_dotted("topic pattern", pattern, _PATTERN_SEGMENT)


def queue_table(name: str) -> sql.Identifier:
    return sql.Identifier("pgmq", "q_" + check_queue_name(name))


def archive_table(name: str) -> sql.Identifier:
    return sql.Identifier("pgmq", "a_" + check_queue_name(name))


def queue_channel(name: str) -> str:
    """The NOTIFY channel the message_notify trigger signals for this queue."""
    return "pgcourier_" + check_queue_name(name)
