"""Keeps links healthy, every `interval` seconds, in each database it is given:
as a sender, deletes the outbox rows receivers confirmed and tells them which ids
they may forget (pgcourier.link_prune); as a receiver, restarts a subscription left
without an apply worker (pgcourier.link_nudge: after a sender crash Postgres's
launcher may otherwise wait three minutes). Runs as the migrating role:
`python -m pgcourier keep-links URL...`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import psycopg

from . import links
from .loops import Backoff, forever

log = logging.getLogger("pgcourier.keeper")


class LinkKeeper:
    def __init__(
        self,
        conninfos: Sequence[str],
        *,
        interval: float = 1.0,
        stalled_s: float = 5.0,
    ) -> None:
        self.conninfos = list(conninfos)
        self.interval = interval
        self.stalled_s = stalled_s
        self.pruned = 0  # outbox rows deleted since start
        self.nudged = 0  # subscriptions restarted since start
        self.turns = 0

    async def keep_once(self, conn: psycopg.AsyncConnection) -> None:
        # Not `self.pruned += await ...`: that reads the count before the await, and
        # the other databases' turns, running meanwhile, would have their rows lost.
        pruned = await links.prune(conn)
        self.pruned += pruned
        for name in await links.nudge(conn, stalled_s=self.stalled_s):
            self.nudged += 1
            log.warning("subscription %s had no apply worker: restarted it", name)
        self.turns += 1

    async def _keep(self, url: str, stop: asyncio.Event) -> None:
        conn: psycopg.AsyncConnection | None = None

        async def step() -> None:
            nonlocal conn
            if conn is None or conn.closed:
                conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
            try:
                await self.keep_once(conn)
            except BaseException:
                with contextlib.suppress(psycopg.Error):
                    await conn.close()
                raise
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

        try:
            await forever(
                "keeping links",
                step,
                log=log,
                backoff=Backoff(base_s=0.2, max_s=5.0),
                until=stop.is_set,
            )
        finally:
            if conn is not None and not conn.closed:
                await conn.close()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        await asyncio.gather(*(self._keep(url, stop) for url in self.conninfos))
