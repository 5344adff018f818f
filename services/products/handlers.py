"""The products worker: reserves stock for placed orders, all lines or none, and releases it.

Both handlers are transactional: the reservation, the stock change and the reply
commit together with pgcourier's inbox record, so a redelivered message changes
nothing twice. Replies carry the order id as ordering key, like the saga's messages.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pgcourier import Context, Message, Worker
from services.shared.bus import receive
from services.shared.contracts import (
    ORDER_PLACED,
    ORDERS_INBOX,
    STOCK_REJECTED,
    STOCK_RELEASE,
    STOCK_RELEASED,
    STOCK_RESERVED,
    InvalidPayload,
)
from services.shared.revocation import handle_user_changed
from services.shared.settings import ServiceSettings
from services.shared.sql import query

log = logging.getLogger(__name__)


class MalformedMessage(InvalidPayload):
    """A message without a usable order id: no reply can be addressed, so it goes to
    the dead letters at once, where an operator can see it."""


def _q(name: str) -> Any:
    return query("products", name)


def _conn(ctx: Context) -> psycopg.AsyncConnection:
    assert ctx.conn is not None, "products handlers must be registered as transactional"
    return ctx.conn


def _uuid(value: Any) -> uuid.UUID | None:
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _order_id(message: Message) -> uuid.UUID:
    payload = message.payload
    order_id = _uuid(payload.get("order_id")) if isinstance(payload, dict) else None
    if order_id is None:
        raise MalformedMessage(f"{message.type} message {message.id} has no valid order_id")
    return order_id


def _demand(lines: Any) -> tuple[dict[uuid.UUID, int], list[str]]:
    """Quantity wanted per product (repeated products summed), and what is wrong with lines."""
    if not isinstance(lines, list) or not lines:
        return {}, ["order has no lines"]
    wanted: dict[uuid.UUID, int] = {}
    problems: list[str] = []
    for line in lines:
        raw_id = line.get("product_id") if isinstance(line, dict) else None
        product_id = _uuid(raw_id)
        if product_id is None:
            problems.append(f"unknown product {raw_id!r}")
            continue
        quantity = line.get("quantity")
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
            problems.append(f"invalid quantity {quantity!r} for product {product_id}")
            continue
        wanted[product_id] = wanted.get(product_id, 0) + quantity
    return wanted, problems


async def _reply(ctx: Context, order_id: uuid.UUID, type: str, **extra: Any) -> None:
    payload = {"order_id": str(order_id), **extra}
    await ctx.send(ORDERS_INBOX, payload, type=type, ordering_key=str(order_id))


async def _lock_products(
    conn: psycopg.AsyncConnection, product_ids: list[uuid.UUID]
) -> dict[uuid.UUID, tuple[str, bool, int]]:
    cur = await conn.execute(_q("product_lock"), {"product_ids": sorted(product_ids)})
    return {pid: (name, active, stock) for pid, name, active, stock in await cur.fetchall()}


async def on_order_placed(message: Message, ctx: Context) -> None:
    conn = _conn(ctx)
    order_id = _order_id(message)
    cur = await conn.execute(_q("reservation_lock"), {"order_id": order_id})
    existing = await cur.fetchone()
    if existing is not None:
        # Decided before (a re-published order, or cancelled first): never reserve twice.
        if existing[0] == "released":
            await _reply(ctx, order_id, STOCK_REJECTED, reason="order cancelled")
        else:
            await _reply(ctx, order_id, STOCK_RESERVED)
        return

    wanted, problems = _demand(message.payload.get("lines"))
    found = await _lock_products(conn, list(wanted))
    for product_id in sorted(wanted):
        if product_id not in found:
            problems.append(f"unknown product {product_id}")
            continue
        name, active, stock = found[product_id]
        if not active:
            problems.append(f"inactive product {name} ({product_id})")
        elif stock < wanted[product_id]:
            problems.append(
                f"{name} ({product_id}) is out of stock: "
                f"{wanted[product_id]} requested, {stock} available"
            )
    if problems:
        log.info("order %s rejected: %s", order_id, "; ".join(problems))
        await _reply(ctx, order_id, STOCK_REJECTED, reason="; ".join(problems))
        return

    product_ids = sorted(wanted)
    await conn.execute(
        _q("product_stock_apply"),
        {"product_ids": product_ids, "deltas": [-wanted[p] for p in product_ids]},
    )
    lines = [{"product_id": str(p), "quantity": wanted[p]} for p in product_ids]
    # A stock.release racing this message inserts its tombstone first; this insert
    # then fails, the transaction rolls back and the retry answers "order cancelled".
    await conn.execute(_q("reservation_insert"), {"order_id": order_id, "lines": Jsonb(lines)})
    await _reply(ctx, order_id, STOCK_RESERVED)


async def on_stock_release(message: Message, ctx: Context) -> None:
    conn = _conn(ctx)
    order_id = _order_id(message)
    cur = await conn.execute(_q("reservation_tombstone"), {"order_id": order_id})
    if await cur.fetchone() is None:
        cur = await conn.execute(_q("reservation_lock"), {"order_id": order_id})
        row = await cur.fetchone()
        assert row is not None, "the tombstone insert found a reservation"
        status, lines = row
        if status == "reserved":
            returned = {uuid.UUID(line["product_id"]): line["quantity"] for line in lines}
            product_ids = sorted(returned)
            await _lock_products(conn, product_ids)
            await conn.execute(
                _q("product_stock_apply"),
                {"product_ids": product_ids, "deltas": [returned[p] for p in product_ids]},
            )
            await conn.execute(_q("reservation_release"), {"order_id": order_id})
    await _reply(ctx, order_id, STOCK_RELEASED)


def setup(worker: Worker, settings: ServiceSettings) -> None:
    receive(worker, ORDER_PLACED, on_order_placed)
    receive(worker, STOCK_RELEASE, on_stock_release)
    handle_user_changed(worker, "products")
