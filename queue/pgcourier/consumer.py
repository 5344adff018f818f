"""One queue's share of a worker: claim, dispatch, acknowledge, retry, renew leases.

Acknowledgements, retries and dead letters are buffered and written together by
one flusher, so a busy queue pays one round trip per batch rather than per
message, while a quiet one flushes as soon as a handler returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import psycopg

from . import queries
from .context import Context, Route
from .courier import QueueSettings
from .eager import start_eagerly
from .errors import NoHandlerError, PgCourierError, RejectMessage
from .message import Message

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger(__name__)


def backoff_delay(attempt: int, *, base_s: float, max_s: float) -> float:
    """Exponential backoff with equal jitter: half fixed, half random."""
    ceiling = min(max_s, base_s * 2 ** max(attempt - 1, 0))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class QueueConsumer:
    def __init__(
        self, worker: Worker, settings: QueueSettings, routes: dict[str | None, Route]
    ) -> None:
        self.worker = worker
        self.queue = settings.queue_name
        self.settings = settings
        self.routes = routes
        self.wake = asyncio.Event()
        # msg_id -> read_ct of every message claimed and not yet acknowledged.
        self.inflight: dict[int, int] = {}
        self._done: list[int] = []
        # Set when a finished message had an ordering key: its key's next message
        # becomes claimable once this one is acknowledged, and no NOTIFY says so.
        self._key_released = False
        self._failed: list[tuple[Message, BaseException]] = []
        self._flush_needed = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self.handler_tasks: set[asyncio.Task[None]] = set()
        self._empty_claims = 0  # in a row
        ack = "message_archive" if settings.archive else "message_delete"
        self._q_claim = queries.queue_query("message_claim", self.queue)
        self._q_ack = queries.queue_query(ack, self.queue)
        self._q_retry = queries.queue_query("message_retry", self.queue)
        self._q_dead = queries.queue_query("message_dead_letter", self.queue)
        self._q_extend = queries.queue_query("message_extend", self.queue)

    # -- claiming ------------------------------------------------------------

    async def claim_loop(self) -> None:
        worker = self.worker
        while not worker.stopping:
            wanted = worker.reserve_slots(worker.batch_size)
            if wanted == 0:
                await worker.wait_for_slots()
                continue
            self.wake.clear()
            try:
                messages, next_due_s = await self._claim(wanted)
            except (psycopg.Error, PgCourierError) as exc:
                worker.release_slots(wanted)
                log.warning("claiming from %s failed: %s", self.queue, exc)
                await self._sleep_until_woken(worker.poll_interval)
                continue
            worker.release_slots(wanted - len(messages))
            for message in messages:
                self._start(message)
            if len(messages) == wanted:
                continue
            wait_s = worker.poll_interval
            if next_due_s is not None:
                wait_s = min(wait_s, max(next_due_s, 0.001))
            if messages:
                self._empty_claims = 0
            elif worker.empty_claim_backoff:
                # Every worker listening on the queue is woken by each NOTIFY and one
                # of them gets the batch: the others sit out notifications for a
                # while (longer the more often they lose), so a busy queue is claimed
                # in big batches by a few rather than raced for by all.
                backoff_s = min(
                    worker.empty_claim_backoff * 2**self._empty_claims,
                    worker.empty_claim_backoff * 16,
                    wait_s,
                )
                self._empty_claims += 1
                await asyncio.sleep(backoff_s)
                wait_s -= backoff_s
            await self._sleep_until_woken(wait_s)

    async def _sleep_until_woken(self, wait_s: float) -> None:
        if self.worker.stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), wait_s)

    async def _claim(self, limit: int) -> tuple[list[Message], float | None]:
        """The claimed messages, and when nothing was claimed, seconds until the next is due."""
        async with self.worker.courier.statement_connection() as conn:
            cur = await conn.execute(
                self._q_claim,
                {"now": None, "limit": limit, "vt_s": self.settings.visibility_timeout_s},
            )
            rows = await cur.fetchall()
        if len(rows) == 1 and rows[0][0] is None:
            return [], rows[0][5]
        rows.sort(key=lambda row: row[0])  # UPDATE ... RETURNING keeps no order
        messages = [
            Message(self.queue, msg_id, read_ct, enqueued_at, payload, headers or {})
            for msg_id, read_ct, enqueued_at, payload, headers, _ in rows
        ]
        return messages, None

    # -- handling ------------------------------------------------------------

    def _start(self, message: Message) -> None:
        self.inflight[message.msg_id] = message.attempt
        task = start_eagerly(self._handle(message))
        if task is not None:
            self.handler_tasks.add(task)
            task.add_done_callback(self.handler_tasks.discard)

    async def _handle(self, message: Message) -> None:
        route = self.routes.get(message.type) or self.routes.get(None)
        try:
            if route is None:
                raise NoHandlerError(
                    f"no handler for messages of type {message.type!r} on queue {self.queue!r}"
                )
            if route.transactional:
                await self._handle_in_transaction(route, message)
                self.inflight.pop(message.msg_id, None)
            else:
                await route.handler(message, Context(self.worker.courier, message))
                self._done.append(message.msg_id)
        except Exception as exc:
            log.info(
                "handler failed on %s msg %s (attempt %s): %r",
                self.queue,
                message.msg_id,
                message.attempt,
                exc,
            )
            self._failed.append((message, exc))
        finally:
            if message.ordering_key is not None:
                self._key_released = True
            self.worker.release_slots(1)
            self._flush_needed.set()

    async def _handle_in_transaction(self, route: Route, message: Message) -> None:
        """Inbox record, handler's writes and sends, and acknowledgement: all or nothing."""
        async with self.worker.courier.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                queries.query("inbox_claim"),
                {"consumer": self.queue, "message_id": message.id},
            )
            if await cur.fetchone() is not None:
                await route.handler(message, Context(self.worker.courier, message, conn))
            else:
                log.info("msg %s on %s was handled before; acknowledging", message.id, self.queue)
            await conn.execute(self._q_ack, {"msg_ids": [message.msg_id]})

    # -- acknowledging ---------------------------------------------------------

    async def flush_loop(self) -> None:
        while True:
            await self._flush_needed.wait()
            self._flush_needed.clear()
            await self.flush()

    async def flush(self) -> None:
        async with self._flush_lock:
            done, self._done = self._done, []
            failed, self._failed = self._failed, []
            key_released, self._key_released = self._key_released, False
            try:
                await self._write_outcomes(done, failed)
            finally:
                # A freed ordering key or a scheduled retry changes what is due next,
                # and no NOTIFY says so: let the claim loop look again.
                if key_released or failed:
                    self.wake.set()

    async def _write_outcomes(
        self, done: list[int], failed: list[tuple[Message, BaseException]]
    ) -> None:
        if not done and not failed:
            return
        retry_ids: list[int] = []
        retry_delays: list[float] = []
        retry_errors: list[str] = []
        dead_ids: list[int] = []
        dead_errors: list[str] = []
        now = datetime.now(UTC).isoformat()
        for message, exc in failed:
            error = json.dumps(
                {"attempt": message.attempt, "error": f"{type(exc).__name__}: {exc}", "at": now}
            )
            if message.attempt >= self.settings.max_attempts or isinstance(exc, RejectMessage):
                dead_ids.append(message.msg_id)
                dead_errors.append(error)
            else:
                retry_ids.append(message.msg_id)
                retry_errors.append(error)
                retry_delays.append(
                    backoff_delay(
                        message.attempt,
                        base_s=self.settings.backoff_base_s,
                        max_s=self.settings.backoff_max_s,
                    )
                )
        try:
            async with self.worker.courier.statement_connection() as conn:
                if done:
                    await conn.execute(self._q_ack, {"msg_ids": done})
                if retry_ids:
                    await conn.execute(
                        self._q_retry,
                        {
                            "now": None,
                            "msg_ids": retry_ids,
                            "delays": retry_delays,
                            "errors": retry_errors,
                        },
                    )
                if dead_ids:
                    await conn.execute(
                        self._q_dead,
                        {"queue_name": self.queue, "msg_ids": dead_ids, "errors": dead_errors},
                    )
        except psycopg.Error as exc:
            # Not acknowledged: the leases run out and the messages come back.
            log.warning("acknowledging on %s failed: %s", self.queue, exc)
        finally:
            for msg_id in done:
                self.inflight.pop(msg_id, None)
            for message, _ in failed:
                self.inflight.pop(message.msg_id, None)

    # -- leases ----------------------------------------------------------------

    async def renew_loop(self) -> None:
        """Keeps the leases of messages still being handled from running out."""
        vt = self.settings.visibility_timeout_s
        while True:
            await asyncio.sleep(max(vt / 3, 0.05))
            if not self.inflight:
                continue
            ids, read_cts = list(self.inflight), list(self.inflight.values())
            try:
                async with self.worker.courier.statement_connection() as conn:
                    await conn.execute(
                        self._q_extend,
                        {"now": None, "vt_s": vt, "msg_ids": ids, "read_cts": read_cts},
                    )
            except psycopg.Error as exc:
                log.warning("renewing leases on %s failed: %s", self.queue, exc)
