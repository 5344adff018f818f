"""The orders service: its HTTP API and the order saga it runs.

Products and payments are not running: the tests send their replies to orders_inbox
as they would, and read what orders sends them straight from their queues.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from pgcourier import ConfigurationError, Courier
from services.orders import deadlines, saga
from services.orders.app import MAX_ORDER_TOTAL_CENTS, create_app
from services.orders.handlers import setup
from services.shared import idempotency
from services.shared.database import shop_migrate
from services.shared.settings import ServiceSettings
from tests.helpers import wait_until
from tests.shop.conftest import (
    acting,
    run_service_worker,
    sender_of,
    serve_app,
    service_in_both_topologies,
    token_for,
)

ALICE, BOB = "user-alice", "user-bob"
PEN = "0b5f0b6e-7c44-4b8f-9a55-2f5d7d1e0a01"
INK = "0b5f0b6e-7c44-4b8f-9a55-2f5d7d1e0a02"
OLD = "0b5f0b6e-7c44-4b8f-9a55-2f5d7d1e0a03"  # inactive
ABSENT = "0b5f0b6e-7c44-4b8f-9a55-2f5d7d1e0aff"  # never announced
CATALOGUE = [
    {"product_id": PEN, "name": "Pen", "price_cents": 250, "active": True},
    {"product_id": INK, "name": "Ink", "price_cents": 1200, "active": True},
    {"product_id": OLD, "name": "Quill", "price_cents": 900, "active": False},
]
SETTLE_S = 10.0


@dataclass
class Shop:
    client: httpx.AsyncClient
    bus: Courier
    url: str
    settings: ServiceSettings
    # As the orders service's role: what its worker process's expiry of saga steps uses.
    orders: Courier

    async def sql(self, text: str, params: Any = None) -> list[tuple[Any, ...]]:
        async with await psycopg.AsyncConnection.connect(self.url) as conn:
            cur = await conn.execute(text, params)
            return await cur.fetchall()

    async def sent(self, queue: str, type: str, order_id: str) -> list[dict[str, Any]]:
        """Payloads of the given type for the order waiting in a queue, oldest first."""
        rows = await self.sql(
            sql.SQL(
                "SELECT message, headers FROM {} "
                "WHERE headers ->> 'type' = %s AND message ->> 'order_id' = %s ORDER BY msg_id"
            ).format(sql.Identifier("pgmq", f"q_{queue}"))
            if await self.local(queue)
            # Another service's queue, in its own database: what waits in the outbox.
            else sql.SQL(
                "SELECT message, headers FROM pgcourier.outbox WHERE queue_name = %s"
                " AND headers ->> 'type' = %s AND message ->> 'order_id' = %s ORDER BY id"
            ),
            [type, order_id] if await self.local(queue) else [queue, type, order_id],
        )
        for _, headers in rows:
            assert headers["x-pgmq-group"] == order_id  # one order's messages stay in order
        return [message for message, _ in rows]

    async def local(self, queue: str) -> bool:
        rows = await self.sql("SELECT 1 FROM pgcourier.queue WHERE queue_name = %s", [queue])
        return bool(rows)

    async def sent_anything_to(self, queue: str) -> int:
        if await self.local(queue):
            rows = await self.sql(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("pgmq", f"q_{queue}"))
            )
        else:
            rows = await self.sql(
                "SELECT count(*) FROM pgcourier.outbox WHERE queue_name = %s", [queue]
            )
        return rows[0][0]

    async def reply(self, type: str, payload: dict[str, Any]) -> None:
        """A reply as products or payments send it."""
        await acting(self.bus, sender_of(type)).send(
            "orders_inbox", payload, type=type, ordering_key=payload["order_id"]
        )

    async def place(self, user: str = ALICE, lines: list[Any] | None = None) -> str:
        body = {"lines": lines or [{"product_id": PEN, "quantity": 2}], "card_token": "tok_visa"}
        response = await self.client.post("/orders", json=body, headers=token_for(user))
        assert response.status_code == 202, response.text
        return response.json()["order_id"]

    async def order(self, order_id: str, user: str = ALICE) -> dict[str, Any]:
        response = await self.client.get(f"/orders/{order_id}", headers=token_for(user))
        assert response.status_code == 200, response.text
        return response.json()

    async def wait_status(self, order_id: str, status: str) -> dict[str, Any]:
        async def reached() -> bool:
            return (await self.order(order_id))["status"] == status

        await wait_until(reached, within=SETTLE_S, interval=0.05)
        return await self.order(order_id)

    async def wait_sent(self, queue: str, type: str, order_id: str, count: int = 1) -> None:
        async def arrived() -> bool:
            return len(await self.sent(queue, type, order_id)) >= count

        await wait_until(arrived, within=SETTLE_S, interval=0.05)

    async def expire_steps(self, *, after_s: float | None = None) -> list[tuple[str, str]]:
        """Times out saga steps as the orders worker would `after_s` seconds from now
        (by default once every step started so far is past its deadline); returns
        (order id, status after) of each. The tests' worker runs no expiry of its own:
        a step times out when a test says so, not when a real clock runs out."""
        if after_s is None:
            after_s = self.settings.saga_step_timeout_s + 1
        now = datetime.now(UTC) + timedelta(seconds=after_s)
        return await deadlines.expire_due(
            self.orders, timeout_s=self.settings.saga_step_timeout_s, now=now
        )

    async def deadline_in(self, order_id: str) -> float | None:
        """Seconds until the order's step times out; None: it waits on no step."""
        rows = await self.sql(
            'SELECT extract(epoch FROM step_deadline - now()) FROM orders."order"'
            " WHERE order_id = %s",
            [order_id],
        )
        return None if rows[0][0] is None else float(rows[0][0])

    async def wait_idle(self) -> None:
        """Until orders_inbox is empty: every reply has been handled."""

        async def idle() -> bool:
            return (await self.sql("SELECT count(*) FROM pgmq.q_orders_inbox"))[0][0] == 0

        await wait_until(idle, within=SETTLE_S, interval=0.05)


