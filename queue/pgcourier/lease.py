"""Lease renewal: keeps the messages still being handled from coming back."""

from __future__ import annotations

import asyncio
import logging

from . import metrics, store
from .courier import Courier
from .loops import Backoff, forever
from .store import Lease

log = logging.getLogger("pgcourier.worker")


class LeaseRenewer:
    """Every third of the lease, renews the leases of a queue's messages in flight.

    A lease found lost (its message claimed again by someone else after the lease ran
    out, say while the database was unreachable) is dropped from the renewals; the
    handler's outcome will be fenced off when it is written.
    """

    def __init__(self, courier: Courier, queue: str, vt_s: float, inflight: dict[int, Lease]):
        self.courier = courier
        self.queue = queue
        self.vt_s = vt_s
        self.inflight = inflight
        self.lost = 0
        self.metrics = metrics.for_queue(queue)

    async def run(self) -> None:
        await forever(
            f"renewing leases on {self.queue}",
            self.renew_once,
            log=log,
            backoff=Backoff(base_s=0.05, max_s=self.vt_s / 3),
        )

    async def renew_once(self) -> None:
        await asyncio.sleep(max(self.vt_s / 3, 0.05))
        if not self.inflight:
            return
        leases = list(self.inflight.values())
        async with self.courier.statement_connection() as conn:
            renewed = await store.extend(conn, self.queue, leases, vt_s=self.vt_s)
        self.metrics.renewed(len(renewed))
        for lease in leases:
            if lease.msg_id not in renewed and self.inflight.get(lease.msg_id) == lease:
                del self.inflight[lease.msg_id]
                self.lost += 1
                log.warning(
                    "lease of msg %s on %s was lost (claimed again or deleted elsewhere); "
                    "its handler's outcome will not be written",
                    lease.msg_id,
                    self.queue,
                )
