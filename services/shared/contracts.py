"""The messages the services exchange: queues, topics, types and payload shapes.

Every queue is owned by the service that consumes it; others only send to it.
Saga messages carry the order id as ordering key, so one order's events are
handled one at a time and in order.

    orders     -- publish order.placed ------------------> products_inbox (topic)
    products   -- stock.reserved | stock.rejected -------> orders_inbox
    orders     -- payment.charge ------------------------> payments_inbox
    payments   -- payment.captured | payment.declined ---> orders_inbox
    orders     -- stock.release / payment.refund --------> products_inbox / payments_inbox
    (a saga step that gets no reply times out at its deadline, kept on the order:
     services/orders/deadlines.py; saga.timeout messages, which orders once sent
     itself delayed, are still handled when one arrives)
    products   -- publish product.created|updated -------> orders_inbox (topic)
    users      -- publish user.changed ------------------> products_, orders_, payments_inbox
                                                            (topic)
"""

from __future__ import annotations

from dataclasses import dataclass

from pgcourier import RejectMessage


class InvalidPayload(RejectMessage):
    """A message not shaped as its contract says: no retry can fix it, so pgcourier
    sends it to the dead letters at once, with this as the reason."""


# Queues (created by sql/shop/migrations, one per consuming service).
ORDERS_INBOX = "orders_inbox"
PRODUCTS_INBOX = "products_inbox"
PAYMENTS_INBOX = "payments_inbox"

# Topics (events).
ORDER_PLACED = "order.placed"  # {order_id, customer_id, lines: [{product_id, quantity}]}
PRODUCT_CREATED = "product.created"  # {product_id, name, price_cents, active}
PRODUCT_UPDATED = "product.updated"  # same shape
# A role change, deletion or logout everywhere: tokens of the user below token_version
# (all of them if deleted) are refused from now on. {user_id, token_version, deleted}
USER_CHANGED = "user.changed"

# Commands and replies (sent to a queue, type in the envelope).
STOCK_RESERVED = "stock.reserved"  # {order_id}
STOCK_REJECTED = "stock.rejected"  # {order_id, reason}
STOCK_RELEASE = "stock.release"  # {order_id}
STOCK_RELEASED = "stock.released"  # {order_id}
PAYMENT_CHARGE = "payment.charge"  # {order_id, customer_id, amount_cents, card_token}
PAYMENT_CAPTURED = "payment.captured"  # {order_id, payment_id, amount_cents}
PAYMENT_DECLINED = "payment.declined"  # {order_id, reason}
PAYMENT_REFUND = "payment.refund"  # {order_id}
PAYMENT_REFUNDED = "payment.refunded"  # {order_id, amount_cents}
SAGA_TIMEOUT = "saga.timeout"  # {order_id, step}


@dataclass(frozen=True, slots=True)
class Contract:
    """One message type: the queue it lands in, the one service allowed to send it
    (Postgres stamps every message with its sender's role, and the consumer refuses
    any other), and its payload's shape. Grants are generated from this table."""

    type: str
    queue: str
    sender: str
    shape: str


CONTRACTS: tuple[Contract, ...] = (
    Contract(ORDER_PLACED, PRODUCTS_INBOX, "orders", "{order_id, customer_id, lines}"),
    Contract(STOCK_RELEASE, PRODUCTS_INBOX, "orders", "{order_id}"),
    Contract(PRODUCT_CREATED, ORDERS_INBOX, "products", "{product_id, name, price_cents, active}"),
    Contract(PRODUCT_UPDATED, ORDERS_INBOX, "products", "{product_id, name, price_cents, active}"),
    Contract(STOCK_RESERVED, ORDERS_INBOX, "products", "{order_id}"),
    Contract(STOCK_REJECTED, ORDERS_INBOX, "products", "{order_id, reason}"),
    Contract(STOCK_RELEASED, ORDERS_INBOX, "products", "{order_id}"),
    Contract(PAYMENT_CAPTURED, ORDERS_INBOX, "payments", "{order_id, payment_id, amount_cents}"),
    Contract(PAYMENT_DECLINED, ORDERS_INBOX, "payments", "{order_id, reason}"),
    Contract(PAYMENT_REFUNDED, ORDERS_INBOX, "payments", "{order_id, amount_cents}"),
    Contract(SAGA_TIMEOUT, ORDERS_INBOX, "orders", "{order_id, step}"),
    Contract(
        PAYMENT_CHARGE,
        PAYMENTS_INBOX,
        "orders",
        "{order_id, customer_id, amount_cents, card_token}",
    ),
    Contract(PAYMENT_REFUND, PAYMENTS_INBOX, "orders", "{order_id}"),
    # One event, a copy in every inbox of a service that checks tokens.
    *(
        Contract(USER_CHANGED, inbox, "users", "{user_id, token_version, deleted}")
        for inbox in (PRODUCTS_INBOX, ORDERS_INBOX, PAYMENTS_INBOX)
    ),
)

# Every inbox's settings: visibility timeout (the lease) 3 s, 10 attempts, backoff from
# 0.5 s to 30 s (as sql/shop/migrations set them in the one-database topology).
QUEUE_SETTINGS = (3.0, 10, 0.5, 30.0)

# Who consumes each queue: the only role that may read it.
CONSUMERS = {ORDERS_INBOX: "orders", PRODUCTS_INBOX: "products", PAYMENTS_INBOX: "payments"}

# Topic bindings (sql/shop/migrations): a published event reaches these queues.
TOPIC_BINDINGS = (
    (ORDER_PLACED, PRODUCTS_INBOX),
    ("product.*", ORDERS_INBOX),
    *((USER_CHANGED, inbox) for inbox in (PRODUCTS_INBOX, ORDERS_INBOX, PAYMENTS_INBOX)),
)


def contract(kind: str) -> Contract:
    for c in CONTRACTS:
        if c.type == kind:
            return c
    raise KeyError(f"no contract for message type {kind!r}")