shop_url = service_in_both_topologies(
    "orders", "replies and events arrive over links, its commands wait in its outbox"
)


@pytest.fixture
async def shop(
    shop_url: str, settings_for: Callable[[str], ServiceSettings]
) -> AsyncIterator[Shop]:
    settings = settings_for("orders")
    async with (
        Courier(shop_url, pool_max_size=2) as bus,
        Courier(settings.database_url, pool_max_size=2) as orders,
        run_service_worker(settings, setup),
        serve_app(create_app(settings)) as client,
    ):
        shop = Shop(client, bus, shop_url, settings, orders)
        for product in CATALOGUE:
            await acting(bus, "products").publish(
                "product.created", product, ordering_key=product["product_id"]
            )

        async def copied() -> bool:
            rows = await shop.sql("SELECT count(*) FROM orders.product")
            return rows[0][0] == len(CATALOGUE)

        await wait_until(copied, within=SETTLE_S, interval=0.05)
        yield shop


# -- placing an order ------------------------------------------------------------


async def test_placing_an_order_is_pending_and_publishes_order_placed_with_the_lines(
    shop: Shop,
) -> None:
    lines = [{"product_id": PEN, "quantity": 3}, {"product_id": INK, "quantity": 1}]
    response = await shop.client.post(
        "/orders", json={"lines": lines, "card_token": "tok_visa"}, headers=token_for(ALICE)
    )
    assert response.status_code == 202
    order_id = response.json()["order_id"]
    assert response.json() == {"order_id": order_id, "status": "pending"}

    order = await shop.order(order_id)
    assert order["status"] == "pending" and order["reason"] is None
    assert order["customer_id"] == ALICE
    assert order["total_cents"] == 3 * 250 + 1200
    assert order["lines"] == [
        {"product_id": PEN, "name": "Pen", "quantity": 3, "unit_price_cents": 250},
        {"product_id": INK, "name": "Ink", "quantity": 1, "unit_price_cents": 1200},
    ]
    assert [(e["kind"], e["status"]) for e in order["history"]] == [("order.placed", "pending")]
    assert "card_token" not in order

    placed = await shop.sent("products_inbox", "order.placed", order_id)
    assert placed == [{"order_id": order_id, "customer_id": ALICE, "lines": lines}]
    # The stock step times out at the order's deadline; no message waits for it.
    deadline = await shop.deadline_in(order_id)
    assert deadline is not None and 0 < deadline <= shop.settings.saga_step_timeout_s
    assert await shop.expire_steps(after_s=0) == []  # not yet due
    assert await shop.sql("SELECT count(*) FROM pgmq.q_orders_inbox") == [(0,)]


async def test_orders_list_holds_only_the_callers_orders_newest_first(shop: Shop) -> None:
    first = await shop.place(ALICE)
    await shop.place(BOB)
    second = await shop.place(ALICE)
    response = await shop.client.get("/orders", headers=token_for(ALICE))
    assert response.status_code == 200
    assert [o["order_id"] for o in response.json()["orders"]] == [second, first]
    limited = await shop.client.get("/orders?limit=1", headers=token_for(ALICE))
    assert [o["order_id"] for o in limited.json()["orders"]] == [second]
    bad = await shop.client.get("/orders?limit=0", headers=token_for(ALICE))
    assert bad.status_code == 422 and bad.json()["field"] == "limit"


async def test_new_orders_use_the_latest_product_event_and_old_orders_keep_their_price(
    shop: Shop,
) -> None:
    before = await shop.place(lines=[{"product_id": PEN, "quantity": 1}])
    await acting(shop.bus, "products").publish(
        "product.updated",
        {"product_id": PEN, "name": "Pen", "price_cents": 300, "active": True},
        ordering_key=PEN,
    )
    # An event sent long ago and delivered late must not roll the price back.
    stale = {"product_id": PEN, "name": "Pen", "price_cents": 1, "active": True}
    headers = {"type": "product.updated", "sent_at": "2000-01-01T00:00:00+00:00"}
    await acting(shop.bus, "products").send_raw("orders_inbox", stale, headers)
    await shop.wait_idle()
    after = await shop.place(lines=[{"product_id": PEN, "quantity": 1}])
    assert (await shop.order(before))["total_cents"] == 250
    assert (await shop.order(after))["total_cents"] == 300


