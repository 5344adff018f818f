"""pgcourier: Postgres-native messaging. Durable queues and topics on pgmq."""

from .admin import Admin, QueuePrivilege, WorkerInfo
from .context import Context, Handler
from .courier import Courier
from .errors import (
    ConfigurationError,
    DatabaseError,
    ForbiddenSenderError,
    InvalidMessageError,
    InvalidNameError,
    MigrationError,
    NoHandlerError,
    PayloadTooLargeError,
    PgCourierError,
    QueueNotFoundError,
    RejectMessage,
    UnreadableMessageError,
    WorkerCrashedError,
)
from .message import Message
from .migrations import apply_migrations, migrate, migrations_in
from .options import SendOneOptions, SendOptions
from .settings import Settings
from .topology import QueueSettings
from .worker import Worker

__all__ = [
    "Admin",
    "ConfigurationError",
    "Context",
    "Courier",
    "DatabaseError",
    "ForbiddenSenderError",
    "Handler",
    "InvalidMessageError",
    "InvalidNameError",
    "Message",
    "MigrationError",
    "NoHandlerError",
    "PayloadTooLargeError",
    "PgCourierError",
    "QueueNotFoundError",
    "QueuePrivilege",
    "QueueSettings",
    "RejectMessage",
    "SendOneOptions",
    "SendOptions",
    "Settings",
    "UnreadableMessageError",
    "Worker",
    "WorkerCrashedError",
    "WorkerInfo",
    "apply_migrations",
    "migrate",
    "migrations_in",
]
