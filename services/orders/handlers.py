"""The orders worker: the local product copy and the saga, all on orders_inbox."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from pgcourier import Context, Courier, Handler, Message, Worker
from services.shared import contracts as c
from services.shared.bus import receive
from services.shared.contracts import InvalidPayload
from services.shared.revocation import handle_user_changed
from services.shared.settings import ServiceSettings
from services.shared.sql import query

from . import deadlines, saga

log = logging.getLogger(__name__)

SAGA_MESSAGES = (
    c.STOCK_RESERVED,
    c.STOCK_REJECTED,
    c.PAYMENT_CAPTURED,
    c.PAYMENT_DECLINED,
    c.SAGA_TIMEOUT,
    c.STOCK_RELEASED,
    c.PAYMENT_REFUNDED,
)


async def on_product(message: Message, ctx: Context) -> None:
    assert ctx.conn is not None
    await ctx.conn.execute(query("orders", "product_upsert"), product_row(message))


def product_row(message: Message) -> dict[str, Any]:
    """The payload as a product row; a malformed event is rejected (dead letters at once)."""
    p = message.payload
    if not isinstance(p, dict):
        raise InvalidPayload("product event payload is not an object")
    name, price, active = p.get("name"), p.get("price_cents"), p.get("active")
    if not isinstance(name, str) or not isinstance(active, bool):
        raise InvalidPayload("product event needs a name string and an active boolean")
    if not isinstance(price, int) or isinstance(price, bool) or price < 0:
        raise InvalidPayload(f"product event price_cents {price!r} is not a non-negative integer")
    try:
        product_id = str(uuid.UUID(str(p.get("product_id"))))
    except ValueError:
        raise InvalidPayload(
            f"product event product_id {p.get('product_id')!r} is not a uuid"
        ) from None
    return {
        "product_id": product_id,
        "name": name,
        "price_cents": price,
        "active": active,
        # Sender's clock: orders it against other events of the same product.
        "updated_at": message.headers.get("sent_at"),
    }


def saga_handler(kind: str, timeout_s: float) -> Handler:
    async def handle(message: Message, ctx: Context) -> None:
        assert ctx.conn is not None
        order_id = saga.order_id_of(message.payload)
        order = await saga.lock_order(ctx.conn, order_id)
        if order is None:
            # Every order is committed before any message about it is sent, so this is
            # someone else's mistake; retrying would not make the order appear.
            log.warning("%s for unknown order %s ignored", kind, order_id)
            return
        decision = saga.decide(kind, order.status, message.payload)
        if decision is not None:
            status = await saga.apply(ctx.conn, ctx.send, order, kind, decision, timeout_s)
            # A timeout cancelling an order, and what it leaves to undo, lose a sale:
            # worth a warning. Declines and sold-out stock are business as usual.
            level = logging.WARNING if saga.lost_to_timeout(kind, decision) else logging.INFO
            log.log(
                level,
                "order %s: %s (%s -> %s): %s",
                order_id,
                kind,
                order.status,
                status,
                decision.detail,
            )

    return handle


def setup(worker: Worker, settings: ServiceSettings) -> None:
    # This worker schedules the payment step's timeout: refuse a too-short one.
    saga.check_step_timeout_blocking(settings.database_url, settings.saga_step_timeout_s)
    for topic in (c.PRODUCT_CREATED, c.PRODUCT_UPDATED):
        receive(worker, topic, on_product)
    handle_user_changed(worker, "orders")
    for kind in SAGA_MESSAGES:
        receive(worker, kind, saga_handler(kind, settings.saga_step_timeout_s))


async def expire_saga_steps(courier: Courier, settings: ServiceSettings) -> None:
    """The worker process's companion: times out saga steps past their deadline."""
    await deadlines.expire_steps(
        courier,
        timeout_s=settings.saga_step_timeout_s,
        every_s=deadlines.expiry_interval(settings.saga_step_timeout_s),
    )