# -- the saga ---------------------------------------------------------------------


async def test_stock_reserved_then_payment_captured_confirms_the_order(shop: Shop) -> None:
    order_id = await shop.place(lines=[{"product_id": INK, "quantity": 2}])
    await shop.reply("stock.reserved", {"order_id": order_id})
    await shop.wait_status(order_id, "awaiting_payment")
    await shop.wait_sent("payments_inbox", "payment.charge", order_id)
    charge = await shop.sent("payments_inbox", "payment.charge", order_id)
    assert charge == [
        {"order_id": order_id, "customer_id": ALICE, "amount_cents": 2400, "card_token": "tok_visa"}
    ]

    await shop.reply(
        "payment.captured", {"order_id": order_id, "payment_id": "p1", "amount_cents": 2400}
    )
    order = await shop.wait_status(order_id, "confirmed")
    assert order["reason"] is None
    assert [(e["kind"], e["status"]) for e in order["history"]] == [
        ("order.placed", "pending"),
        ("stock.reserved", "awaiting_payment"),
        ("payment.captured", "confirmed"),
    ]
    # A confirmed order waits on no step: no deadline, nothing to time out later.
    assert await shop.deadline_in(order_id) is None
    assert await shop.expire_steps() == []
    await shop.wait_idle()
    assert (await shop.order(order_id))["status"] == "confirmed"
    assert await shop.sent("products_inbox", "stock.release", order_id) == []
    assert await shop.sent("payments_inbox", "payment.refund", order_id) == []


async def test_stock_rejected_cancels_the_order_with_products_reason(shop: Shop) -> None:
    order_id = await shop.place()
    await shop.reply("stock.rejected", {"order_id": order_id, "reason": "Pen: 1 left"})
    order = await shop.wait_status(order_id, "cancelled")
    assert order["reason"] == "out of stock: Pen: 1 left"
    await shop.wait_idle()
    assert await shop.sent("payments_inbox", "payment.charge", order_id) == []
    assert await shop.sent("products_inbox", "stock.release", order_id) == []


async def test_payment_declined_cancels_the_order_and_releases_the_stock(shop: Shop) -> None:
    order_id = await shop.place()
    await shop.reply("stock.reserved", {"order_id": order_id})
    await shop.wait_status(order_id, "awaiting_payment")
    await shop.reply("payment.declined", {"order_id": order_id, "reason": "card expired"})
    order = await shop.wait_status(order_id, "cancelled")
    assert order["reason"] == "payment declined: card expired"
    assert await shop.sent("products_inbox", "stock.release", order_id) == [{"order_id": order_id}]
    await shop.wait_idle()
    assert await shop.sent("payments_inbox", "payment.refund", order_id) == []


async def test_no_payment_reply_times_out_releases_the_stock_and_refunds(shop: Shop) -> None:
    order_id = await shop.place()
    await shop.reply("stock.reserved", {"order_id": order_id})
    await shop.wait_status(order_id, "awaiting_payment")
    # The payment step's own deadline, a full step timeout from its start.
    deadline = await shop.deadline_in(order_id)
    assert deadline is not None and deadline > shop.settings.saga_step_timeout_s - 1
    assert await shop.expire_steps() == [(order_id, "cancelled")]
    order = await shop.order(order_id)
    assert order["reason"] == "timed out waiting for payment"
    assert order["history"][-1]["kind"] == "saga.timeout"
    assert await shop.deadline_in(order_id) is None
    assert await shop.sent("products_inbox", "stock.release", order_id) == [{"order_id": order_id}]
    assert await shop.sent("payments_inbox", "payment.refund", order_id) == [{"order_id": order_id}]


async def test_no_stock_reply_times_out_and_releases_any_reservation(shop: Shop) -> None:
    order_id = await shop.place()
    assert await shop.expire_steps() == [(order_id, "cancelled")]
    order = await shop.order(order_id)
    assert order["reason"] == "timed out waiting for stock"
    assert await shop.sent("products_inbox", "stock.release", order_id) == [{"order_id": order_id}]
    assert await shop.sent("payments_inbox", "payment.charge", order_id) == []


async def test_a_reservation_arriving_after_the_stock_timeout_is_released(shop: Shop) -> None:
    order_id = await shop.place()
    assert await shop.expire_steps() == [(order_id, "cancelled")]
    await shop.reply("stock.reserved", {"order_id": order_id})
    await shop.wait_sent("products_inbox", "stock.release", order_id, count=2)
    order = await shop.order(order_id)
    assert order["status"] == "cancelled"
    assert order["reason"] == "timed out waiting for stock"
    assert await shop.sent("payments_inbox", "payment.charge", order_id) == []


