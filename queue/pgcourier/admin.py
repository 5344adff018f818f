"""Inspection and repair of queues: counts, peeking, dead letters, purging.

Nothing here claims a message. Every method taking a queue checks its name and
that it exists, so a typo gives InvalidNameError or QueueNotFoundError, never an
empty answer. Like the Courier's methods, each takes an optional `conn`: given the
caller's connection, the work happens in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from . import queries, store
from .courier import Courier
from .errors import InvalidNameError
from .message import TYPE
from .naming import check_queue_name


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One row of the pgcourier.queues view.

    in_flight: claimed and not yet acknowledged; delayed: waiting for a send delay
    or a retry's backoff; dead: rows in pgcourier.dead_letter for the queue.
    """

    queue: str
    ready: int
    in_flight: int
    delayed: int
    dead: int
    oldest_ready_age_s: float | None


@dataclass(frozen=True, slots=True)
class PeekedMessage:
    """A message as it sits in its queue; visible_at is pgmq's vt."""

    msg_id: int
    read_ct: int
    enqueued_at: datetime
    visible_at: datetime
    payload: Any
    headers: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str | None:
        return self.headers.get(TYPE)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that used up its attempts, with every attempt's error, oldest first."""

    dead_letter_id: int
    msg_id: int
    payload: Any
    headers: dict[str, Any]
    attempts: int
    errors: list[dict[str, Any]]
    dead_at: datetime

    @property
    def type(self) -> str | None:
        return self.headers.get(TYPE)

    @property
    def last_error(self) -> str | None:
        if not self.errors:
            return None
        last = self.errors[-1]
        return str(last.get("error")) if isinstance(last, dict) else str(last)


