"""The order saga: what each reply or timeout does to an order, given its status.

`decide` is pure, so the whole state machine reads (and is tested) as a table;
`apply` carries a decision out inside the transaction of the message's handler, or of
the expiry of a step's deadline (deadlines.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg

from pgcourier import ConfigurationError, Courier
from services.shared import contracts as c
from services.shared.contracts import InvalidPayload
from services.shared.sql import query

PENDING = "pending"
AWAITING_PAYMENT = "awaiting_payment"
CONFIRMED = "confirmed"
CANCELLED = "cancelled"

STEP_STOCK = "stock"
STEP_PAYMENT = "payment"
# The step an order in the saga waits on, by its status.
STEP_OF = {PENDING: STEP_STOCK, AWAITING_PAYMENT: STEP_PAYMENT}

# The queues a step waits on: its command's (products, payments) and its reply's
# (orders). A worker that crashes holding a step's message gives it back only when
# its lease runs out, and a failed first attempt is retried after the first backoff;
# the step's timeout must leave room for both, or one crash cancels a sale.
SAGA_QUEUES = (c.PRODUCTS_INBOX, c.PAYMENTS_INBOX, c.ORDERS_INBOX)
# A step is two hops (the command, then its reply), and a crash (a worker's, or the
# database's) can hold up each by a lease and a backoff: a 30-minute fault run with
# room for one hop only cancelled 1.8% of good sales.
STEP_HOPS = 2
# Room for the redelivered messages to be claimed and handled.
STEP_TIMEOUT_MARGIN = 1.5


@dataclass(frozen=True, slots=True)
class Order:
    order_id: str
    status: str
    customer_id: str
    total_cents: int
    # Only while pending: the transition out of pending erases it (order_transition).
    card_token: str | None


@dataclass(frozen=True, slots=True)
class Decision:
    """to_status None: the order stays as it is. sends: message types to send out."""

    detail: str
    to_status: str | None = None
    reason: str | None = None
    sends: tuple[str, ...] = ()
    timeout: str | None = None  # the saga step whose deadline to start


def decide(kind: str, status: str, payload: dict[str, Any]) -> Decision | None:
    """What message `kind` does to an order in `status`; None: nothing, not even history."""
    if kind == c.STOCK_RESERVED:
        if status == PENDING:
            return Decision(
                "stock reserved; charging the payment",
                AWAITING_PAYMENT,
                sends=(c.PAYMENT_CHARGE,),
                timeout=STEP_PAYMENT,
            )
        if status == CANCELLED:
            # The order gave up waiting (timeout) before products answered.
            return Decision(
                "stock reserved after cancellation; releasing it", sends=(c.STOCK_RELEASE,)
            )
    elif kind == c.STOCK_REJECTED:
        if status == PENDING:
            return Decision("stock rejected", CANCELLED, reason=f"out of stock: {_reason(payload)}")
    elif kind == c.PAYMENT_CAPTURED:
        if status == AWAITING_PAYMENT:
            payment = payload.get("payment_id")
            return Decision(
                f"payment {payment} captured" if payment else "payment captured", CONFIRMED
            )
        if status == CANCELLED:
            return Decision(
                "payment captured after cancellation; refunding it", sends=(c.PAYMENT_REFUND,)
            )
    elif kind == c.PAYMENT_DECLINED:
        if status == AWAITING_PAYMENT:
            return Decision(
                "payment declined; releasing the stock",
                CANCELLED,
                reason=f"payment declined: {_reason(payload)}",
                sends=(c.STOCK_RELEASE,),
            )
    elif kind == c.SAGA_TIMEOUT:
        step = payload.get("step")
        if step == STEP_STOCK and status == PENDING:
            # Products may still reserve; the release leaves a tombstone so it won't.
            return Decision(
                "timed out waiting for stock; releasing any reservation",
                CANCELLED,
                reason="timed out waiting for stock",
                sends=(c.STOCK_RELEASE,),
            )
        if step == STEP_PAYMENT and status == AWAITING_PAYMENT:
            return Decision(
                "timed out waiting for payment; releasing the stock and voiding the charge",
                CANCELLED,
                reason="timed out waiting for payment",
                sends=(c.STOCK_RELEASE, c.PAYMENT_REFUND),
            )
        # The step finished in time: a timeout that fires later is the normal case.
        return None
    elif kind == c.STOCK_RELEASED:
        return Decision("stock released")
    elif kind == c.PAYMENT_REFUNDED:
        amount = payload.get("amount_cents")
        return Decision(
            f"payment refunded ({amount} cents)" if amount is not None else "payment refunded"
        )
    # A reply the order has moved past (a duplicate, or one that contradicts an
    # earlier reply): recorded, so the history shows it arrived, and otherwise ignored.
    return Decision(f"{kind} ignored: order is {status}")


def _reason(payload: dict[str, Any]) -> str:
    reason = payload.get("reason")
    return reason if isinstance(reason, str) and reason else "no reason given"


def lost_to_timeout(kind: str, decision: Decision) -> bool:
    """Whether the decision cancels an order because a step timed out, or undoes what
    a step did after its order had timed out: a sale lost, not a customer's problem."""
    if kind == c.SAGA_TIMEOUT:
        return decision.to_status == CANCELLED
    return decision.to_status is None and bool(decision.sends)