async def test_an_order_a_reply_holds_is_skipped_by_the_expiry_and_timed_out_on_its_next_pass(
    shop: Shop,
) -> None:
    order_id = await shop.place()
    async with await psycopg.AsyncConnection.connect(shop.url) as handler:
        # What a reply's handler holds while it decides (saga.lock_order).
        await handler.execute(
            'SELECT 1 FROM orders."order" WHERE order_id = %s FOR UPDATE', [order_id]
        )
        assert await shop.expire_steps() == []
    assert await shop.expire_steps() == [(order_id, "cancelled")]
    assert await shop.expire_steps() == []  # once


async def test_a_saga_timeout_message_still_times_out_its_step(shop: Shop) -> None:
    """Orders in the saga when deadlines came in had sent themselves these."""
    order_id = await shop.place()
    await acting(shop.bus, "orders").send(
        "orders_inbox", {"order_id": order_id, "step": "stock"}, type="saga.timeout"
    )
    order = await shop.wait_status(order_id, "cancelled")
    assert order["reason"] == "timed out waiting for stock"
    assert await shop.deadline_in(order_id) is None
    assert await shop.sent("products_inbox", "stock.release", order_id) == [{"order_id": order_id}]


async def test_a_capture_arriving_after_cancellation_is_refunded(shop: Shop) -> None:
    order_id = await shop.place()
    await shop.reply("stock.reserved", {"order_id": order_id})
    await shop.wait_status(order_id, "awaiting_payment")
    assert await shop.expire_steps() == [(order_id, "cancelled")]  # one refund sent
    await shop.reply(
        "payment.captured", {"order_id": order_id, "payment_id": "p1", "amount_cents": 500}
    )
    await shop.wait_sent("payments_inbox", "payment.refund", order_id, count=2)
    order = await shop.order(order_id)
    assert order["status"] == "cancelled"
    assert order["history"][-1]["kind"] == "payment.captured"


async def test_duplicate_replies_change_nothing(shop: Shop) -> None:
    order_id = await shop.place()
    await shop.reply("stock.reserved", {"order_id": order_id})
    await shop.reply("stock.reserved", {"order_id": order_id})
    await shop.wait_status(order_id, "awaiting_payment")
    captured = {"order_id": order_id, "payment_id": "p1", "amount_cents": 500}
    await shop.reply("payment.captured", captured)
    await shop.reply("payment.captured", captured)
    await shop.reply("stock.rejected", {"order_id": order_id, "reason": "too late"})
    await shop.reply("payment.declined", {"order_id": order_id, "reason": "too late"})
    await shop.wait_idle()

    order = await shop.order(order_id)
    assert order["status"] == "confirmed" and order["reason"] is None
    changes = [e["kind"] for e in order["history"] if "ignored" not in e["detail"]]
    assert changes == ["order.placed", "stock.reserved", "payment.captured"]
    assert len(order["history"]) == 3 + 4  # the four stale replies are on record too
    assert len(await shop.sent("payments_inbox", "payment.charge", order_id)) == 1
    assert await shop.sent("payments_inbox", "payment.refund", order_id) == []
    assert await shop.sent("products_inbox", "stock.release", order_id) == []


async def test_release_and_refund_confirmations_are_recorded_in_the_history(shop: Shop) -> None:
    order_id = await shop.place()
    await shop.reply("stock.rejected", {"order_id": order_id, "reason": "none left"})
    await shop.wait_status(order_id, "cancelled")
    await shop.reply("stock.released", {"order_id": order_id})
    await shop.reply("payment.refunded", {"order_id": order_id, "amount_cents": 500})
    await shop.wait_idle()
    history = (await shop.order(order_id))["history"]
    assert [(e["kind"], e["status"]) for e in history[-2:]] == [
        ("stock.released", "cancelled"),
        ("payment.refunded", "cancelled"),
    ]


async def test_a_reply_for_an_unknown_order_is_acknowledged_not_retried(shop: Shop) -> None:
    unknown = str(uuid.uuid4())
    await shop.reply("stock.reserved", {"order_id": unknown})

    async def gone() -> bool:
        rows = await shop.sql(
            "SELECT count(*) FROM pgmq.q_orders_inbox WHERE message ->> 'order_id' = %s",
            [unknown],
        )
        return rows == [(0,)]

    await wait_until(gone, within=SETTLE_S, interval=0.05)
    assert await shop.sent("payments_inbox", "payment.charge", unknown) == []


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("saga.timeout", "awaiting_payment"),  # the stock step's timeout, after the step
        ("saga.timeout", "confirmed"),
        ("saga.timeout", "cancelled"),
    ],
)
def test_a_stock_timeout_after_its_step_finished_is_no_event_at_all(kind: str, status: str) -> None:
    assert saga.decide(kind, status, {"step": "stock"}) is None


# -- who may see what -------------------------------------------------------------


