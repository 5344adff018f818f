"""One queue's share of a worker: the claim loop and handing messages to handlers.

A consumer gets its configuration, the worker's handler slots, a completer for the
outcomes and the stop event, not the worker itself. Its claim loop cannot die: any
error in a claim or in dispatching a message is logged and the loop goes on after a
backoff; only the stop event ends it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from . import metrics, store, tracing
from .completer import Completer
from .context import Context, Route
from .courier import Courier
from .eager import start_eagerly
from .errors import ForbiddenSenderError, NoHandlerError, UnreadableMessageError
from .logs import message_fields
from .loops import Backoff, forever
from .message import Message, decode_claimed
from .slots import Slots
from .store import Lease
from .topology import QueueSettings

log = logging.getLogger("pgcourier.worker")

# The empty-claim backoff doubles at most this many times (16x): the exponent is
# bounded however long a queue stays idle.
_MAX_EMPTY_CLAIM_DOUBLINGS = 4


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    batch_size: int
    poll_interval: float
    empty_claim_backoff: float
    transaction_per_batch: bool = False


# A keyed message's question for the claim loop, once it is acknowledged (see
# QueueConsumer._key_may_wait); None for a message without a key.
Release = Callable[[], bool] | None


class QueueConsumer:
    def __init__(
        self,
        courier: Courier,
        settings: QueueSettings,
        routes: dict[str | None, Route],
        *,
        config: ConsumerConfig,
        slots: Slots,
        completer: Completer,
        inflight: dict[int, Lease],
        stop: asyncio.Event,
        claim_function: bool = False,
    ) -> None:
        """claim_function: the queue has its claim function (claim_function.py)."""
        self.courier = courier
        self.claim_function = claim_function
        self.queue = settings.queue_name
        self.settings = settings
        self.routes = routes
        self.config = config
        self.slots = slots
        self.completer = completer
        self.inflight = inflight
        self._stop = stop
        self.wake = asyncio.Event()
        self.handler_tasks: set[asyncio.Future[None]] = set()
        self.last_claim_at: datetime | None = None
        self.claims = 0
        self._empty_claims = 0  # in a row, at most _MAX_EMPTY_CLAIM_DOUBLINGS
        # NOTIFYs for this queue so far (and LISTEN (re)connections), and whether the
        # worker's LISTEN connection is up: set by the worker.
        self.notifications = 0
        self.listening: Callable[[], bool] = lambda: False
        self.metrics = completer.metrics
        self._measure = metrics.enabled()

    # -- claiming ------------------------------------------------------------

    async def claim_loop(self) -> None:
        """Claims and dispatches until the stop event; errors are logged, never fatal."""
        await forever(
            f"claiming from {self.queue}",
            self.claim_once,
            log=log,
            backoff=Backoff(base_s=0.05, max_s=max(self.config.poll_interval, 1.0)),
            until=self._stop.is_set,
        )

    async def claim_once(self) -> None:
        """One turn: claim what slots allow, start the handlers, wait until due or woken."""
        config = self.config
        wanted = self.slots.reserve(config.batch_size)
        if wanted == 0:
            await self.slots.wait()
            return
        self.wake.clear()
        # Before the claim runs: a send that comes in while it runs counts as after it.
        notified = self.notifications
        started = time.perf_counter()
        try:
            async with self.courier.statement_connection() as conn:
                claim = await self._claim(conn, wanted)
        except BaseException:
            self.slots.release(wanted)
            raise
        self.metrics.claimed(len(claim.rows), time.perf_counter() - started)
        self.claims += 1
        self.last_claim_at = datetime.now(UTC)
        self.slots.release(wanted - len(claim.rows))
        batch: list[tuple[Message, Lease, Release]] | None = (
            [] if config.transaction_per_batch else None
        )
        for row in claim.rows:
            self._dispatch(row, notified, batch)
        if batch:
            self._start(self._handle_batch(batch))
        if len(claim.rows) == wanted:
            return
        # Nothing more is ready: sleep until woken (NOTIFY, a freed key, a retry), the
        # next message falls due, or the poll interval passes, whichever is first.
        wait_s = config.poll_interval
        if claim.next_due_s is not None:
            wait_s = min(wait_s, max(claim.next_due_s, 0.001))
        if claim.rows:
            self._empty_claims = 0
        elif config.empty_claim_backoff:
            # Every worker listening on the queue is woken by each NOTIFY and one of
            # them gets the batch: the others sit out notifications for a while (longer
            # the more often they lose), so a busy queue is claimed in big batches by
            # a few rather than raced for by all.
            backoff_s = min(config.empty_claim_backoff * 2**self._empty_claims, wait_s)
            self._empty_claims = min(self._empty_claims + 1, _MAX_EMPTY_CLAIM_DOUBLINGS)
            await asyncio.sleep(backoff_s)
            wait_s -= backoff_s
        await self._sleep_until_woken(wait_s)

    async def _claim(self, conn: psycopg.AsyncConnection, limit: int) -> store.Claim:
        """Through the queue's claim function where the connection does not prepare
        statements (behind PgBouncer in transaction mode): the server keeps it parsed."""
        through_function = self.claim_function and conn.prepare_threshold is None
        try:
            return await store.claim(
                conn,
                self.queue,
                limit=limit,
                vt_s=self.settings.visibility_timeout_s,
                horizon_s=self.config.poll_interval,
                through_function=through_function,
            )
        except psycopg.errors.UndefinedFunction:
            if not through_function:
                raise
        # Dropped since the worker started (a newer pgcourier migrated, say): the
        # statement does the same.
        self.claim_function = False
        log.warning("the claim function of %s is gone: claiming with the statement", self.queue)
        return await self._claim(conn, limit)

    async def _sleep_until_woken(self, wait_s: float) -> None:
        if self._stop.is_set() or wait_s <= 0:
            return
        try:
            await asyncio.wait_for(self.wake.wait(), wait_s)
        except TimeoutError:
            # Woken by the clock; a NOTIFY's wake-up is counted by the listener.
            self.metrics.woken(by_notify=False)

    # -- dispatching -----------------------------------------------------------

    def _dispatch(
        self,
        row: store.ClaimedRow,
        notified: int,
        batch: list[tuple[Message, Lease, Release]] | None = None,
    ) -> None:
        """Starts the row's handler; whatever goes wrong stays with this one message.
        notified: the queue's notification count when the claim began. batch: where a
        message for a transactional handler goes instead, to be handled in the claim's
        one transaction (transaction_per_batch)."""
        lease = Lease(row.msg_id, row.read_ct)
        self.inflight[row.msg_id] = lease
        try:
            message = decode_claimed(
                self.queue,
                row.msg_id,
                row.read_ct,
                row.enqueued_at,
                row.message,
                row.headers,
                row.sender,
            )
        except UnreadableMessageError as exc:
            self.slots.release(1)
            self.completer.unreadable(lease, exc)
            return
        release = None
        if message.ordering_key is not None:
            release = functools.partial(self._key_may_wait, row.more_of_key, notified)
        if batch is not None:
            route = self._route(message)
            if route is not None and route.transactional and self._accepts(route, message):
                batch.append((message, lease, release))
                return
        self._start(self._handle(message, lease, release))

    def _start(self, handling: Coroutine[Any, Any, None]) -> None:
        started = start_eagerly(handling)
        if started is not None and not started.done():
            self.handler_tasks.add(started)
            started.add_done_callback(self.handler_tasks.discard)

    def _route(self, message: Message) -> Route | None:
        return self.routes.get(message.type) or self.routes.get(None)

    @staticmethod
    def _accepts(route: Route, message: Message) -> bool:
        return route.senders is None or message.sender in route.senders

    def _key_may_wait(self, more_of_key: bool | None, notified: int) -> bool:
        """Whether, its head done, a message of the key may wait to be claimed: one
        waited behind it at the claim, or a send came in since (its claim found the key
        held), or without LISTEN no NOTIFY would say so. Asked once the acknowledgement
        is written, so a send after that is claimed by its own NOTIFY."""
        return more_of_key is not False or self.notifications != notified or not self.listening()

    async def _handle(
        self, message: Message, lease: Lease, release: Callable[[], bool] | None = None
    ) -> None:
        """release: for a keyed message, whether the claim loop should look again once
        it is acknowledged (_key_may_wait); None for one without a key."""
        started = time.perf_counter()
        outcome = -1  # none yet: a cancelled handler (shutdown) has no outcome to count
        try:
            with tracing.consuming(message):
                route = self._route(message)
                if route is None:
                    raise NoHandlerError(
                        f"no handler for messages of type {message.type!r} on queue {self.queue!r}"
                    )
                if not self._accepts(route, message):
                    accepted = ", ".join(sorted(route.senders or ()))
                    raise ForbiddenSenderError(
                        f"{message.type or 'untyped'} messages on {self.queue!r} are accepted "
                        f"from {accepted}, not from {message.sender!r}"
                    )
                if route.transactional:
                    await self._handle_in_transaction(route, message, lease)
                    self.completer.settled(lease, release=release)
                else:
                    await route.handler(message, Context(self.courier, message))
                    self.completer.done(lease, release=release)
                outcome = metrics.OK
        except Exception as exc:
            # Logged there, at WARNING for a retry and ERROR for a dead letter.
            outcome = self.completer.failed(message, lease, exc)
        finally:
            self.slots.release(1)
            self._handled(message, outcome, started)

    def _handled(self, message: Message, outcome: int, started: float) -> None:
        if self._measure and outcome >= 0:
            self.metrics.handled(
                message.type,
                outcome,
                time.perf_counter() - started,
                time.time() - message.enqueued_at.timestamp(),
            )
        if outcome == metrics.OK and log.isEnabledFor(logging.DEBUG):
            log.debug(
                "handled msg %s on %s", message.msg_id, self.queue, extra=message_fields(message)
            )

    async def _handle_in_transaction(self, route: Route, message: Message, lease: Lease) -> None:
        """Inbox record, handler's writes and sends, and acknowledgement: all or nothing."""
        async with self.courier.pool.connection() as conn, conn.transaction():
            await self._apply(route, message, conn)
            await self._acknowledge(conn, [lease])

    async def _apply(self, route: Route, message: Message, conn: psycopg.AsyncConnection) -> None:
        """The inbox record and the handler, in the caller's transaction."""
        if await store.inbox_claim(conn, self.queue, message.id):
            await route.handler(message, Context(self.courier, message, conn))
        else:
            log.info(
                "msg %s on %s was handled before; acknowledging",
                message.msg_id,
                self.queue,
                extra=message_fields(message),
            )

    async def _acknowledge(self, conn: psycopg.AsyncConnection, leases: list[Lease]) -> None:
        for lease in leases:
            # Outcome decided: no more renewals (see Completer).
            self.inflight.pop(lease.msg_id, None)
        acknowledged = await store.acknowledge(
            conn, self.queue, leases, archive=self.settings.archive
        )
        if acknowledged < len(leases):
            # A lease ran out and its message was claimed again: its new holder finds
            # this inbox record and acknowledges it without handling it.
            self.metrics.fenced(len(leases) - acknowledged)
            log.warning(
                "%d of %d messages on %s: lease lost before the acknowledgement; "
                "their new holders will find them handled",
                len(leases) - acknowledged,
                len(leases),
                self.queue,
            )

    async def _handle_batch(self, batch: list[tuple[Message, Lease, Release]]) -> None:
        """The transactional messages of one claim in one transaction: each handler in
        a savepoint with its inbox record, then one acknowledgement and one commit for
        them all, so a claim of many costs one WAL flush, not one a message. A handler
        that fails rolls back its own savepoint and is retried alone; the handlers run
        one after another. If the transaction fails as a whole, none of it holds and
        each message is retried."""
        started = time.perf_counter()
        handled: list[tuple[Message, Lease, Release]] = []
        failures: list[tuple[Message, Lease, BaseException]] = []
        try:
            async with self.courier.pool.connection() as conn, conn.transaction():
                for message, lease, release in batch:
                    route = self._route(message)
                    assert route is not None  # batched only with a transactional route
                    try:
                        with tracing.consuming(message):
                            async with conn.transaction():  # a savepoint
                                await self._apply(route, message, conn)
                    except Exception as failure:
                        failures.append((message, lease, failure))
                    else:
                        handled.append((message, lease, release))
                if handled:
                    await self._acknowledge(conn, [lease for _, lease, _ in handled])
        except Exception as exc:
            failures += [(message, lease, exc) for message, lease, _ in handled]
            handled = []
        finally:
            self.slots.release(len(batch))
        for message, lease, release in handled:
            self.completer.settled(lease, release=release)
            self._handled(message, metrics.OK, started)
        for message, lease, error in failures:
            self._handled(message, self.completer.failed(message, lease, error), started)
