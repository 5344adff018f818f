"""One root exception, one class per cause. Driver errors are wrapped at the boundary."""

from __future__ import annotations

import psycopg


class PgCourierError(Exception):
    """Root of every error pgcourier raises."""


class ConfigurationError(PgCourierError):
    """A setting is missing or invalid."""


class InvalidNameError(PgCourierError, ValueError):
    """A queue or topic name does not follow the naming rules."""


class InvalidMessageError(PgCourierError, ValueError):
    """A payload or send option is unusable: not JSON, too large, negative delay..."""


class PayloadTooLargeError(InvalidMessageError):
    """The serialised payload is over the configured size limit."""


class QueueNotFoundError(PgCourierError, LookupError):
    """The named queue does not exist."""

    def __init__(self, queue: str) -> None:
        super().__init__(f"queue {queue!r} does not exist")
        self.queue = queue


class RejectMessage(PgCourierError):
    """Raised by a handler for a message that no retry can fix (malformed, say):
    it goes to the dead letters at once instead of after max_attempts."""


class NoHandlerError(RejectMessage):
    """A claimed message has no handler registered for its queue and type (and no
    catch-all): dead-lettered at once, since retrying cannot find one."""


class UnreadableMessageError(RejectMessage):
    """A claimed message is no envelope pgcourier can read (headers not a JSON object,
    JSON its decoder refuses): dead-lettered at once with the reason."""


class ForbiddenSenderError(RejectMessage):
    """A message from a database role its route does not accept: dead-lettered at once
    and never handled (another service forging a message, say)."""


class WorkerCrashedError(PgCourierError):
    """One of a worker's loops ended without stop() being called: the worker can no
    longer consume, and says so instead of living on."""


class DatabaseError(PgCourierError):
    """The database refused or failed an operation; the driver's error is the __cause__."""


class MigrationError(DatabaseError):
    """Applying the schema failed."""


def wrap_driver_error(exc: psycopg.Error, queue: str | None = None) -> PgCourierError:
    """The boundary where driver errors become pgcourier's."""
    if queue is not None and isinstance(exc, psycopg.errors.UndefinedTable):
        return QueueNotFoundError(queue)
    return DatabaseError(str(exc).strip())