async def test_another_customers_order_is_not_found_but_an_admin_sees_it(shop: Shop) -> None:
    order_id = await shop.place(ALICE)
    response = await shop.client.get(f"/orders/{order_id}", headers=token_for(BOB))
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    admin = await shop.client.get(f"/orders/{order_id}", headers=token_for("root", "admin"))
    assert admin.status_code == 200 and admin.json()["customer_id"] == ALICE
    absent = await shop.client.get(f"/orders/{uuid.uuid4()}", headers=token_for(ALICE))
    assert absent.status_code == 404
    malformed = await shop.client.get("/orders/not-a-uuid", headers=token_for(ALICE))
    assert malformed.status_code == 404 and malformed.json()["error"] == "not_found"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/orders"),
        ("GET", "/orders"),
        ("GET", "/orders/4b0e8a52-6f0e-4d3c-9f57-2f1d5c7e9a10"),
    ],
)
async def test_every_orders_route_needs_a_token(shop: Shop, method: str, path: str) -> None:
    body = {"lines": [{"product_id": PEN, "quantity": 1}], "card_token": "t"}
    response = await shop.client.request(method, path, json=body if method == "POST" else None)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert await shop.sql('SELECT count(*) FROM orders."order"') == [(0,)]


# -- bad input ----------------------------------------------------------------------


def _body(lines: Any, card_token: Any = "tok_visa") -> bytes:
    return json.dumps({"lines": lines, "card_token": card_token}).encode()


def _line(product_id: Any = PEN, quantity: Any = 1) -> dict[str, Any]:
    return {"product_id": product_id, "quantity": quantity}


BAD_BODIES = [
    ("zero quantity", _body([_line(quantity=0)]), 422, "lines[0].quantity"),
    ("negative quantity", _body([_line(), _line(INK, -2)]), 422, "lines[1].quantity"),
    ("quantity over 1000", _body([_line(quantity=1001)]), 422, "lines[0].quantity"),
    ("quantity as a string", _body([_line(quantity="2")]), 422, "lines[0].quantity"),
    ("quantity as a boolean", _body([_line(quantity=True)]), 422, "lines[0].quantity"),
    ("unknown product", _body([_line(), _line(ABSENT)]), 422, "lines[1].product_id"),
    ("inactive product", _body([_line(OLD)]), 422, "lines[0].product_id"),
    ("product id not a uuid", _body([_line("pen")]), 422, "lines[0].product_id"),
    ("product id a number", _body([_line(7)]), 422, "lines[0].product_id"),
    ("repeated product", _body([_line(), _line(PEN.upper())]), 422, "lines[1].product_id"),
    ("empty lines", _body([]), 422, "lines"),
    ("51 lines", _body([_line(str(uuid.uuid4())) for _ in range(51)]), 422, "lines"),
    ("lines not a list", _body({"0": _line()}), 422, "lines"),
    ("line not an object", _body([PEN]), 422, "lines[0]"),
    ("line missing quantity", _body([{"product_id": PEN}]), 422, "lines[0].quantity"),
    ("unknown line field", _body([{**_line(), "price": 1}]), 422, "lines[0].price"),
    ("card token missing", json.dumps({"lines": [_line()]}).encode(), 422, "card_token"),
    ("card token empty", _body([_line()], ""), 422, "card_token"),
    ("card token too long", _body([_line()], "t" * 101), 422, "card_token"),
    ("card token a number", _body([_line()], 4242), 422, "card_token"),
    ("body an array", b"[]", 422, "body"),
    ("malformed JSON", b'{"lines": [', 400, None),
    ("10 MB body", b'{"x": "' + b"a" * (10 * 1024 * 1024) + b'"}', 413, None),
]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [case[1:] for case in BAD_BODIES],
    ids=[case[0] for case in BAD_BODIES],
)
async def test_bad_order_input_is_a_json_4xx_and_writes_nothing(
    shop: Shop, body: bytes, status: int, field: str | None
) -> None:
    headers = {**token_for(ALICE), "content-type": "application/json"}
    response = await shop.client.post("/orders", content=body, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["error"] and error["message"]
    assert error.get("field") == field
    assert await shop.sql('SELECT count(*) FROM orders."order"') == [(0,)]
    assert await shop.sql("SELECT count(*) FROM orders.order_event") == [(0,)]
    assert await shop.sent_anything_to("products_inbox") == 0


async def test_an_order_body_that_is_not_json_is_415(shop: Shop) -> None:
    response = await shop.client.post(
        "/orders", content=b"lines=1", headers={**token_for(ALICE), "content-type": "text/plain"}
    )
    assert response.status_code == 415
    assert await shop.sql('SELECT count(*) FROM orders."order"') == [(0,)]


# -- Idempotency-Key, totals, malformed messages, step timeout -----------------------

KEYED_ORDER = {"lines": [{"product_id": PEN, "quantity": 2}], "card_token": "tok_visa"}


def keyed(user: str, key: str) -> dict[str, str]:
    return {**token_for(user), "Idempotency-Key": key}


async def order_count(shop: Shop) -> int:
    return (await shop.sql('SELECT count(*) FROM orders."order"'))[0][0]


# -- Idempotency-Key ---------------------------------------------------------------


async def test_a_retry_with_the_same_key_returns_the_first_order_and_creates_nothing(
    shop: Shop,
) -> None:
    first = await shop.client.post("/orders", json=KEYED_ORDER, headers=keyed(ALICE, "k-1"))
    assert first.status_code == 202
    retry = await shop.client.post("/orders", json=KEYED_ORDER, headers=keyed(ALICE, "k-1"))
    assert (retry.status_code, retry.json()) == (202, first.json())
    assert retry.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await order_count(shop) == 1
    # Nothing else was sent twice either: one order.placed, one deadline, one timeout.
    order_id = first.json()["order_id"]
    assert len(await shop.sent("products_inbox", "order.placed", order_id)) == 1
    assert await shop.expire_steps() == [(order_id, "cancelled")]
    assert len(await shop.sent("products_inbox", "stock.release", order_id)) == 1


async def test_an_accepted_order_is_202_with_its_location_on_a_replay_too(shop: Shop) -> None:
    first = await shop.client.post("/orders", json=KEYED_ORDER, headers=keyed(ALICE, "k-loc"))
    assert first.status_code == 202
    assert first.headers["Location"] == f"/orders/{first.json()['order_id']}"
    followed = await shop.client.get(first.headers["Location"], headers=token_for(ALICE))
    assert followed.status_code == 200
    assert followed.json()["order_id"] == first.json()["order_id"]
    retry = await shop.client.post("/orders", json=KEYED_ORDER, headers=keyed(ALICE, "k-loc"))
    assert retry.headers["Location"] == first.headers["Location"]


async def test_the_same_key_with_a_different_body_is_refused(shop: Shop) -> None:
    first = await shop.client.post("/orders", json=KEYED_ORDER, headers=keyed(ALICE, "k-1"))
    assert first.status_code == 202
    other = {**KEYED_ORDER, "lines": [{"product_id": INK, "quantity": 1}]}
    refused = await shop.client.post("/orders", json=other, headers=keyed(ALICE, "k-1"))
    assert refused.status_code == 422
    assert refused.json()["error"] == "idempotency_key_reused"
    assert refused.json()["field"] == "Idempotency-Key"
    assert await order_count(shop) == 1


async def test_keys_belong_to_their_caller(shop: Shop) -> None:
    alice = await shop.client.post("/orders", json=KEYED_ORDER, headers=keyed(ALICE, "same"))
    bob = await shop.client.post("/orders", json=KEYED_ORDER, headers=keyed(BOB, "same"))
    assert alice.status_code == bob.status_code == 202
    assert alice.json()["order_id"] != bob.json()["order_id"]
    assert await order_count(shop) == 2


async def test_concurrent_requests_with_the_same_key_create_one_order(shop: Shop) -> None:
    responses = await asyncio.gather(
        *(
            shop.client.post("/orders", json=KEYED_ORDER, headers=keyed(ALICE, "k-c"))
            for _ in range(5)
        )
    )
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["order_id"] for r in responses}) == 1
    assert await order_count(shop) == 1


