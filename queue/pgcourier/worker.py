"""The Worker: routes messages of several queues to handlers, with bounded concurrency.

Woken by LISTEN/NOTIFY on its own connection, and polling every `poll_interval`
seconds whatever happens to notifications; a claim that comes back empty (another
worker was quicker) makes it sit out notifications for `empty_claim_backoff` seconds,
doubling (at most 16x) while it keeps losing. `stop()` stops claiming, lets in-flight
handlers finish (up to `shutdown_timeout`) and acknowledges what they finished.

Every loop (claiming, acknowledging, renewing leases, listening, maintenance, the
heartbeat) logs its errors and goes on; if one ends anyway, `run()` raises
WorkerCrashedError at once instead of living on without consuming.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Collection, Coroutine
from datetime import datetime
from typing import Any

from . import claim_function
from .completer import Completer
from .consumer import ConsumerConfig, QueueConsumer
from .context import Handler, Route
from .courier import Courier
from .errors import ConfigurationError, WorkerCrashedError
from .heartbeat import Heartbeat
from .lease import LeaseRenewer
from .listener import Listener
from .loops import Backoff, forever
from .naming import check_queue_name
from .prune import Prune
from .slots import Slots
from .statistics import Statistics
from .store import Lease
from .vacuum import Vacuum

log = logging.getLogger("pgcourier.worker")


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
        heartbeat_interval: float = 5.0,
        transaction_per_batch: bool = False,
        name: str | None = None,
    ) -> None:
        """transaction_per_batch: the messages of one claim whose handlers are
        transactional run in one transaction, each handler in a savepoint, with one
        acknowledgement and one commit (one WAL flush) for them all, one handler after
        another; a handler that fails rolls back only its own savepoint. Off: each
        message its own transaction, its handler beside the others."""
        if concurrency < 1 or batch_size < 1:
            raise ConfigurationError("concurrency and batch_size must be at least 1")
        if poll_interval <= 0:
            raise ConfigurationError("poll_interval must be positive")
        if empty_claim_backoff < 0:
            raise ConfigurationError("empty_claim_backoff must not be negative")
        if heartbeat_interval <= 0 or maintenance_interval <= 0:
            raise ConfigurationError("heartbeat_interval and maintenance_interval must be positive")
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
        self.heartbeat_interval = heartbeat_interval
        self.transaction_per_batch = transaction_per_batch
        self.name = name
        self.routes: dict[str, dict[str | None, Route]] = {}
        self.consumers: dict[str, QueueConsumer] = {}
        self.listener: Listener | None = None
        self.heartbeat: Heartbeat | None = None
        self.started = asyncio.Event()
        self._stop = asyncio.Event()
        self.slots = Slots(concurrency, refill=max(1, min(batch_size, concurrency) // 2))
        self._loops: list[asyncio.Task[None]] = []

    # -- routing -------------------------------------------------------------

    def handle(
        self,
        queue: str,
        handler: Handler | None = None,
        *,
        type: str | None = None,
        transactional: bool = False,
        senders: Collection[str] | None = None,
    ) -> Callable[[Handler], Handler]:
        """Registers a handler for a queue, or for one message type on it.

        transactional: run the handler in one transaction with an inbox record of
        the message id and the acknowledgement, so its writes and sends (through
        `ctx.conn` / `ctx.send`) happen exactly once even if the message comes back.
        senders: the database roles whose messages it accepts (Postgres stamps every
        message with the role that inserted it); a message from any other goes to the
        dead letters with the reason and is never handled. None: any sender.
        """
        check_queue_name(queue)
        if senders is not None and (isinstance(senders, str) or not senders):
            raise ConfigurationError("senders must be a non-empty collection of role names")
        accepted = None if senders is None else frozenset(senders)

        def register(fn: Handler) -> Handler:
            routes = self.routes.setdefault(queue, {})
            if type in routes:
                raise ConfigurationError(f"a handler for {queue!r} type {type!r} already exists")
            routes[type] = Route(queue, fn, type, transactional, accepted)
            return fn

        if handler is not None:
            register(handler)
        return register

    # -- lifecycle -----------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Stops claiming; `run()` returns once in-flight handlers are done."""
        self._stop.set()
        for consumer in self.consumers.values():
            consumer.wake.set()
        self.slots.interrupt()

    @contextlib.asynccontextmanager
    async def running(self, *, stop_timeout: float = 30.0) -> AsyncIterator[Worker]:
        """Runs the worker in the background for the block: enters once it claims (or
        raises what made `run()` fail at start), and on leaving stops it and waits up to
        `stop_timeout` seconds for in-flight handlers. An error `run()` ended with while
        the block ran is raised on leaving."""
        task = asyncio.create_task(self.run())
        started = asyncio.ensure_future(self.started.wait())
        await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            started.cancel()
            task.result()  # raises the start-up error
            raise WorkerCrashedError("the worker returned before it started")
        try:
            yield self
        finally:
            self.stop()
            await asyncio.wait_for(task, stop_timeout)

    def _flushed(self, queue: str, _rescheduled: bool) -> None:
        self._wake(queue)

    def _notified(self, queue: str) -> None:
        """A NOTIFY for the queue (or LISTEN (re)connected): counted, then a wake-up."""
        consumer = self.consumers.get(queue)
        if consumer is not None:
            consumer.notifications += 1
        self._wake(queue)

    def _wake(self, queue: str) -> None:
        consumer = self.consumers.get(queue)
        if consumer is not None:
            consumer.wake.set()

    def status(self) -> tuple[datetime | None, bool, bool]:
        """(last successful claim, LISTEN connected, every loop running)."""
        claims = [c.last_claim_at for c in self.consumers.values() if c.last_claim_at]
        listening = self.listener is not None and self.listener.connected.is_set()
        loops_alive = bool(self._loops) and not any(t.done() for t in self._loops)
        return (max(claims) if claims else None), listening, loops_alive

    async def run(self) -> None:
        if not self.routes:
            raise ConfigurationError("no handlers registered")
        await self._build()
        claimers: list[asyncio.Task[None]] = []
        try:
            if self.listener is not None:
                self._spawn("listening", self.listener.run())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.listener.connected.wait(), 5)
            for consumer in self.consumers.values():
                self._spawn(f"acknowledging on {consumer.queue}", consumer.completer.flush_loop())
                self._spawn(
                    f"renewing leases on {consumer.queue}", self._renewers[consumer.queue].run()
                )
            self._spawn(
                "maintenance", self._every("maintenance", self.maintenance_interval, self._maintain)
            )
            assert self.heartbeat is not None
            self._spawn(
                "heartbeat", self._every("heartbeat", self.heartbeat_interval, self.heartbeat.beat)
            )
            background = list(self._loops)
            for consumer in self.consumers.values():
                claimers.append(
                    self._spawn(f"claiming from {consumer.queue}", consumer.claim_loop())
                )
            self.started.set()
            await self._until_stopped_or_a_loop_ends(background + claimers)
            await asyncio.gather(*claimers)
            await self._drain()
        finally:
            await self._cancel_loops()
            if self.heartbeat is not None:
                with contextlib.suppress(Exception):
                    await self.heartbeat.forget()

    # How long a stopping worker waits for its cancelled loops.
    loop_stop_patience_s = 5.0

    async def _cancel_loops(self) -> None:
        """Cancels every loop and waits for them, at most loop_stop_patience_s: a loop
        stuck in something that does not heed cancellation is named and left behind,
        rather than keeping the worker from stopping."""
        patience_s = self.loop_stop_patience_s
        for task in self._loops:
            task.cancel()
        if not self._loops:
            return
        done, pending = await asyncio.wait(self._loops, timeout=patience_s)
        await asyncio.gather(*done, return_exceptions=True)
        if pending:
            log.error(
                "%s still running %ss after being cancelled: left behind",
                ", ".join(sorted(repr(t.get_name()) for t in pending)),
                patience_s,
            )

    async def _build(self) -> None:
        config = ConsumerConfig(
            self.batch_size,
            self.poll_interval,
            self.empty_claim_backoff,
            transaction_per_batch=self.transaction_per_batch,
        )
        self._renewers: dict[str, LeaseRenewer] = {}
        all_settings = []
        for queue, routes in self.routes.items():
            settings = await self.courier.queue_settings(queue)
            all_settings.append(settings)
            inflight: dict[int, Lease] = {}
            completer = Completer(
                self.courier,
                settings,
                inflight,
                on_flushed=functools.partial(self._flushed, queue),
            )
            self.consumers[queue] = QueueConsumer(
                self.courier,
                settings,
                routes,
                config=config,
                slots=self.slots,
                completer=completer,
                inflight=inflight,
                stop=self._stop,
                claim_function=await self._has_claim_function(queue),
            )
            self._renewers[queue] = LeaseRenewer(
                self.courier, queue, settings.visibility_timeout_s, inflight
            )
        queues = list(self.consumers)
        if self.listen:
            self.listener = Listener(self.listen_conninfo, queues, self._notified)
            listener = self.listener
            for consumer in self.consumers.values():
                consumer.listening = listener.connected.is_set
        self._vacuum = Vacuum(self.courier, queues, dead_rows=self.vacuum_dead_rows)
        self._statistics = Statistics(self.courier, queues)
        self._prune = Prune(self.courier, all_settings, inbox_retention_s=self.inbox_retention)
        self._last_prune = 0.0
        self.heartbeat = Heartbeat(self.courier, queues, name=self.name, status=self.status)

    async def _has_claim_function(self, queue: str) -> bool:
        async with self.courier.statement_connection() as conn:
            return await claim_function.installed(conn, queue)

    def _spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"pgcourier {name}")
        self._loops.append(task)
        return task

    async def _until_stopped_or_a_loop_ends(self, loops: list[asyncio.Task[None]]) -> None:
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait([stopped, *loops], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if self.stopping:
            return
        ended = next(t for t in loops if t.done())
        cause = None if ended.cancelled() else ended.exception()
        log.critical(
            "worker loop %r ended (%s): this worker cannot consume any more",
            ended.get_name(),
            "cancelled" if ended.cancelled() else f"{type(cause).__name__}: {cause}",
        )
        self.stop()
        raise WorkerCrashedError(f"worker loop {ended.get_name()!r} ended") from cause

    async def _every(
        self, name: str, interval_s: float, step: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        async def once() -> None:
            await step()
            await asyncio.sleep(interval_s)

        await forever(
            name,
            once,
            log=log,
            backoff=Backoff(base_s=interval_s, max_s=max(interval_s, 30.0)),
        )

    async def _maintain(self) -> None:
        await self._vacuum.run_once()
        await self._statistics.run_once()
        now = asyncio.get_running_loop().time()
        if now - self._last_prune >= 60:
            self._last_prune = now
            await self._prune.run_once()

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
            await consumer.completer.flush()
