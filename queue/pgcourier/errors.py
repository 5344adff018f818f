"""One root exception, one class per cause. Driver errors are wrapped at the boundary."""

from __future__ import annotations


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


class NoHandlerError(PgCourierError):
    """A claimed message has no handler registered for its queue and type."""


class RejectMessage(PgCourierError):
    """Raised by a handler for a message that no retry can fix (malformed, say):
    it goes to the dead letters at once instead of after max_attempts."""


class DatabaseError(PgCourierError):
    """The database refused or failed an operation; the driver's error is the __cause__."""


class MigrationError(DatabaseError):
    """Applying the schema failed."""
