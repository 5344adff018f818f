"""The receive side's SQL seam: one function per query file, typed rows in and out.

Every query a worker runs (claim, acknowledge, retry, dead-letter, renew, inbox,
heartbeat) goes through here, so fencing lives in one place: whatever changes a
claimed message names it by a `Lease` (msg_id and the read_ct its claim saw), and a
message claimed again since (its read_ct moved on) is left to its new holder. Each
function takes an optional `now`, so tests can move time instead of waiting for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import psycopg

from . import claim_function, queries


class Lease(NamedTuple):
    """A claimed message as its claim saw it: what acknowledging it is fenced on.

    A named tuple, as ClaimedRow: one of each is made per message on the hot path, and
    a tuple is built in a third of a frozen dataclass's time."""

    msg_id: int
    read_ct: int


class ClaimedRow(NamedTuple):
    msg_id: int
    read_ct: int
    enqueued_at: datetime
    message: str | None  # JSON text, decoded by the worker one message at a time
    headers: str | None
    sender: str | None  # the database role that inserted it, stamped by Postgres
    # A keyed message's: whether another of its key waited behind it when claimed;
    # None for one without a key.
    more_of_key: bool | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    rows: list[ClaimedRow]
    next_due_s: float | None  # seconds until the next message not ready now is due, if
    # that is within the claim's horizon


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed attempt to record: retried after delay_s, or dead-lettered when dead."""

    lease: Lease
    errors: str  # the message's whole error history, JSON array text
    attempts: int
    delay_s: float = 0.0


async def claim(
    conn: psycopg.AsyncConnection,
    queue: str,
    *,
    limit: int,
    vt_s: float,
    horizon_s: float = 1.0,
    now: datetime | None = None,
    through_function: bool = False,
) -> Claim:
    """horizon_s: how far ahead to look for the next message to fall due.
    through_function: call the queue's claim function (claim_function.py), which the
    server keeps parsed, instead of sending the statement."""
    statement = (
        claim_function.call(queue)
        if through_function
        else queries.queue_query("message_claim", queue)
    )
    cur = await conn.execute(
        statement, {"now": now, "limit": limit, "vt_s": vt_s, "horizon_s": horizon_s}
    )
    rows = await cur.fetchall()
    next_due_s: float | None = None
    claimed = []
    for msg_id, read_ct, enqueued_at, message, headers, sender, more, due in rows:
        if msg_id is None:
            next_due_s = due
        else:
            claimed.append(ClaimedRow(msg_id, read_ct, enqueued_at, message, headers, sender, more))
    claimed.sort(key=lambda row: row.msg_id)  # UPDATE ... RETURNING keeps no order
    return Claim(claimed, next_due_s)


def _lease_params(leases: Sequence[Lease]) -> dict[str, Any]:
    return {"msg_ids": [x.msg_id for x in leases], "read_cts": [x.read_ct for x in leases]}


async def acknowledge(
    conn: psycopg.AsyncConnection, queue: str, leases: Sequence[Lease], *, archive: bool
) -> int:
    """Deletes (or archives) the messages still held by these leases; returns how many."""
    name = "message_archive" if archive else "message_delete"
    cur = await conn.execute(queries.queue_query(name, queue), _lease_params(leases))
    return cur.rowcount


async def retry(
    conn: psycopg.AsyncConnection,
    queue: str,
    failures: Sequence[Failure],
    *,
    now: datetime | None = None,
) -> int:
    cur = await conn.execute(
        queries.queue_query("message_retry", queue),
        {
            **_lease_params([f.lease for f in failures]),
            "now": now,
            "delays": [f.delay_s for f in failures],
            "errors": [f.errors for f in failures],
        },
    )
    return cur.rowcount


async def dead_letter(
    conn: psycopg.AsyncConnection, queue: str, failures: Sequence[Failure]
) -> int:
    cur = await conn.execute(
        queries.queue_query("message_dead_letter", queue),
        {
            **_lease_params([f.lease for f in failures]),
            "queue_name": queue,
            "attempts": [f.attempts for f in failures],
            "errors": [f.errors for f in failures],
        },
    )
    return cur.rowcount


async def extend(
    conn: psycopg.AsyncConnection,
    queue: str,
    leases: Sequence[Lease],
    *,
    vt_s: float,
    now: datetime | None = None,
) -> set[int]:
    """Renews the leases still held; returns the msg_ids renewed (the others were lost)."""
    cur = await conn.execute(
        queries.queue_query("message_extend", queue),
        {**_lease_params(leases), "now": now, "vt_s": vt_s},
    )
    return {row[0] for row in await cur.fetchall()}


async def inbox_claim(conn: psycopg.AsyncConnection, consumer: str, message_id: str) -> bool:
    """True the first time (consumer, message_id) is seen; waits on a concurrent twin."""
    cur = await conn.execute(
        queries.query("inbox_claim"), {"consumer": consumer, "message_id": message_id}
    )
    return await cur.fetchone() is not None


@dataclass(frozen=True, slots=True)
class Beat:
    worker_id: str
    hostname: str
    pid: int
    name: str | None
    queues: list[str]
    started_at: datetime
    last_claim_at: datetime | None
    listening: bool
    loops_alive: bool


async def worker_beat(
    conn: psycopg.AsyncConnection,
    beat: Beat,
    *,
    forget_after_s: float,
    now: datetime | None = None,
) -> None:
    await conn.execute(
        queries.query("worker_beat"),
        {
            "worker_id": beat.worker_id,
            "hostname": beat.hostname,
            "pid": beat.pid,
            "name": beat.name,
            "queues": beat.queues,
            "started_at": beat.started_at,
            "last_claim_at": beat.last_claim_at,
            "listening": beat.listening,
            "loops_alive": beat.loops_alive,
            "forget_after_s": forget_after_s,
            "now": now,
        },
    )


async def worker_forget(conn: psycopg.AsyncConnection, worker_id: str) -> None:
    await conn.execute(queries.query("worker_forget"), {"worker_id": worker_id})


@dataclass(frozen=True, slots=True)
class ConsumerHealth:
    live_workers: int
    last_claim_at: datetime | None
    oldest_ready_age_s: float | None


async def consumer_health(
    conn: psycopg.AsyncConnection,
    queue: str,
    *,
    alive_within_s: float,
    now: datetime | None = None,
) -> ConsumerHealth:
    cur = await conn.execute(
        queries.queue_query("consumer_health", queue),
        {"queue_name": queue, "alive_within_s": alive_within_s, "now": now},
    )
    row = await cur.fetchone()
    assert row is not None  # the query always returns one row
    return ConsumerHealth(int(row[0]), row[1], row[2])
