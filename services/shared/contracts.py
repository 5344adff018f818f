"""The messages the services exchange: queues, topics, types and payload shapes.

Every queue is owned by the service that consumes it; others only send to it.
Saga messages carry the order id as ordering key, so one order's events are
handled one at a time and in order.

    orders     -- publish order.placed ------------------> products_inbox (topic)
    products   -- stock.reserved | stock.rejected -------> orders_inbox
    orders     -- payment.charge ------------------------> payments_inbox
    payments   -- payment.captured | payment.declined ---> orders_inbox
    orders     -- stock.release / payment.refund --------> products_inbox / payments_inbox
    orders     -- saga.timeout (delayed, to itself) -----> orders_inbox
    products   -- publish product.created|updated -------> orders_inbox (topic)
    users      -- publish user.changed ------------------> products_, orders_, payments_inbox
                                                            (topic)
"""

from __future__ import annotations

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
