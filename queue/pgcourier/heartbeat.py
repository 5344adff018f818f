"""Maintenance: the worker says in the database that it is alive (pgcourier.worker).

A health check in another process (a service's /health, `pgcourier workers`, a load
balancer through either) reads there whether a queue has a live consumer, when it
last claimed, and whether it hears notifications or only polls.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from . import store
from .courier import Courier


class Heartbeat:
    def __init__(
        self,
        courier: Courier,
        queues: list[str],
        *,
        name: str | None,
        status: Callable[[], tuple[datetime | None, bool, bool]],
        forget_after_s: float = 3600.0,
    ) -> None:
        """status() -> (last successful claim, LISTEN connected, every loop running)."""
        self.courier = courier
        self.worker_id = str(uuid.uuid4())
        self.queues = queues
        self.name = name
        self.status = status
        self.forget_after_s = forget_after_s
        self.started_at = datetime.now(UTC)

    async def beat(self) -> None:
        last_claim_at, listening, loops_alive = self.status()
        beat = store.Beat(
            worker_id=self.worker_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            name=self.name,
            queues=self.queues,
            started_at=self.started_at,
            last_claim_at=last_claim_at,
            listening=listening,
            loops_alive=loops_alive,
        )
        async with self.courier.statement_connection() as conn:
            await store.worker_beat(conn, beat, forget_after_s=self.forget_after_s)

    async def forget(self) -> None:
        async with self.courier.statement_connection() as conn:
            await store.worker_forget(conn, self.worker_id)