async def test_a_refused_request_keeps_no_key(shop: Shop) -> None:
    bad = {**KEYED_ORDER, "lines": [{"product_id": str(uuid.uuid4()), "quantity": 1}]}
    refused = await shop.client.post("/orders", json=bad, headers=keyed(ALICE, "k-r"))
    assert refused.status_code == 422 and refused.json()["field"] == "lines[0].product_id"
    # Only what committed is remembered: the corrected request goes through.
    fixed = await shop.client.post("/orders", json=KEYED_ORDER, headers=keyed(ALICE, "k-r"))
    assert fixed.status_code == 202
    assert await order_count(shop) == 1


@pytest.mark.parametrize("key", ["", "x" * 201, "tab\there", "caf\u00e9"])
async def test_an_unusable_key_is_422_and_creates_nothing(shop: Shop, key: str) -> None:
    headers: list[tuple[str, str | bytes]] = list(token_for(ALICE).items())
    headers.append(("Idempotency-Key", key.encode()))
    response = await shop.client.post("/orders", json=KEYED_ORDER, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "Idempotency-Key"
    assert await order_count(shop) == 0


async def test_a_key_of_200_printable_characters_is_fine(shop: Shop) -> None:
    key = "k " + "~" * 198
    response = await shop.client.post("/orders", json=KEYED_ORDER, headers=keyed(ALICE, key))
    assert response.status_code == 202


async def test_keys_older_than_a_day_are_pruned(shop: Shop) -> None:
    await shop.client.post("/orders", json=KEYED_ORDER, headers=keyed(ALICE, "fresh"))
    await shop.client.post("/orders", json=KEYED_ORDER, headers=keyed(ALICE, "old"))
    await shop.sql(
        "UPDATE orders.idempotency_key SET created_at = now() - interval '25 hours'"
        " WHERE key = 'old' RETURNING key"
    )
    async with Courier(shop.settings.database_url, pool_max_size=1) as courier:
        assert await idempotency.prune(courier, "orders") == 1
    assert await shop.sql("SELECT key FROM orders.idempotency_key") == [("fresh",)]


async def test_openapi_documents_the_key_and_the_503(shop: Shop) -> None:
    spec = (await shop.client.get("/openapi.json")).json()
    post = spec["paths"]["/orders"]["post"]
    assert [p["name"] for p in post["parameters"]] == ["Idempotency-Key"]
    assert post["parameters"][0]["schema"]["maxLength"] == 200
    assert "Retry-After" in post["responses"]["503"]["headers"]
    [limit] = spec["paths"]["/orders"]["get"]["parameters"]
    assert (limit["name"], limit["in"], limit["schema"]["maximum"]) == ("limit", "query", 100)


# -- totals ------------------------------------------------------------------------


async def test_an_order_whose_total_payments_could_not_hold_is_422(shop: Shop) -> None:
    gold = str(uuid.uuid4())
    await acting(shop.bus, "products").publish(
        "product.created",
        {"product_id": gold, "name": "Gold", "price_cents": 100_000_000, "active": True},
        ordering_key=gold,
    )
    await shop.wait_idle()
    fits = MAX_ORDER_TOTAL_CENTS // 100_000_000
    ok = {**KEYED_ORDER, "lines": [{"product_id": gold, "quantity": fits}]}
    assert (await shop.client.post("/orders", json=ok, headers=token_for(ALICE))).status_code == 202
    big = {**KEYED_ORDER, "lines": [{"product_id": gold, "quantity": fits + 1}]}
    response = await shop.client.post("/orders", json=big, headers=token_for(ALICE))
    assert response.status_code == 422
    assert response.json()["field"] == "lines"
    assert str(MAX_ORDER_TOTAL_CENTS) in response.json()["message"]
    assert await order_count(shop) == 1


# -- malformed messages -----------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "payload", "reason"),
    [
        ("stock.reserved", {"order_id": "nope"}, "order_id 'nope' is not a uuid"),
        ("payment.captured", ["not", "an", "object"], "payload has no order_id string"),
        (
            "product.updated",
            {"product_id": PEN, "name": "Pen", "price_cents": -1, "active": True},
            "price_cents -1 is not a non-negative integer",
        ),
        (
            "product.created",
            {"product_id": "pen", "name": "Pen", "price_cents": 1, "active": True},
            "product_id 'pen' is not a uuid",
        ),
    ],
)
async def test_a_malformed_message_is_dead_lettered_at_once_with_its_reason(
    shop: Shop, kind: str, payload: object, reason: str
) -> None:
    await acting(shop.bus, sender_of(kind)).send("orders_inbox", payload, type=kind)
    await shop.wait_idle()
    rows = await shop.sql(
        "SELECT headers ->> 'type', attempts, errors -> -1 ->> 'error' FROM pgcourier.dead_letter"
    )
    assert len(rows) == 1
    [(dead_kind, attempts, error)] = rows
    assert (dead_kind, attempts) == (kind, 1)
    assert error.startswith("InvalidPayload: ") and reason in error


