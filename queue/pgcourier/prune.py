"""Maintenance: drops archived messages and inbox records older than their retention."""

from __future__ import annotations

from . import queries
from .courier import Courier
from .topology import QueueSettings


class Prune:
    def __init__(
        self, courier: Courier, queues: list[QueueSettings], *, inbox_retention_s: float
    ) -> None:
        self.courier = courier
        self.queues = queues
        self.inbox_retention_s = inbox_retention_s

    async def run_once(self) -> None:
        async with self.courier.statement_connection() as conn:
            for settings in self.queues:
                if settings.archive:
                    await conn.execute(
                        queries.queue_query("archive_prune", settings.queue_name),
                        {"now": None, "retention_s": settings.archive_retention_s},
                    )
            await conn.execute(
                queries.query("inbox_prune"),
                {"now": None, "retention_s": self.inbox_retention_s},
            )
