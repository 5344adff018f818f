"""Batched completion: acknowledgements, retries and dead letters of one queue.

Handlers' outcomes are buffered and written together by one flusher, so a busy queue
pays one round trip per batch rather than per message, while a quiet one flushes as
soon as a handler returns. Every write is fenced by the message's lease (store.py):
a worker whose lease ran out cannot touch the new holder's message.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg

from . import metrics, store
from .courier import Courier
from .errors import RejectMessage
from .logs import message_fields
from .loops import backoff_delay
from .message import Message
from .store import Failure, Lease
from .topology import QueueSettings

log = logging.getLogger("pgcourier.worker")


class Completer:
    def __init__(
        self,
        courier: Courier,
        settings: QueueSettings,
        inflight: dict[int, Lease],
        *,
        on_flushed: Callable[[bool], None],
    ) -> None:
        """on_flushed(anything_rescheduled): called after each write, so the claim loop
        can look again when a retry or a freed ordering key changed what is due."""
        self.courier = courier
        self.queue = settings.queue_name
        self.settings = settings
        self.inflight = inflight
        self._on_flushed = on_flushed
        self._done: list[Lease] = []
        self._retries: list[Failure] = []
        self._dead: list[Failure] = []
        self._rescheduled = False
        # Keyed messages done since the last write: each says, once asked after the
        # write, whether the claim loop should look again (QueueConsumer._key_may_wait).
        self._released: list[Callable[[], bool]] = []
        self._needed = asyncio.Event()
        self._lock = asyncio.Lock()
        self.lost = 0  # outcomes not written because the lease had moved on
        self.metrics = metrics.for_queue(self.queue)

    # -- recording -------------------------------------------------------------

    # Each outcome forgets its message at once: it needs no more renewals, and the
    # renewer must not take an acknowledgement being written for a lost lease.

    def done(self, lease: Lease, *, release: Callable[[], bool] | None = None) -> None:
        """release: a keyed message's question, asked once its acknowledgement is
        written: should the claim loop look again for the rest of its key?"""
        self.inflight.pop(lease.msg_id, None)
        self._done.append(lease)
        if release is not None:
            self._released.append(release)
        self._needed.set()

    def settled(self, lease: Lease, *, release: Callable[[], bool] | None = None) -> None:
        """Acknowledged elsewhere (in a handler's transaction): only forget it."""
        self.inflight.pop(lease.msg_id, None)
        if release is not None:
            self._released.append(release)
            self._needed.set()

    def failed(self, message: Message, lease: Lease, exc: BaseException) -> int:
        """Records a failed attempt: a retry, or a dead letter when the message is
        rejected or out of attempts. Returns the outcome (metrics.RETRIED, DEAD or
        REJECTED)."""
        self.inflight.pop(lease.msg_id, None)
        error = f"{type(exc).__name__}: {exc}"
        entry = {"attempt": message.attempt, "error": error, "at": datetime.now(UTC).isoformat()}
        errors = json.dumps([*message.errors, entry])
        rejected = isinstance(exc, RejectMessage)
        if rejected or message.attempt >= self.settings.max_attempts:
            log.error(
                "dead-lettering msg %s on %s after %d attempt(s): %s",
                message.msg_id,
                self.queue,
                message.attempt,
                error,
                extra=message_fields(message, error=error),
                # Where a handler broke; a rejection says why in its message.
                exc_info=None if rejected else exc,
            )
            self._dead.append(Failure(lease, errors, message.attempt))
            outcome = metrics.REJECTED if rejected else metrics.DEAD
        else:
            delay = backoff_delay(
                message.attempt,
                base_s=self.settings.backoff_base_s,
                max_s=self.settings.backoff_max_s,
            )
            log.warning(
                "handler failed on msg %s on %s (attempt %d of %d), retrying in %.2fs: %s",
                message.msg_id,
                self.queue,
                message.attempt,
                self.settings.max_attempts,
                delay,
                error,
                extra=message_fields(message, error=error),
            )
            self._retries.append(Failure(lease, errors, message.attempt, delay))
            outcome = metrics.RETRIED
        self._rescheduled = True
        self._needed.set()
        return outcome

    def unreadable(self, lease: Lease, exc: BaseException) -> None:
        """A claimed row that is no envelope: to the dead letters, with the reason."""
        self.inflight.pop(lease.msg_id, None)
        log.error(
            "dead-lettering msg %s on %s: cannot read it: %s",
            lease.msg_id,
            self.queue,
            exc,
            extra={"queue": self.queue, "msg_id": lease.msg_id, "error": str(exc)},
        )
        self.metrics.outcome(None, metrics.REJECTED)
        entry = {"attempt": 1, "error": f"{type(exc).__name__}: {exc}"}
        entry["at"] = datetime.now(UTC).isoformat()
        self._dead.append(Failure(lease, json.dumps([entry]), 1))
        self._needed.set()

    # -- writing ---------------------------------------------------------------

    async def flush_loop(self) -> None:
        """Runs until cancelled; a failed write is logged and its messages come back
        when their leases run out."""
        while True:
            await self._needed.wait()
            self._needed.clear()
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            done, self._done = self._done, []
            retries, self._retries = self._retries, []
            dead, self._dead = self._dead, []
            rescheduled, self._rescheduled = self._rescheduled, False
            released, self._released = self._released, []
            try:
                if done or retries or dead:
                    await self._write(done, retries, dead)
            except (psycopg.Error, OSError) as exc:
                # Not acknowledged: the leases run out and the messages come back.
                log.warning("acknowledging on %s failed: %s", self.queue, exc)
            finally:
                # Asked after the write: a key's next message sent later is claimed by
                # the claim its own NOTIFY starts.
                if rescheduled or any(ask() for ask in released):
                    self._on_flushed(True)

    async def _write(self, done: list[Lease], retries: list[Failure], dead: list[Failure]) -> None:
        written = 0
        async with self.courier.statement_connection() as conn:
            if done:
                written += await store.acknowledge(
                    conn, self.queue, done, archive=self.settings.archive
                )
            if retries:
                written += await store.retry(conn, self.queue, retries)
            if dead:
                written += await store.dead_letter(conn, self.queue, dead)
        lost = len(done) + len(retries) + len(dead) - written
        if lost:
            self.lost += lost
            self.metrics.fenced(lost)
            log.warning(
                "%d outcome(s) on %s not written: their leases ran out and the messages "
                "were claimed again (or deleted) by someone else",
                lost,
                self.queue,
            )