# -- the step timeout against the queues' leases -----------------------------------


async def test_a_step_timeout_a_crashed_workers_lease_could_eat_is_refused_at_start(
    shop_url: str, settings_for: Callable[[str], ServiceSettings]
) -> None:
    settings = settings_for("orders")
    async with Courier(shop_url, pool_max_size=1) as bus:
        await bus.queue_create(
            "payments_inbox", visibility_timeout=5, max_attempts=10, backoff_base=0.5
        )
        await saga.check_step_timeout(bus, 16.5)  # 1.5 x 2 hops x (5 s + 0.5 s)
        with pytest.raises(ConfigurationError) as refused:
            await saga.check_step_timeout(bus, 16)
    message = str(refused.value)
    assert "SHOP_SAGA_STEP_TIMEOUT=16s" in message and "payments_inbox" in message
    assert "visibility timeout) is 5s" in message and "at least 16.5s" in message
    short = dataclasses.replace(settings, saga_step_timeout_s=16)
    # Both the worker and the HTTP process (which schedule the timeouts) refuse.
    with pytest.raises(ConfigurationError):
        async with run_service_worker(short, setup):
            pass
    with pytest.raises(ConfigurationError):
        async with serve_app(create_app(short)):
            pass


async def test_the_shops_default_step_timeout_passes_its_own_queues(server_url: str) -> None:
    name = f"pgcourier_shop_defaults_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(server_url, dbname=name)
    try:
        await shop_migrate(url)
        async with Courier(url, pool_max_size=1) as bus:
            default = ServiceSettings.__dataclass_fields__["saga_step_timeout_s"].default
            await saga.check_step_timeout(bus, default)
            settings = await bus.queue_settings("orders_inbox")
            assert settings.visibility_timeout_s == 3
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    psycopg.sql.Identifier(name)
                )
            )


# -- forgeries ----------------------------------------------------------------------


async def test_a_payment_captured_forged_by_products_is_dead_lettered_and_confirms_nothing(
    shop: Shop,
) -> None:
    order_id = await shop.place(lines=[{"product_id": INK, "quantity": 1}])
    await shop.reply("stock.reserved", {"order_id": order_id})
    await shop.wait_status(order_id, "awaiting_payment")
    # products may send to orders_inbox (its stock replies), but not payment replies.
    forged = {"order_id": order_id, "payment_id": str(uuid.uuid4()), "amount_cents": 1200}
    await acting(shop.bus, "products").send(
        "orders_inbox", forged, type="payment.captured", ordering_key=order_id
    )
    await shop.wait_idle()
    assert (await shop.order(order_id))["status"] == "awaiting_payment"
    # No real answer came: the payment step times out.
    assert await shop.expire_steps() == [(order_id, "cancelled")]
    order = await shop.order(order_id)
    assert order["status"] == "cancelled" and "timed out" in order["reason"]
    [(sender, error)] = await shop.sql(
        "SELECT sender, errors -> -1 ->> 'error' FROM pgcourier.dead_letter"
    )
    assert sender in ("products_svc", "products_svc@products")  # here, or over a link
    assert error.startswith("ForbiddenSenderError") and "payments_svc" in error


