"""The relay: carries one link's outbox rows from the sender to the receiver where
logical replication cannot be had (PostgreSQL 15, a managed service that refuses
subscriptions), exactly once by the receiver's deduplication.

Each turn locks a batch of the sender's rows, inserts them into the receiver's
outbox (its trigger delivers each once and keeps none) and commits there, then
deletes them from the sender and commits. A crash between the two commits leaves
the rows in the sender; the next turn delivers them again and the receiver skips
them. It wakes on the sender's NOTIFY (pgcourier_outbox) and polls as well.
One relay per link runs at a time (an advisory lock on the sender).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import psycopg

from . import links
from .loops import Backoff, forever

log = logging.getLogger("pgcourier.relay")

# How often the receiver is told which ids it may forget (see outbox.forget_below).
FORGET_EVERY_S = 5.0


class Relay:
    def __init__(
        self,
        sender_url: str,
        receiver_url: str,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
    ) -> None:
        self.sender_url = sender_url
        self.receiver_url = receiver_url
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.relayed = 0  # rows carried since start
        self.turns = 0
        self._sender: psycopg.AsyncConnection | None = None
        self._receiver: psycopg.AsyncConnection | None = None
        self._listener: psycopg.AsyncConnection | None = None
        self._target: str | None = None
        self._origin: str | None = None
        self._forgotten_at = 0.0
        self._wake = asyncio.Event()

    async def _connect(self) -> None:
        if self._receiver is None or self._receiver.closed:
            self._receiver = await psycopg.AsyncConnection.connect(self.receiver_url)
            await self._receiver.set_autocommit(True)
            self._target = await links.node_name(self._receiver)
        if self._sender is None or self._sender.closed:
            self._sender = await psycopg.AsyncConnection.connect(self.sender_url)
            await self._sender.set_autocommit(True)
            self._origin = await links.node_name(self._sender)
            # One relay per link: a second one waits here until the first is gone.
            await self._sender.execute(
                "SELECT pg_advisory_lock(hashtext('pgcourier_relay_' || %s))", [self._target]
            )

    async def run_once(self) -> int:
        """Carries one batch; returns how many rows (0 when none was waiting)."""
        await self._connect()
        sender, receiver, target = self._sender, self._receiver, self._target
        assert sender is not None and receiver is not None and target is not None
        async with sender.transaction():
            rows = await links.fetch_outbox(sender, target, limit=self.batch_size, lock=True)
            if rows:
                async with receiver.transaction():
                    await links.deliver_rows(receiver, rows)
                await sender.execute(
                    "DELETE FROM pgcourier.outbox WHERE id = ANY(%s)", [[r[0] for r in rows]]
                )
        self.turns += 1
        self.relayed += len(rows)
        if time.monotonic() - self._forgotten_at > FORGET_EVERY_S:
            await self._forget(sender, receiver, target)
        return len(rows)

    async def _forget(
        self, sender: psycopg.AsyncConnection, receiver: psycopg.AsyncConnection, target: str
    ) -> None:
        """Tells the receiver it may forget the ids it will never see again: those below
        the lowest the sender still keeps, of transactions over when that was read (as
        link_prune does for replication links)."""
        cur = await sender.execute(
            "SELECT coalesce((SELECT min(id) FROM pgcourier.outbox WHERE target = %s),"
            " pgcourier.outbox_next_id()), pg_snapshot_xmin(pg_current_snapshot())::text",
            [target],
        )
        row = await cur.fetchone()
        assert row is not None and self._origin is not None
        await receiver.execute(
            "INSERT INTO pgcourier.outbox (origin, target, forget_below, forget_xmin, id)"
            " VALUES (%s, %s, %s, %s::xid8, 0)",
            [self._origin, target, row[0], row[1]],
        )
        self._forgotten_at = time.monotonic()

    async def _listen(self, stop: asyncio.Event) -> None:
        async def step() -> None:
            conn = await psycopg.AsyncConnection.connect(self.sender_url, autocommit=True)
            self._listener = conn
            async with conn:
                await conn.execute("LISTEN pgcourier_outbox")
                self._wake.set()  # anything sent while not listening
                async for _ in conn.notifies():
                    self._wake.set()
                    if stop.is_set():
                        return

        await forever(
            "listening for outbox notifications",
            step,
            log=log,
            backoff=Backoff(base_s=0.1, max_s=5.0),
            until=stop.is_set,
        )

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Relays until `stop` is set (forever if None); errors are logged, then retried."""
        stop = stop or asyncio.Event()
        listener = asyncio.create_task(self._listen(stop))

        async def wake_on_stop() -> None:
            # Else a relay told to stop would wait out its poll interval first.
            await stop.wait()
            self._wake.set()

        stopper = asyncio.create_task(wake_on_stop())

        async def step() -> None:
            # Cleared first: a notification that comes while relaying is not lost.
            self._wake.clear()
            try:
                while await self.run_once() == self.batch_size:
                    pass
            except BaseException:
                await self.close()
                raise
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)

        try:
            await forever(
                "relaying",
                step,
                log=log,
                backoff=Backoff(base_s=0.1, max_s=max(self.poll_interval, 5.0)),
                until=stop.is_set,
            )
        finally:
            for task in (listener, stopper):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            await self.close()

    async def close(self) -> None:
        for conn in (self._sender, self._receiver, self._listener):
            if conn is not None and not conn.closed:
                with contextlib.suppress(psycopg.Error):
                    await conn.close()
        self._sender = self._receiver = self._listener = None
