"""The LISTEN connection: its own long-lived connection, never a pooled one.

A pooled connection may be handed to someone else between notifications, and a
PgBouncer in transaction mode drops LISTEN, so the pool can sit behind a bouncer
while this connection goes straight to Postgres (`listen_conninfo`). When the
connection drops, every queue is woken so it polls for what it may have missed,
and the connection is re-established with backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

import psycopg
from psycopg import sql

from . import metrics
from .naming import queue_channel

log = logging.getLogger(__name__)


class Listener:
    def __init__(
        self,
        conninfo: str,
        queues: Iterable[str],
        wake: Callable[[str], None],
        *,
        health_check_interval_s: float = 5.0,
        reconnect_max_s: float = 5.0,
    ) -> None:
        self.conninfo = conninfo
        self._channels = {queue_channel(q): q for q in queues}
        self._metrics = {q: metrics.for_queue(q) for q in self._channels.values()}
        self._wake = wake
        self._health_check_interval_s = health_check_interval_s
        self._reconnect_max_s = reconnect_max_s
        self.connected = asyncio.Event()
        self.connections_made = 0
        self.backend_pid: int | None = None

    def _wake_all(self) -> None:
        for queue in self._channels.values():
            self._wake(queue)

    async def run(self) -> None:
        """Listens until cancelled, reconnecting whenever the connection is lost."""
        delay = 0.05
        while True:
            made = self.connections_made
            try:
                await self._listen_once()
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                log.warning("LISTEN connection lost (%s); polling until it is back", exc)
            except Exception as exc:
                # Whatever it was, listening must go on: the claim loops poll meanwhile.
                log.error("LISTEN failed unexpectedly; polling until it is back", exc_info=exc)
            self.connected.clear()
            self.backend_pid = None
            self._wake_all()
            delay = 0.05 if self.connections_made != made else min(delay * 2, self._reconnect_max_s)
            await asyncio.sleep(delay)

    async def _listen_once(self) -> None:
        conn = await psycopg.AsyncConnection.connect(
            self.conninfo,
            autocommit=True,
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        async with conn:
            for channel in self._channels:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            self.backend_pid = conn.info.backend_pid
            self.connections_made += 1
            if self.connections_made > 1:
                metrics.listen_reconnected()
            self.connected.set()
            # Anything sent while we were not listening is found by this poll.
            self._wake_all()
            while True:
                async for notify in conn.notifies(timeout=self._health_check_interval_s):
                    queue = self._channels.get(notify.channel)
                    if queue is not None:
                        self._metrics[queue].woken(by_notify=True)
                        self._wake(queue)
                # A quiet spell: make sure the connection is still alive.
                await conn.execute("SELECT 1")
