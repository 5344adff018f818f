"""Another pgmq client, as the interop tests play it: pgmq's SQL functions called directly.

It shares nothing with pgcourier but the database: its own connection (autocommit, as
most clients run), pgmq.send / read / set_vt / archive / delete, and headers of any JSON
shape, as pgmq allows.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

# Sends without headers (SQL NULL), unlike headers=None, which sends JSON null.
NO_HEADERS: Any = object()


class RawJson(str):
    """JSON text sent as it is: what Python's json module would not write (1e400)."""


@dataclass(frozen=True, slots=True)
class ForeignRow:
    """A message as pgmq.read and pgmq.set_vt return it."""

    msg_id: int
    read_ct: int
    enqueued_at: datetime
    vt: datetime
    message: Any
    headers: Any


class ForeignClient:
    def __init__(self, conn: psycopg.AsyncConnection) -> None:
        self.conn = conn

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, conninfo: str) -> AsyncIterator[ForeignClient]:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            yield cls(conn)

    async def send(
        self, queue: str, payload: Any, headers: Any = NO_HEADERS, *, delay: int = 0
    ) -> int:
        encoded = None if headers is NO_HEADERS else json.dumps(headers)
        body = payload if isinstance(payload, RawJson) else json.dumps(payload)
        cur = await self.conn.execute(
            "SELECT * FROM pgmq.send(%s, %s::jsonb, %s::jsonb, %s::integer)",
            [queue, body, encoded, delay],
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def read(self, queue: str, *, vt: int, qty: int = 1) -> list[ForeignRow]:
        cur = await self.conn.execute(
            "SELECT msg_id, read_ct, enqueued_at, vt, message, headers FROM pgmq.read(%s, %s, %s)",
            [queue, vt, qty],
        )
        return [ForeignRow(*row) for row in await cur.fetchall()]

    async def set_vt(self, queue: str, msg_id: int, vt: int) -> bool:
        cur = await self.conn.execute(
            "SELECT msg_id FROM pgmq.set_vt(%s, %s::bigint, %s::integer)", [queue, msg_id, vt]
        )
        return await cur.fetchone() is not None

    async def archive(self, queue: str, msg_id: int) -> bool:
        cur = await self.conn.execute("SELECT pgmq.archive(%s, %s::bigint)", [queue, msg_id])
        row = await cur.fetchone()
        return bool(row and row[0])

    async def delete(self, queue: str, msg_id: int) -> bool:
        cur = await self.conn.execute("SELECT pgmq.delete(%s, %s::bigint)", [queue, msg_id])
        row = await cur.fetchone()
        return bool(row and row[0])

    async def take_over(self, queue: str, msg_id: int, *, vt: int) -> ForeignRow:
        """Makes a held message's lease run out and reads it, in one transaction, so no
        one else can claim it in between: the message now belongs to this client."""
        async with self.conn.transaction():
            await self.conn.execute(
                "SELECT msg_id FROM pgmq.set_vt(%s, %s::bigint, 0)", [queue, msg_id]
            )
            rows = await self.read(queue, vt=vt)
        assert [r.msg_id for r in rows] == [msg_id], rows
        return rows[0]

    async def row(self, queue: str, msg_id: int) -> ForeignRow | None:
        """The message as it sits in the queue table, or None when it is gone."""
        cur = await self.conn.execute(
            sql.SQL(
                "SELECT msg_id, read_ct, enqueued_at, vt, message, headers"
                " FROM pgmq.{} WHERE msg_id = %s"
            ).format(sql.Identifier(f"q_{queue}")),
            [msg_id],
        )
        found = await cur.fetchone()
        return ForeignRow(*found) if found else None


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    msg_id: int
    message: Any
    errors: list[Any]

    @property
    def reason(self) -> str:
        """The last error recorded, as text."""
        if not self.errors:
            return ""
        last = self.errors[-1]
        return str(last.get("error", last)) if isinstance(last, dict) else str(last)


async def dead_letters(conn: psycopg.AsyncConnection, queue: str) -> list[DeadLetterRow]:
    cur = await conn.execute(
        "SELECT msg_id, message, errors FROM pgcourier.dead_letter"
        " WHERE queue_name = %s ORDER BY dead_letter_id",
        [queue],
    )
    return [
        DeadLetterRow(msg_id, message, errors or [])
        for msg_id, message, errors in await cur.fetchall()
    ]
