"""Maintenance: vacuums queue tables whose dead rows pile up at the head of the queue."""

from __future__ import annotations

import logging

from . import queries
from .courier import Courier
from .naming import queue_table

log = logging.getLogger("pgcourier.worker")


class Vacuum:
    def __init__(self, courier: Courier, queues: list[str], *, dead_rows: int) -> None:
        self.courier = courier
        self.queues = queues
        self.dead_rows = dead_rows
        self._cannot: set[str] = set()

    async def run_once(self) -> None:
        for queue in self.queues:
            if queue not in self._cannot:
                await self._vacuum_if_needed(queue)

    async def _vacuum_if_needed(self, queue: str) -> None:
        table = queue_table(queue).as_string(None)
        async with self.courier.statement_connection() as conn:
            cur = await conn.execute(queries.query("queue_health"), {"table": table})
            row = await cur.fetchone()
            if row is None:
                return
            dead_rows, may_vacuum = row
            if not may_vacuum:
                self._cannot.add(queue)
                log.info("not the owner of %s: leaving its dead rows to autovacuum", table)
                return
            if dead_rows < self.dead_rows:
                return
            # VACUUM refuses to run inside a transaction block: this one is autocommit.
            await conn.execute(queries.queue_query("queue_vacuum", queue))
        log.info("vacuumed %s (%d dead rows)", table, dead_rows)
