"""Expiring saga steps: an order whose step is past its deadline times out.

The deadline lives on the order (step_deadline), set when the step starts and moved on
or cleared by the transition that ends it, in the same transaction; this replaces a
delayed saga.timeout message per step, which on the normal path arrived after its
step had finished and did nothing. Each orders worker process runs `expire_steps`,
which every replica may run at once: the due orders are locked SKIP LOCKED.
A timeout is decided by `saga.decide`, like any reply, and recorded as saga.timeout.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from datetime import datetime

import psycopg

from pgcourier import Courier, DatabaseError
from services.shared import contracts as c
from services.shared.sql import query

from . import saga

log = logging.getLogger(__name__)

# Orders expired per transaction; a pass goes on while it finds that many.
BATCH = 50


async def expire_due(
    courier: Courier, *, timeout_s: float, now: datetime | None = None, limit: int = BATCH
) -> list[tuple[str, str]]:
    """Times out the orders whose step is due at `now` (the database's clock when None),
    up to `limit`, in one transaction; returns (order id, status after) of each."""
    expired = []
    async with courier.pool.connection() as conn, conn.transaction():
        cur = await conn.execute(query("orders", "order_step_due"), {"now": now, "limit": limit})
        for order_id, status, customer_id, total_cents, card_token in await cur.fetchall():
            order = saga.Order(str(order_id), status, customer_id, total_cents, card_token)
            after = await _time_out(conn, courier, order, timeout_s)
            expired.append((order.order_id, after))
    return expired


async def _time_out(
    conn: psycopg.AsyncConnection, courier: Courier, order: saga.Order, timeout_s: float
) -> str:
    payload = {"order_id": order.order_id, "step": saga.STEP_OF[order.status]}
    decision = saga.decide(c.SAGA_TIMEOUT, order.status, payload)
    # Only orders in a step have a deadline (a constraint says so), and a step that
    # times out always cancels.
    assert decision is not None and decision.to_status == saga.CANCELLED, decision
    # The compensations carry the order's id as their correlation id, as the whole
    # saga does (POST /orders starts it so).
    send = functools.partial(courier.send, conn=conn, correlation_id=order.order_id)
    status = await saga.apply(conn, send, order, c.SAGA_TIMEOUT, decision, timeout_s)
    log.warning(
        "order %s: %s (%s -> %s): %s",
        order.order_id,
        c.SAGA_TIMEOUT,
        order.status,
        status,
        decision.detail,
    )
    return status


async def expire_steps(courier: Courier, *, timeout_s: float, every_s: float) -> None:
    """Runs until cancelled: every `every_s`, times out every order past its step's
    deadline. A pass that fails (the database away) is logged and tried again."""
    while True:
        try:
            while len(await expire_due(courier, timeout_s=timeout_s)) == BATCH:
                pass
        except (DatabaseError, psycopg.Error, OSError) as exc:
            log.warning("expiring saga steps failed, trying again in %.1fs: %s", every_s, exc)
        await asyncio.sleep(every_s)


def expiry_interval(timeout_s: float) -> float:
    """How often to look: a second, or a tenth of a short step timeout (the tests')."""
    return min(1.0, timeout_s / 10)
