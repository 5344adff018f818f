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

from . import store
from .courier import Courier, QueueSettings
from .errors import RejectMessage
from .loops import backoff_delay
from .message import Message
from .store import Failure, Lease

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
        self._needed = asyncio.Event()
        self._lock = asyncio.Lock()
        self.lost = 0  # outcomes not written because the lease had moved on

    # -- recording -------------------------------------------------------------

    # Each outcome forgets its message at once: it needs no more renewals, and the
    # renewer must not take an acknowledgement being written for a lost lease.

    def done(self, lease: Lease, *, key_released: bool = False) -> None:
        self.inflight.pop(lease.msg_id, None)
        self._done.append(lease)
        self._rescheduled |= key_released
        self._needed.set()

    def settled(self, lease: Lease, *, key_released: bool = False) -> None:
        """Acknowledged elsewhere (in a handler's transaction): only forget it."""
        self.inflight.pop(lease.msg_id, None)
        if key_released:
            self._rescheduled = True
            self._needed.set()

    def failed(self, message: Message, lease: Lease, exc: BaseException) -> None:
        self.inflight.pop(lease.msg_id, None)
        entry = {
            "attempt": message.attempt,
            "error": f"{type(exc).__name__}: {exc}",
            "at": datetime.now(UTC).isoformat(),
        }
        errors = json.dumps([*message.errors, entry])
        if isinstance(exc, RejectMessage) or message.attempt >= self.settings.max_attempts:
            log.error(
                "dead-lettering msg %s (%s) of type %s on %s after %d attempt(s): %s",
                message.msg_id,
                message.id,
                message.type,
                self.queue,
                message.attempt,
                entry["error"],
            )
            self._dead.append(Failure(lease, errors, message.attempt))
        else:
            delay = backoff_delay(
                message.attempt,
                base_s=self.settings.backoff_base_s,
                max_s=self.settings.backoff_max_s,
            )
            self._retries.append(Failure(lease, errors, message.attempt, delay))
        self._rescheduled = True
        self._needed.set()

    def unreadable(self, lease: Lease, exc: BaseException) -> None:
        """A claimed row that is no envelope: to the dead letters, with the reason."""
        self.inflight.pop(lease.msg_id, None)
        log.error("dead-lettering msg %s on %s: cannot read it: %s", lease.msg_id, self.queue, exc)
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
            try:
                if done or retries or dead:
                    await self._write(done, retries, dead)
            except (psycopg.Error, OSError) as exc:
                # Not acknowledged: the leases run out and the messages come back.
                log.warning("acknowledging on %s failed: %s", self.queue, exc)
            finally:
                if rescheduled:
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
            log.warning(
                "%d outcome(s) on %s not written: their leases ran out and the messages "
                "were claimed again (or deleted) by someone else",
                lost,
                self.queue,
            )