def order_id_of(payload: Any) -> str:
    """The payload's order id, canonical; a malformed message is rejected (dead letters)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("order_id"), str):
        raise InvalidPayload("payload has no order_id string")
    try:
        return str(uuid.UUID(payload["order_id"]))
    except ValueError:
        raise InvalidPayload(f"order_id {payload['order_id']!r} is not a uuid") from None


async def record_event(
    conn: psycopg.AsyncConnection, order_id: str, kind: str, status: str, detail: str
) -> None:
    await conn.execute(
        query("orders", "order_event_insert"),
        {"order_id": order_id, "kind": kind, "status": status, "detail": detail},
    )


async def lock_order(conn: psycopg.AsyncConnection, order_id: str) -> Order | None:
    cur = await conn.execute(query("orders", "order_lock"), {"order_id": order_id})
    row = await cur.fetchone()
    return None if row is None else Order(order_id, *row)


# Sends a message in the caller's transaction: a handler's ctx.send, or the courier's
# send on the expiry's connection.
Send = Callable[..., Awaitable[object]]


async def apply(
    conn: psycopg.AsyncConnection,
    send: Send,
    order: Order,
    kind: str,
    decision: Decision,
    timeout_s: float,
) -> str:
    """Carries out a decision in the transaction of `conn` (the order is locked in it);
    returns the resulting status. A transition sets the next step's deadline, if the
    decision starts one, and clears it otherwise."""
    status = order.status
    if decision.to_status is not None:
        cur = await conn.execute(
            query("orders", "order_transition"),
            {
                "order_id": order.order_id,
                "from_status": order.status,
                "to_status": decision.to_status,
                "reason": decision.reason,
                "deadline_s": timeout_s if decision.timeout is not None else None,
            },
        )
        # The row is locked, so the guard cannot miss; checked anyway rather than assumed.
        if await cur.fetchone() is None:
            raise RuntimeError(f"order {order.order_id} left {order.status} under a lock")
        status = decision.to_status
    detail = decision.detail if decision.reason is None else f"{decision.detail}: {decision.reason}"
    await record_event(conn, order.order_id, kind, status, detail)
    for command in decision.sends:
        queue, payload = _command(order, command)
        await send(queue, payload, type=command, ordering_key=order.order_id)
    return status


def _command(order: Order, command: str) -> tuple[str, dict[str, Any]]:
    if command == c.PAYMENT_CHARGE:
        return c.PAYMENTS_INBOX, {
            "order_id": order.order_id,
            "customer_id": order.customer_id,
            "amount_cents": order.total_cents,
            # None cannot happen (only a pending order is charged); "" would be declined.
            "card_token": order.card_token or "",
        }
    if command == c.PAYMENT_REFUND:
        return c.PAYMENTS_INBOX, {"order_id": order.order_id}
    if command == c.STOCK_RELEASE:
        return c.PRODUCTS_INBOX, {"order_id": order.order_id}
    raise ValueError(f"unknown command {command!r}")


def step_timeout_floor(
    visibility_timeout_s: float, backoff_base_s: float, backoff_max_s: float
) -> float:
    """The shortest step timeout a queue with these settings allows."""
    hop = visibility_timeout_s + min(backoff_base_s, backoff_max_s)
    return STEP_TIMEOUT_MARGIN * STEP_HOPS * hop


async def check_step_timeout(courier: Courier, step_timeout_s: float) -> None:
    """Refuses (ConfigurationError) a step timeout that a crashed worker's lease could eat."""
    for queue in SAGA_QUEUES:
        q = await courier.queue_settings(queue)
        floor = step_timeout_floor(q.visibility_timeout_s, q.backoff_base_s, q.backoff_max_s)
        if step_timeout_s < floor:
            raise ConfigurationError(
                f"SHOP_SAGA_STEP_TIMEOUT={step_timeout_s:g}s is too short for queue {queue}:"
                f" its lease (visibility timeout) is {q.visibility_timeout_s:g}s and its first"
                f" retry backoff up to {min(q.backoff_base_s, q.backoff_max_s):g}s, so a"
                " message held by a crashed worker would come back only as the saga gives up;"
                f" use a step timeout of at least {floor:g}s ({STEP_TIMEOUT_MARGIN:g} x"
                f" {STEP_HOPS} hops x (lease + backoff)) or shorten the queue's visibility"
                " timeout"
            )


def check_step_timeout_blocking(database_url: str, step_timeout_s: float) -> None:
    """check_step_timeout for synchronous start-up code (a worker's setup), on its own
    connection and event loop, in a thread so that a running loop is not re-entered."""

    async def check() -> None:
        async with Courier(database_url, pool_min_size=1, pool_max_size=1) as courier:
            await check_step_timeout(courier, step_timeout_s)

    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, check()).result()