def _check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, not {limit!r}")
    return limit


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker process as its last heartbeat described it (pgcourier.worker)."""

    name: str | None
    hostname: str
    pid: int
    queues: list[str]
    started_at: datetime
    beat_at: datetime
    last_claim_at: datetime | None
    listening: bool
    alive: bool


@dataclass(frozen=True, slots=True)
class QueuePrivilege:
    """What one role may do with one queue (read from the grants themselves)."""

    queue: str
    role: str
    may_send: bool
    may_consume: bool


class Admin:
    """Operator's view of the bus. `Admin(courier)`; the courier must be open."""

    def __init__(self, courier: Courier) -> None:
        self.courier = courier

    async def queue_stats(self, *, conn: psycopg.AsyncConnection | None = None) -> list[QueueStats]:
        """Counts for every queue, ordered by name."""
        async with self.courier.connection(conn) as c:
            cur = await c.execute(queries.query("queue_stats"))
            rows = await cur.fetchall()
        return [QueueStats(*row) for row in rows]

    async def peek(
        self, queue: str, *, limit: int = 10, conn: psycopg.AsyncConnection | None = None
    ) -> list[PeekedMessage]:
        """The oldest messages of the queue, whatever their state; claims nothing."""
        check_queue_name(queue)
        _check_limit(limit)
        async with self.courier.connection(conn, queue=queue) as c:
            await self.courier.require_queue(c, queue)
            cur = await c.execute(queries.queue_query("message_peek", queue), {"limit": limit})
            rows = await cur.fetchall()
        return [
            PeekedMessage(msg_id, read_ct, enqueued_at, vt, message, headers or {})
            for msg_id, read_ct, enqueued_at, vt, message, headers in rows
        ]

    async def dead_letters(
        self, queue: str, *, limit: int = 50, conn: psycopg.AsyncConnection | None = None
    ) -> list[DeadLetter]:
        """The queue's dead letters, oldest first."""
        check_queue_name(queue)
        _check_limit(limit)
        async with self.courier.connection(conn, queue=queue) as c:
            await self.courier.require_queue(c, queue)
            cur = await c.execute(
                queries.query("dead_letter_list"), {"queue_name": queue, "limit": limit}
            )
            rows = await cur.fetchall()
        return [
            DeadLetter(dl_id, msg_id, message, headers or {}, attempts, list(errors or []), dead_at)
            for dl_id, msg_id, message, headers, attempts, errors, dead_at in rows
        ]

    async def dead_letter_retry(
        self,
        queue: str,
        *,
        dead_letter_ids: Sequence[int] | None = None,
        conn: psycopg.AsyncConnection | None = None,
    ) -> int:
        """Puts dead letters back on the queue as fresh messages; returns how many.

        dead_letter_ids None means all of the queue's; ids of other queues' dead
        letters, or of none, are ignored.
        """
        check_queue_name(queue)
        ids = None if dead_letter_ids is None else [int(i) for i in dead_letter_ids]
        async with self.courier.connection(conn, queue=queue) as c:
            await self.courier.require_queue(c, queue)
            cur = await c.execute(
                queries.queue_query("dead_letter_retry", queue),
                {"queue_name": queue, "dead_letter_ids": ids},
            )
            return len(await cur.fetchall())

    async def queue_purge(self, queue: str, *, conn: psycopg.AsyncConnection | None = None) -> int:
        """Deletes every message of the queue, in flight ones too; returns how many.

        The queue's dead letters and archive are kept.
        """
        check_queue_name(queue)
        async with self.courier.connection(conn, queue=queue) as c:
            await self.courier.require_queue(c, queue)
            cur = await c.execute(queries.queue_query("queue_purge", queue))
            return max(cur.rowcount, 0)

    async def workers(
        self, *, alive_within_s: float = 15.0, conn: psycopg.AsyncConnection | None = None
    ) -> list[WorkerInfo]:
        """Worker processes that reported in; `alive` when their last beat is recent."""
        async with self.courier.connection(conn) as c:
            cur = await c.execute(
                queries.query("worker_list"), {"alive_within_s": alive_within_s, "now": None}
            )
            rows = await cur.fetchall()
        return [WorkerInfo(*row) for row in rows]

    async def consumer_health(
        self,
        queue: str,
        *,
        alive_within_s: float = 15.0,
        conn: psycopg.AsyncConnection | None = None,
    ) -> store.ConsumerHealth:
        """Whether a queue has live consumers, and how long its oldest ready message waited."""
        check_queue_name(queue)
        async with self.courier.connection(conn, queue=queue) as c:
            return await store.consumer_health(c, queue, alive_within_s=alive_within_s)

    # -- privileges (the queue's owner only) -----------------------------------

    async def grant_send(
        self, queue: str, role: str, *, conn: psycopg.AsyncConnection | None = None
    ) -> None:
        """Lets `role` send to the queue (insert only: it cannot read, claim or delete)."""
        await self._call("grant_send", queue, role, conn)

    async def grant_consume(
        self, queue: str, role: str, *, conn: psycopg.AsyncConnection | None = None
    ) -> None:
        """Lets `role` consume the queue: claim, acknowledge, retry, dead-letter, and see
        the queue's rows of the shared inbox and dead letters."""
        await self._call("grant_consume", queue, role, conn)

    async def revoke(
        self, queue: str, role: str, *, conn: psycopg.AsyncConnection | None = None
    ) -> None:
        """Takes back every right `role` has on the queue."""
        await self._call("revoke_queue", queue, role, conn)

    async def privileges(
        self, *, conn: psycopg.AsyncConnection | None = None
    ) -> list[QueuePrivilege]:
        async with self.courier.connection(conn) as c:
            cur = await c.execute(queries.query("queue_privileges"))
            return [QueuePrivilege(*row) for row in await cur.fetchall()]

    async def _call(
        self, function: str, queue: str, role: str, conn: psycopg.AsyncConnection | None
    ) -> None:
        check_queue_name(queue)
        if not isinstance(role, str) or not role:
            raise InvalidNameError(f"role must be a non-empty string, not {role!r}")
        statement = sql.SQL("SELECT {}(%s, %s)").format(sql.Identifier("pgcourier", function))
        async with self.courier.connection(conn, queue=queue) as c:
            await c.execute(statement, [queue, role])
