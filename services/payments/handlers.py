"""The payments worker: charges and refunds arriving on payments_inbox.

Every handler is transactional: the inbox record, the payment row and the reply
commit together, so a redelivered command changes nothing and replies once.
Replies carry the order id as ordering key, like the commands that caused them.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import psycopg

from pgcourier import Context, Handler, Message, Worker
from services.shared import contracts
from services.shared.bus import receive
from services.shared.contracts import InvalidPayload
from services.shared.revocation import handle_user_changed
from services.shared.settings import ServiceSettings
from services.shared.sql import query

from . import provider

log = logging.getLogger(__name__)

_INT_MAX = 2**31 - 1


def _uuid(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    try:
        return str(uuid.UUID(value))
    except (TypeError, ValueError, AttributeError):
        raise InvalidPayload(f"{name} must be a UUID string, got {value!r}") from None


def _payload(message: Message) -> dict[str, Any]:
    if not isinstance(message.payload, dict):
        raise InvalidPayload(f"payload must be a JSON object, got {message.payload!r}")
    return message.payload


def _charge_command(payload: dict[str, Any]) -> tuple[str, str, int, str]:
    order_id = _uuid(payload, "order_id")
    customer_id = payload.get("customer_id")
    if not isinstance(customer_id, str) or not customer_id:
        raise InvalidPayload("customer_id must be a non-empty string")
    amount = payload.get("amount_cents")
    if not isinstance(amount, int) or isinstance(amount, bool) or not 0 <= amount <= _INT_MAX:
        raise InvalidPayload(f"amount_cents must be an integer from 0 to {_INT_MAX}")
    token = payload.get("card_token")
    if not isinstance(token, str):
        raise InvalidPayload("card_token must be a string")
    return order_id, customer_id, amount, token


async def _insert(
    conn: psycopg.AsyncConnection,
    order_id: str,
    customer_id: str | None,
    amount_cents: int,
    status: str,
    reason: str | None = None,
) -> str | None:
    """The new payment's id, or None if the order already has one."""
    cur = await conn.execute(
        query("payments", "payment_insert"),
        {
            "order_id": order_id,
            "customer_id": customer_id,
            "amount_cents": amount_cents,
            "status": status,
            "reason": reason,
        },
    )
    row = await cur.fetchone()
    return str(row[0]) if row else None


def charge_handler(card_provider: provider.CardProvider) -> Handler:
    async def on_charge(message: Message, ctx: Context) -> None:
        await charge(message, ctx, card_provider)

    return on_charge


async def charge(message: Message, ctx: Context, card_provider: provider.CardProvider) -> None:
    order_id, customer_id, amount, token = _charge_command(_payload(message))
    assert ctx.conn is not None
    # The pending row is written before the provider is asked: it claims the
    # order (a second charge finds it and stops), and it is what a provider that
    # never answers leaves behind.
    payment_id = await _insert(ctx.conn, order_id, customer_id, amount, "pending")
    if payment_id is None:
        log.info("order %s already has a payment; charge ignored", order_id)
        return
    # The key comes from the command, not from payment_id: this transaction (and the
    # payment id made in it) can be lost after the provider charged, and the retry
    # must find that charge rather than make a second one.
    try:
        answer = await card_provider.charge(
            idempotency_key=provider.charge_key(order_id),
            order_id=order_id,
            amount_cents=amount,
            card_token=token,
        )
    except provider.IdempotencyConflict as exc:
        raise InvalidPayload(f"order {order_id}: {exc}") from exc
    if answer is None:
        log.warning(
            "provider did not answer for payment %s (order %s): left pending", payment_id, order_id
        )
        return
    settle = {"payment_id": payment_id, "reason": None, "provider_ref": None}
    if isinstance(answer, provider.Captured):
        settle |= {"status": "captured", "provider_ref": answer.provider_ref}
        reply_type = contracts.PAYMENT_CAPTURED
        reply: dict[str, Any] = {
            "order_id": order_id,
            "payment_id": payment_id,
            "amount_cents": amount,
        }
    else:
        settle |= {"status": "declined", "reason": answer.reason}
        reply_type = contracts.PAYMENT_DECLINED
        reply = {"order_id": order_id, "reason": answer.reason}
    await ctx.conn.execute(query("payments", "payment_settle"), settle)
    await ctx.send(contracts.ORDERS_INBOX, reply, type=reply_type, ordering_key=order_id)


async def _refund_existing(conn: psycopg.AsyncConnection, order_id: str) -> int | None:
    """Cents given back (0 for a voided pending charge), or None if nothing was refundable."""
    cur = await conn.execute(query("payments", "payment_refund"), {"order_id": order_id})
    row = await cur.fetchone()
    return None if row is None else int(row[1])


async def on_refund(message: Message, ctx: Context) -> None:
    order_id = _uuid(_payload(message), "order_id")
    assert ctx.conn is not None
    refunded = await _refund_existing(ctx.conn, order_id)
    if refunded is None:
        # No refundable payment: either none yet, and a tombstone makes sure a
        # late charge never captures, or one that is already final (say nothing).
        tombstone = await _insert(ctx.conn, order_id, None, 0, "voided", "refunded before charge")
        if tombstone is not None:
            refunded = 0
        else:
            # A charge committed between the two statements: refund that one.
            refunded = await _refund_existing(ctx.conn, order_id)
    if refunded is None:
        log.info("order %s has no refundable payment; refund ignored", order_id)
        return
    await ctx.send(
        contracts.ORDERS_INBOX,
        {"order_id": order_id, "amount_cents": refunded},
        type=contracts.PAYMENT_REFUNDED,
        ordering_key=order_id,
    )


def setup(
    worker: Worker,
    settings: ServiceSettings,
    *,
    card_provider: provider.CardProvider | None = None,
) -> None:
    """card_provider: by default one on the service's own database (the fake's ledger)."""
    card_provider = card_provider or provider.CardProvider(settings.database_url)
    on_charge = charge_handler(card_provider)
    receive(worker, contracts.PAYMENT_CHARGE, on_charge)
    receive(worker, contracts.PAYMENT_REFUND, on_refund)
    handle_user_changed(worker, "payments")
