"""What the console reads and changes, one database at a time.

Reads go through the library's query files (queries.py) and, where pgcourier already
has the operation (counts, peeking, dead letters, their retry), through Admin. The
console samples each database's queues every few seconds in its own process; the
throughput chart comes from those samples (see console_queue_sample.sql), so it
works for queues without an archive too, and costs the database one query per
sample whatever the number of browsers watching.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from . import links, queries
from .admin import Admin, DeadLetter, PeekedMessage, QueueStats
from .courier import Courier
from .links import LinkInfo
from .naming import check_queue_name

log = logging.getLogger("pgcourier.console")


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # time.time()
    stats: dict[str, QueueStats]
    sent_total: dict[str, int]
    # The database's links to others (pgcourier.links), as `pgcourier links` shows them.
    links: list[LinkInfo] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Found:
    """One trace of a correlation id: a message in a queue, archive, dead letters or
    outbox, or an inbox record (place "inbox": queue is the consumer)."""

    database: str
    queue: str
    place: str
    msg_id: int | None
    read_ct: int | None
    at: datetime
    done_at: datetime | None
    payload: Any = None
    headers: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # a dead letter's last error

    @property
    def type(self) -> str | None:
        return self.headers.get("type")


@dataclass(frozen=True, slots=True)
class StoredMessage:
    place: str  # "queue" or "archive"
    msg_id: int
    read_ct: int
    enqueued_at: datetime
    visible_at: datetime
    archived_at: datetime | None
    payload: Any
    headers: dict[str, Any]
    sender: str | None


class ConsoleDatabase:
    """One database the console watches, under a short name shown in the pages."""

    def __init__(
        self, name: str, url: str, *, sample_interval_s: float = 2.0, history_s: float = 300.0
    ) -> None:
        self.name = name
        self.url = url
        self.sample_interval_s = sample_interval_s
        self.courier = Courier(url, pool_min_size=1, pool_max_size=4)
        self.admin = Admin(self.courier)
        self.samples: deque[Sample] = deque(maxlen=max(2, int(history_s / sample_interval_s) + 1))
        self.error: str | None = None

    async def open(self) -> None:
        await self.courier.open()

    async def close(self) -> None:
        await self.courier.close()

    # -- sampling --------------------------------------------------------------

    async def sample(self) -> Sample:
        async with self.courier.connection() as conn:
            cur = await conn.execute(queries.query("console_queue_sample"))
            rows = await cur.fetchall()
            # A database without links (no migration 0004 yet, or a role that cannot
            # read them) shows none.
            try:
                async with conn.transaction():
                    found = await links.links(conn)
            except psycopg.Error:
                found = []
        sample = Sample(
            time.time(),
            {r[0]: QueueStats(*r[:6]) for r in rows},
            {r[0]: int(r[6]) for r in rows},
            found,
        )
        self.samples.append(sample)
        return sample

    async def sample_forever(self) -> None:
        """Samples until cancelled; a failure is shown on the page, never fatal."""
        while True:
            try:
                await self.sample()
                self.error = None
            except Exception as exc:  # the database may be down for a while
                if self.error is None:
                    log.warning("console: cannot sample database %s: %s", self.name, exc)
                self.error = str(exc).strip() or type(exc).__name__
            await asyncio.sleep(self.sample_interval_s)

    def latest(self) -> Sample | None:
        return self.samples[-1] if self.samples else None

    def rates(self) -> dict[str, list[tuple[float, float, float]]]:
        """Per queue, (time, sent per second, left per second) between samples.

        Left: acknowledged, dead-lettered or purged. A queue dropped and created again
        restarts its ids: negative changes count as nothing.
        """
        out: dict[str, list[tuple[float, float, float]]] = {}
        points = list(self.samples)
        for before, after in itertools.pairwise(points):
            dt = after.at - before.at
            if dt <= 0:
                continue
            for queue, sent_now in after.sent_total.items():
                if queue not in before.sent_total:
                    continue
                sent = max(sent_now - before.sent_total[queue], 0)
                depth_change = _depth(after.stats[queue]) - _depth(before.stats[queue])
                left = max(sent - depth_change, 0)
                out.setdefault(queue, []).append(
                    (round(after.at, 3), round(sent / dt, 3), round(left / dt, 3))
                )
        return out

    # -- one queue ---------------------------------------------------------------

    async def peek(self, queue: str, *, limit: int = 50) -> list[PeekedMessage]:
        return await self.admin.peek(queue, limit=limit)

    async def message(self, queue: str, msg_id: int) -> StoredMessage | None:
        check_queue_name(queue)
        async with self.courier.connection(queue=queue) as conn:
            await self.courier.require_queue(conn, queue)
            cur = await conn.execute(
                queries.queue_query("console_message", queue), {"msg_id": msg_id}
            )
            row = await cur.fetchone()
        if row is None:
            return None
        place, mid, read_ct, enqueued_at, vt, archived_at, payload, headers, sender = row
        return StoredMessage(
            place, mid, read_ct, enqueued_at, vt, archived_at, payload, headers or {}, sender
        )

    async def dead_letters(self, queue: str, *, limit: int = 200) -> list[DeadLetter]:
        return await self.admin.dead_letters(queue, limit=limit)

    async def dead_letter_retry(self, queue: str, ids: Sequence[int] | None) -> int:
        return await self.admin.dead_letter_retry(queue, dead_letter_ids=ids)

    async def dead_letter_purge(self, queue: str, ids: Sequence[int] | None) -> int:
        """Deletes dead letters for good (all of the queue's when ids is None)."""
        check_queue_name(queue)
        chosen = None if ids is None else [int(i) for i in ids]
        async with self.courier.connection(queue=queue) as conn:
            await self.courier.require_queue(conn, queue)
            cur = await conn.execute(
                queries.query("dead_letter_purge"),
                {"queue_name": queue, "dead_letter_ids": chosen},
            )
            return len(await cur.fetchall())

    # -- correlation ---------------------------------------------------------------

    async def correlation(self, correlation_id: str) -> list[Found]:
        """Every message of the database with the correlation id, and the inbox records
        of their envelope ids, oldest first. One query per queue: an operator's rare
        question, not worth an index on every queue's headers."""
        params = {"correlation_id": correlation_id}
        rows: list[Any] = []
        async with self.courier.connection() as conn:
            cur = await conn.execute(queries.query("console_queue_sample"))
            for queue, *_ in await cur.fetchall():
                cur = await conn.execute(
                    queries.queue_query("console_correlation_queue", queue),
                    {**params, "queue_name": queue},
                )
                rows += await cur.fetchall()
            cur = await conn.execute(queries.query("console_correlation_other"), params)
            rows += await cur.fetchall()
            found = [
                Found(self.name, q, place, mid, rc, at, done, payload, headers or {}, error)
                for q, place, mid, rc, at, done, payload, headers, error in rows
            ]
            ids = sorted({str(f.headers["message_id"]) for f in found if "message_id" in f.headers})
            cur = await conn.execute(
                queries.query("console_correlation_inbox"), {"message_ids": ids}
            )
            for consumer, message_id, processed_at in await cur.fetchall():
                headers = {"message_id": message_id}
                found.append(
                    Found(
                        self.name, consumer, "inbox", None, None, processed_at, None, None, headers
                    )
                )
        return sorted(found, key=lambda f: (f.at, f.msg_id or 0))


def _depth(s: QueueStats) -> int:
    return s.ready + s.in_flight + s.delayed
