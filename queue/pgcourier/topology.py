"""Queues and topics: creating, dropping and reading a queue's settings, binding a
queue to a topic. Statements on a connection the caller holds (Courier's methods of
the same names choose it); sending lives in courier.py."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from . import claim_function, queries
from .errors import QueueNotFoundError
from .naming import check_queue_name, check_topic_pattern


@dataclass(frozen=True, slots=True)
class QueueSettings:
    queue_name: str
    visibility_timeout_s: float
    max_attempts: int
    backoff_base_s: float
    backoff_max_s: float
    archive: bool
    archive_retention_s: float


async def queue_create(
    conn: psycopg.AsyncConnection,
    queue: str,
    *,
    visibility_timeout: float = 30,
    max_attempts: int = 5,
    backoff_base: float = 1,
    backoff_max: float = 300,
    archive: bool = False,
    archive_retention: float = 7 * 24 * 3600,
) -> None:
    """Creates the queue, or updates its settings; an existing pgmq queue is adopted."""
    check_queue_name(queue)
    await conn.execute(
        "SELECT pgcourier.queue_create(%s, %s, %s, %s, %s, %s, %s)",
        [
            queue,
            visibility_timeout,
            max_attempts,
            backoff_base,
            backoff_max,
            archive,
            archive_retention,
        ],
    )
    await claim_function.install(conn, queue)


async def queue_drop(conn: psycopg.AsyncConnection, queue: str) -> bool:
    check_queue_name(queue)
    await claim_function.drop(conn, queue)
    cur = await conn.execute("SELECT pgcourier.queue_drop(%s)", [queue])
    row = await cur.fetchone()
    return bool(row and row[0])


async def queue_settings(conn: psycopg.AsyncConnection, queue: str) -> QueueSettings:
    check_queue_name(queue)
    cur = await conn.execute(queries.query("queue_get"), {"queue_name": queue})
    row = await cur.fetchone()
    if row is None:
        raise QueueNotFoundError(queue)
    return QueueSettings(*row)


async def require_queue(conn: psycopg.AsyncConnection, queue: str) -> None:
    """Raises QueueNotFoundError unless the queue is here or declared remote."""
    cur = await conn.execute(
        "SELECT 1 FROM pgmq.meta WHERE queue_name = %(q)s"
        " UNION ALL SELECT 1 FROM pgcourier.remote_queue WHERE queue_name = %(q)s",
        {"q": queue},
    )
    if await cur.fetchone() is None:
        raise QueueNotFoundError(queue)


async def bind(conn: psycopg.AsyncConnection, pattern: str, queue: str, *, remote: bool) -> None:
    """Binds a queue to a topic pattern (pgmq's topic bindings: `*` one segment, `#`
    any); a remote queue's binding is pgcourier's own (migration 0004)."""
    check_topic_pattern(pattern)
    check_queue_name(queue)
    await require_queue(conn, queue)
    if remote:
        await conn.execute("SELECT pgcourier.bind_topic(%s, %s)", [pattern, queue])
    else:
        await conn.execute("SELECT pgmq.bind_topic(%s, %s)", [pattern, queue])
