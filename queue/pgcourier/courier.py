"""The Courier: a connection pool plus sending, publishing and queue creation.

Every send takes an optional `conn`: given the caller's connection, the message is
written in the caller's transaction and exists if and only if that commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import psycopg
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from . import metrics, queries, topology, tracing
from .errors import ConfigurationError, DatabaseError, wrap_driver_error
from .message import DEFAULT_MAX_PAYLOAD_BYTES, Outgoing, build_outgoing, build_outgoing_batch
from .naming import check_queue_name, check_topic, check_topic_pattern
from .settings import Settings
from .topology import QueueSettings


class _Pool(AsyncConnectionPool):
    """A pool that, when a connection comes back broken, checks all its idle ones.

    After a database restart every idle connection is dead, and each would otherwise
    fail one request before the pool replaces it (services answered 503 for seconds
    after the database was back). Checking on every checkout would cost a round trip
    on the hot path; checking when one is found broken costs nothing until then.
    """

    _checking: asyncio.Task[None] | None = None

    async def putconn(self, conn: psycopg.AsyncConnection[Any]) -> None:
        broken = conn.broken
        await super().putconn(conn)
        if broken and (self._checking is None or self._checking.done()):
            self._checking = asyncio.create_task(self._check_quietly())

    async def _check_quietly(self) -> None:
        with contextlib.suppress(Exception):
            await self.check()


async def _configure_connection(conn: psycopg.AsyncConnection) -> None:
    # Claimed batches decode two jsonb values per message: orjson does it ~3x faster.
    set_json_loads(orjson.loads, conn)


# How long a process trusts its list of remote queues (pgcourier.remote_queue) before
# reading it again: a queue linked meanwhile is sent to locally (and refused, as
# missing) for at most this long.
REMOTE_QUEUES_TTL_S = 2.0


class Courier:
    """Entry point of the bus. Use as `async with Courier(url) as courier:`.

    A queue may live in this database or, once linked (python -m pgcourier link), in
    another: the same send then writes to pgcourier.outbox in the same transaction,
    and the link delivers it (see links.py).
    """

    def __init__(
        self,
        conninfo: str,
        *,
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        pool_timeout: float = 30.0,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        pool: AsyncConnectionPool | None = None,
    ) -> None:
        """pool_timeout: seconds a caller waits for a pooled connection before
        psycopg_pool.PoolTimeout (an HTTP service would rather answer 503 soon)."""
        self.conninfo = conninfo
        self.max_payload_bytes = max_payload_bytes
        self._own_pool = pool is None
        self.pool = pool or _Pool(
            conninfo,
            min_size=pool_min_size,
            max_size=pool_max_size,
            timeout=pool_timeout,
            open=False,
            configure=_configure_connection,
            name="pgcourier",
        )
        self._remote_queues: frozenset[str] = frozenset()
        self._remote_read_at = -REMOTE_QUEUES_TTL_S

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **options: Any) -> Courier:
        """A Courier as the settings say (Settings.from_env() when None): their
        database, pool sizes and payload limit; options: the rest of __init__'s."""
        settings = Settings.from_env() if settings is None else settings
        if settings.database_url is None:
            raise ConfigurationError(
                "no database given: set PGCOURIER_DATABASE_URL or DATABASE_URL"
            )
        return cls(
            settings.database_url,
            pool_min_size=settings.pool_min_size,
            pool_max_size=settings.pool_max_size,
            max_payload_bytes=settings.max_payload_bytes,
            **options,
        )

    async def open(self, *, timeout: float = 30.0) -> Courier:
        if self._own_pool:
            try:
                await self.pool.open(wait=True, timeout=timeout)
            except PoolTimeout as exc:
                await self.pool.close()
                raise DatabaseError(
                    f"could not connect to the database within {timeout}s: {exc}"
                ) from exc
        return self

    async def close(self) -> None:
        if self._own_pool:
            await self.pool.close()

    async def __aenter__(self) -> Courier:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def connection(
        self, conn: psycopg.AsyncConnection | None = None, *, queue: str | None = None
    ) -> AsyncIterator[psycopg.AsyncConnection]:
        """The caller's connection as is, or a pooled one committed on success."""
        try:
            if conn is not None:
                yield conn
            else:
                async with self.pool.connection() as pooled:
                    yield pooled
        except psycopg.Error as exc:
            raise wrap_driver_error(exc, queue) from exc

    @contextlib.asynccontextmanager
    async def statement_connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A pooled connection in autocommit mode, for work that is one statement (or a
        few independent ones): each commits on its own, without the BEGIN and COMMIT
        round trips that would otherwise triple the cost of a claim, an ack or a send."""
        async with self.pool.connection() as conn:
            if conn.autocommit:
                yield conn
                return
            await conn.set_autocommit(True)
            try:
                yield conn
            finally:
                # A broken connection is discarded by the pool whatever its mode.
                with contextlib.suppress(psycopg.Error):
                    await conn.set_autocommit(False)

    # -- queues and topics -------------------------------------------------

    async def queue_create(
        self,
        queue: str,
        *,
        visibility_timeout: float = 30,
        max_attempts: int = 5,
        backoff_base: float = 1,
        backoff_max: float = 300,
        archive: bool = False,
        archive_retention: float = 7 * 24 * 3600,
        conn: psycopg.AsyncConnection | None = None,
    ) -> None:
        """Creates the queue, or updates its settings; an existing pgmq queue is adopted."""
        check_queue_name(queue)
        async with self.connection(conn, queue=queue) as c:
            await topology.queue_create(
                c,
                queue,
                visibility_timeout=visibility_timeout,
                max_attempts=max_attempts,
                backoff_base=backoff_base,
                backoff_max=backoff_max,
                archive=archive,
                archive_retention=archive_retention,
            )

    async def queue_drop(self, queue: str, *, conn: psycopg.AsyncConnection | None = None) -> bool:
        check_queue_name(queue)
        async with self.connection(conn, queue=queue) as c:
            return await topology.queue_drop(c, queue)

    async def queue_settings(
        self, queue: str, *, conn: psycopg.AsyncConnection | None = None
    ) -> QueueSettings:
        check_queue_name(queue)
        async with self.connection(conn, queue=queue) as c:
            return await topology.queue_settings(c, queue)

    async def subscribe(
        self, pattern: str, queue: str, *, conn: psycopg.AsyncConnection | None = None
    ) -> None:
        """Binds a queue to a topic pattern (pgmq topic bindings: `*` one segment, `#` any)."""
        check_topic_pattern(pattern)
        check_queue_name(queue)
        async with self.connection(conn, queue=queue) as c:
            await topology.bind(c, pattern, queue, remote=queue in await self._remote(c))

    async def require_queue(self, conn: psycopg.AsyncConnection, queue: str) -> None:
        """Raises QueueNotFoundError unless the queue is here or declared remote."""
        await topology.require_queue(conn, queue)

    async def _remote(self, conn: psycopg.AsyncConnection) -> frozenset[str]:
        """The queues of other databases this one sends to (read at most every
        REMOTE_QUEUES_TTL_S, on the connection at hand: no second connection is taken
        while the caller holds one)."""
        if time.monotonic() - self._remote_read_at >= REMOTE_QUEUES_TTL_S:
            cur = await conn.execute("SELECT queue_name FROM pgcourier.remote_queue")
            self._remote_queues = frozenset(row[0] for row in await cur.fetchall())
            self._remote_read_at = time.monotonic()
        return self._remote_queues

    # -- sending -------------------------------------------------------------

    async def send(
        self,
        queue: str,
        payload: Any,
        *,
        type: str | None = None,
        delay: float = 0,
        headers: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        ordering_key: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        conn: psycopg.AsyncConnection | None = None,
    ) -> int | None:
        """Sends one message; returns its msg_id, or None when the idempotency key was taken."""
        with tracing.sending(queue) as context:
            outgoing = self._outgoing(
                payload,
                type=type,
                delay=delay,
                headers=tracing.with_context(headers, context),
                idempotency_key=idempotency_key,
                ordering_key=ordering_key,
                correlation_id=correlation_id,
                causation_id=causation_id,
            )
            ids = await self.send_outgoing(queue, [outgoing], conn=conn)
        return ids[0] if ids else None

    async def send_batch(
        self,
        queue: str,
        payloads: Sequence[Any],
        *,
        type: str | None = None,
        delay: float = 0,
        headers: dict[str, Any] | None = None,
        ordering_key: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        conn: psycopg.AsyncConnection | None = None,
    ) -> list[int]:
        """Sends many messages in one statement; returns their msg_ids in order."""
        with tracing.sending(queue, count=len(payloads)) as context:
            batch = build_outgoing_batch(
                payloads,
                type=type,
                delay=delay,
                headers=tracing.with_context(headers, context),
                ordering_key=ordering_key,
                correlation_id=correlation_id,
                causation_id=causation_id,
                max_payload_bytes=self.max_payload_bytes,
            )
            return await self.send_outgoing(queue, batch, conn=conn)

    async def publish(
        self,
        topic: str,
        payload: Any,
        *,
        type: str | None = None,
        delay: float = 0,
        headers: dict[str, Any] | None = None,
        ordering_key: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        conn: psycopg.AsyncConnection | None = None,
    ) -> list[str]:
        """Sends a copy to every queue subscribed to the topic; returns those queues.

        The copies share one message id, so each consumer's inbox sees one message.
        """
        check_topic(topic)
        with tracing.sending(topic) as context:
            outgoing = self._outgoing(
                payload,
                type=type or topic,
                delay=delay,
                headers=tracing.with_context(headers, context),
                ordering_key=ordering_key,
                correlation_id=correlation_id,
                causation_id=causation_id,
            )
            async with self.connection(conn) as c:
                cur = await c.execute(queries.query("topic_queues"), {"topic": topic})
                targets = [row[0] for row in await cur.fetchall()]
                for queue in targets:
                    await self._insert(c, queue, [outgoing])
        return targets

    def _outgoing(self, payload: Any, **options: Any) -> Outgoing:
        return build_outgoing(payload, max_payload_bytes=self.max_payload_bytes, **options)

    async def send_outgoing(
        self,
        queue: str,
        batch: Sequence[Outgoing],
        *,
        conn: psycopg.AsyncConnection | None = None,
    ) -> list[int]:
        check_queue_name(queue)
        if not batch:
            return []
        if conn is not None:
            return await self._insert(conn, queue, batch)
        try:
            async with self.statement_connection() as c:
                return await self._insert(c, queue, batch)
        except psycopg.Error as exc:
            raise wrap_driver_error(exc, queue) from exc

    async def _insert(
        self, conn: psycopg.AsyncConnection, queue: str, batch: Sequence[Outgoing]
    ) -> list[int]:
        """The msg_ids; for a remote queue, the outbox ids (its message ids are the
        receiver's, and a duplicate idempotency key is dropped there, on arrival)."""
        params = {
            "now": None,
            "messages": [o.payload for o in batch],
            "headers": [o.headers for o in batch],
            "delays": [o.delay_s for o in batch],
        }
        try:
            if queue in await self._remote(conn):
                cur = await conn.execute(queries.query("outbox_send"), {**params, "queue": queue})
            else:
                cur = await conn.execute(
                    queries.queue_query(
                        "message_send_idempotent"
                        if any(o.idempotent for o in batch)
                        else "message_send",
                        queue,
                    ),
                    params,
                )
            ids = [row[0] for row in await cur.fetchall()]
        except psycopg.Error as exc:
            raise wrap_driver_error(exc, queue) from exc
        metrics.sent(queue, len(ids))
        return ids