async def test_a_price_forged_by_payments_is_dead_lettered_and_prices_stay(shop: Shop) -> None:
    await acting(shop.bus, "payments").publish(
        "product.updated",
        {"product_id": PEN, "name": "Pen", "price_cents": 0, "active": True},
        ordering_key=PEN,
    )
    await shop.wait_idle()
    order_id = await shop.place(lines=[{"product_id": PEN, "quantity": 5}])
    assert (await shop.order(order_id))["total_cents"] == 5 * 250
    [(error,)] = await shop.sql("SELECT errors -> -1 ->> 'error' FROM pgcourier.dead_letter")
    assert "not from 'payments_svc" in error  # (or 'payments_svc@payments', over a link)


# -- card tokens and the cap on open orders ---------------------------------------------


async def card_token_of(shop: Shop, order_id: str) -> str | None:
    rows = await shop.sql('SELECT card_token FROM orders."order" WHERE order_id = %s', [order_id])
    return rows[0][0]


async def test_the_card_token_leaves_orders_with_the_charge_command(shop: Shop) -> None:
    order_id = await shop.place()
    assert await card_token_of(shop, order_id) == "tok_visa"  # needed until the charge
    await shop.reply("stock.reserved", {"order_id": order_id})
    await shop.wait_sent("payments_inbox", "payment.charge", order_id)
    [charge] = await shop.sent("payments_inbox", "payment.charge", order_id)
    assert charge["card_token"] == "tok_visa"
    # Erased in the transaction that sent the charge: no moment with both.
    assert await card_token_of(shop, order_id) is None
    await shop.reply("payment.captured", {"order_id": order_id, "payment_id": "p-1"})
    await shop.wait_status(order_id, "confirmed")
    assert await card_token_of(shop, order_id) is None


@pytest.mark.parametrize("kind", ["stock.rejected", "timeout"])
async def test_a_cancelled_order_keeps_no_card_token(shop: Shop, kind: str) -> None:
    order_id = await shop.place()
    if kind == "stock.rejected":
        await shop.reply(kind, {"order_id": order_id, "reason": "sold out"})
    else:
        await shop.expire_steps()
    await shop.wait_status(order_id, "cancelled")
    assert await card_token_of(shop, order_id) is None


async def test_no_order_past_pending_may_hold_a_card_token(shop: Shop) -> None:
    order_id = await shop.place()
    with pytest.raises(psycopg.errors.CheckViolation):
        await shop.sql(
            "UPDATE orders.\"order\" SET status = 'awaiting_payment' WHERE order_id = %s",
            [order_id],
        )


async def test_a_customer_with_five_orders_in_the_saga_is_refused_a_sixth(shop: Shop) -> None:
    held = [await shop.place() for _ in range(5)]
    body = {"lines": [{"product_id": PEN, "quantity": 1}], "card_token": "tok_timeout"}
    refused = await shop.client.post("/orders", json=body, headers=token_for(ALICE))
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"] == "too_many_open_orders"
    assert int(refused.headers["Retry-After"]) >= 1
    assert await order_count(shop) == 5
    # Others are not held back by Alice's orders.
    await shop.place(BOB)
    # An order that leaves the saga frees a place.
    await shop.reply("stock.rejected", {"order_id": held[0], "reason": "sold out"})
    await shop.wait_status(held[0], "cancelled")
    await shop.place()


async def test_the_cap_on_open_orders_holds_under_parallel_placement(shop: Shop) -> None:
    body = {"lines": [{"product_id": PEN, "quantity": 1}], "card_token": "tok_visa"}
    answers = await asyncio.gather(
        *(shop.client.post("/orders", json=body, headers=token_for(ALICE)) for _ in range(12))
    )
    assert sorted(r.status_code for r in answers) == [202] * 5 + [429] * 7
    assert await order_count(shop) == 5


async def test_a_retry_of_an_accepted_order_is_replayed_even_at_the_cap(shop: Shop) -> None:
    first = await shop.client.post("/orders", json=KEYED_ORDER, headers=keyed(ALICE, "k-cap"))
    assert first.status_code == 202
    for _ in range(4):
        await shop.place()
    again = await shop.client.post("/orders", json=KEYED_ORDER, headers=keyed(ALICE, "k-cap"))
    assert again.status_code == 202 and again.json() == first.json()
    refused = await shop.client.post("/orders", json=KEYED_ORDER, headers=keyed(ALICE, "k-new"))
    assert refused.status_code == 429
    # The refused request's key is not kept: once there is room, it places the order.
    assert await shop.sql("SELECT count(*) FROM orders.idempotency_key") == [(1,)]
