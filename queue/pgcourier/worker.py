"""The Worker: routes messages of several queues to handlers, with bounded concurrency.

Woken by LISTEN/NOTIFY on its own connection, and polling every `poll_interval`
seconds whatever happens to notifications; a claim that comes back empty (another
worker was quicker) makes it sit out notifications for `empty_claim_backoff` seconds,
doubling while it keeps losing. `stop()` stops claiming, lets in-flight handlers
finish (up to `shutdown_timeout`) and acknowledges what they finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from . import queries
from .consumer import QueueConsumer
from .context import Handler, Route
from .courier import Courier
from .errors import ConfigurationError
from .listener import Listener
from .naming import check_queue_name, queue_table

log = logging.getLogger(__name__)


class Worker:
    def __init__(
        self,
        courier: Courier,
        *,
        concurrency: int = 50,
        batch_size: int = 50,
        poll_interval: float = 1.0,
        empty_claim_backoff: float = 0.002,
        listen: bool = True,
        listen_conninfo: str | None = None,
        shutdown_timeout: float = 30.0,
        inbox_retention: float = 7 * 24 * 3600,
        vacuum_dead_rows: int = 20_000,
        maintenance_interval: float = 2.0,
    ) -> None:
        if concurrency < 1 or batch_size < 1:
            raise ConfigurationError("concurrency and batch_size must be at least 1")
        if poll_interval <= 0:
            raise ConfigurationError("poll_interval must be positive")
        if empty_claim_backoff < 0:
            raise ConfigurationError("empty_claim_backoff must not be negative")
        self.courier = courier
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.empty_claim_backoff = empty_claim_backoff
        self.listen = listen
        self.listen_conninfo = listen_conninfo or courier.conninfo
        self.shutdown_timeout = shutdown_timeout
        self.inbox_retention = inbox_retention
        self.vacuum_dead_rows = vacuum_dead_rows
        self.maintenance_interval = maintenance_interval
        self._cannot_vacuum: set[str] = set()
        self.routes: dict[str, dict[str | None, Route]] = {}
        self.consumers: dict[str, QueueConsumer] = {}
        self.listener: Listener | None = None
        self.started = asyncio.Event()
        self._stop = asyncio.Event()
        self._free_slots = concurrency
        self._refill = max(1, min(batch_size, concurrency) // 2)
        self._slot_freed = asyncio.Event()

    # -- routing -------------------------------------------------------------

    def handle(
        self,
        queue: str,
        handler: Handler | None = None,
        *,
        type: str | None = None,
        transactional: bool = False,
    ) -> Callable[[Handler], Handler]:
        """Registers a handler for a queue, or for one message type on it.

        transactional: run the handler in one transaction with an inbox record of
        the message id and the acknowledgement, so its writes and sends (through
        `ctx.conn` / `ctx.send`) happen exactly once even if the message comes back.
        """
        check_queue_name(queue)

        def register(fn: Handler) -> Handler:
            routes = self.routes.setdefault(queue, {})
            if type in routes:
                raise ConfigurationError(f"a handler for {queue!r} type {type!r} already exists")
            routes[type] = Route(queue, fn, type, transactional)
            return fn

        if handler is not None:
            register(handler)
        return register

    # -- concurrency ---------------------------------------------------------

    def reserve_slots(self, wanted: int) -> int:
        """Grants up to `wanted` handler slots; none while handlers are running and fewer
        than a refill's worth are free, since claiming a few at a time costs a round
        trip each and busy queues would then never claim full batches."""
        free = self._free_slots
        if free < min(wanted, self._refill) and free < self.concurrency:
            return 0
        granted = min(wanted, free)
        self._free_slots -= granted
        return granted

    def release_slots(self, count: int) -> None:
        if count:
            self._free_slots += count
            self._slot_freed.set()

    async def wait_for_slots(self) -> None:
        """Returns once a refill's worth of slots is free, every slot is, or on stop()."""
        while not (
            self.stopping
            or self._free_slots >= self._refill
            or self._free_slots == self.concurrency
        ):
            self._slot_freed.clear()
            await self._slot_freed.wait()

    # -- lifecycle -----------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Stops claiming; `run()` returns once in-flight handlers are done."""
        self._stop.set()
        for consumer in self.consumers.values():
            consumer.wake.set()
        self._slot_freed.set()

    def _wake(self, queue: str) -> None:
        consumer = self.consumers.get(queue)
        if consumer is not None:
            consumer.wake.set()

    async def run(self) -> None:
        if not self.routes:
            raise ConfigurationError("no handlers registered")
        for queue, routes in self.routes.items():
            settings = await self.courier.queue_settings(queue)
            self.consumers[queue] = QueueConsumer(self, settings, routes)
        background: list[asyncio.Task[None]] = []
        claimers: list[asyncio.Task[None]] = []
        try:
            if self.listen:
                self.listener = Listener(self.listen_conninfo, self.consumers, self._wake)
                background.append(asyncio.create_task(self.listener.run()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.listener.connected.wait(), 5)
            for consumer in self.consumers.values():
                background.append(asyncio.create_task(consumer.flush_loop()))
                background.append(asyncio.create_task(consumer.renew_loop()))
                claimers.append(asyncio.create_task(consumer.claim_loop()))
            background.append(asyncio.create_task(self._maintenance_loop()))
            self.started.set()
            await self._stop.wait()
            await asyncio.gather(*claimers)
            await self._drain()
        finally:
            for task in claimers + background:
                task.cancel()
            await asyncio.gather(*claimers, *background, return_exceptions=True)

    async def _drain(self) -> None:
        tasks = [t for c in self.consumers.values() for t in c.handler_tasks]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.shutdown_timeout)
            for task in pending:
                task.cancel()
            if pending:
                log.warning(
                    "%d handlers still running after %ss were cancelled; their messages "
                    "come back when their leases run out",
                    len(pending),
                    self.shutdown_timeout,
                )
                await asyncio.gather(*pending, return_exceptions=True)
        for consumer in self.consumers.values():
            await consumer.flush()

    async def _maintenance_loop(self) -> None:
        """Vacuums queue tables whose dead rows pile up; prunes archives and the inbox."""
        last_prune = 0.0
        while True:
            try:
                for consumer in self.consumers.values():
                    await self._vacuum_if_needed(consumer.queue)
                if time.monotonic() - last_prune >= 60:
                    last_prune = time.monotonic()
                    await self._prune()
            except Exception as exc:
                log.warning("maintenance failed: %s", exc)
            await asyncio.sleep(self.maintenance_interval)

    async def _vacuum_if_needed(self, queue: str) -> None:
        if queue in self._cannot_vacuum:
            return
        table = queue_table(queue).as_string(None)
        async with self.courier.statement_connection() as conn:
            cur = await conn.execute(queries.query("queue_health"), {"table": table})
            row = await cur.fetchone()
            if row is None:
                return
            dead_rows, may_vacuum = row
            if not may_vacuum:
                self._cannot_vacuum.add(queue)
                log.info("not the owner of %s: leaving its dead rows to autovacuum", table)
                return
            if dead_rows < self.vacuum_dead_rows:
                return
            # VACUUM refuses to run inside a transaction block: this one is autocommit.
            await conn.execute(queries.queue_query("queue_vacuum", queue))
        log.info("vacuumed %s (%d dead rows)", table, dead_rows)

    async def _prune(self) -> None:
        async with self.courier.statement_connection() as conn:
            for consumer in self.consumers.values():
                if consumer.settings.archive:
                    await conn.execute(
                        queries.queue_query("archive_prune", consumer.queue),
                        {"now": None, "retention_s": consumer.settings.archive_retention_s},
                    )
            await conn.execute(
                queries.query("inbox_prune"),
                {"now": None, "retention_s": self.inbox_retention},
            )
