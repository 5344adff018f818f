"""The products service: catalog API, transactional events, and stock reservations."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import psycopg
import pytest

from pgcourier import Courier, Worker
from services.products.app import create_app
from services.products.handlers import setup
from services.shared.contracts import (
    ORDER_PLACED,
    PRODUCTS_INBOX,
    STOCK_REJECTED,
    STOCK_RELEASE,
    STOCK_RELEASED,
    STOCK_RESERVED,
)
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

ADMIN = token_for(str(uuid.uuid4()), "admin")
CUSTOMER = token_for(str(uuid.uuid4()), "customer")
WIDGET = {"name": "Widget", "category": "tools", "price_cents": 1250, "stock": 7}


# -- helpers -------------------------------------------------------------------


async def wait_for(condition: Callable[[], Any], *, within: float = 15.0) -> Any:
    """Polls an async condition until it returns something truthy; returns that."""
    return await wait_until(condition, within=within, interval=0.05)


async def fetch(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchall()


async def sent_to_orders(url: str, type: str | None = None) -> list[tuple[dict, dict]]:
    """(payload, headers) of every message in orders_inbox, optionally of one type."""
    local = await fetch(url, "SELECT to_regclass('pgmq.q_orders_inbox') IS NOT NULL")
    if local[0][0]:
        rows = await fetch(url, "SELECT message, headers FROM pgmq.q_orders_inbox ORDER BY msg_id")
    else:  # orders has its own database: what was sent to it waits in the outbox
        rows = await fetch(
            url,
            "SELECT message, headers FROM pgcourier.outbox"
            " WHERE queue_name = 'orders_inbox' ORDER BY id",
        )
    return [(m, h) for m, h in rows if type is None or h.get("type") == type]


async def replies_for(url: str, order_id: str) -> list[tuple[str, dict]]:
    return [(h["type"], m) for m, h in await sent_to_orders(url) if m.get("order_id") == order_id]


async def add_product(
    url: str, name: str, stock: int, *, active: bool = True, category: str = "misc"
) -> str:
    """A product written straight into the table, as if created earlier."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO products.category (name) VALUES (%s) ON CONFLICT DO NOTHING", [category]
        )
        cur = await conn.execute(
            "INSERT INTO products.product (name, category, price_cents, stock, active)"
            " VALUES (%s, %s, 100, %s, %s) RETURNING product_id",
            [name, category, stock, active],
        )
        row = await cur.fetchone()
    assert row is not None
    return str(row[0])


async def stock_of(url: str, product_id: str) -> int:
    rows = await fetch(
        url, "SELECT stock FROM products.product WHERE product_id = %s", [product_id]
    )
    return rows[0][0]


async def reservation(url: str, order_id: str) -> tuple[str, list] | None:
    rows = await fetch(
        url, "SELECT status, lines FROM products.reservation WHERE order_id = %s", [order_id]
    )
    return rows[0] if rows else None


async def place_order(courier: Courier, lines: list[dict[str, Any]]) -> str:
    order_id = str(uuid.uuid4())
    payload = {"order_id": order_id, "customer_id": str(uuid.uuid4()), "lines": lines}
    await acting(courier, "orders").publish(ORDER_PLACED, payload, ordering_key=order_id)
    return order_id


async def release(courier: Courier, order_id: str) -> None:
    await acting(courier, "orders").send(
        PRODUCTS_INBOX, {"order_id": order_id}, type=STOCK_RELEASE, ordering_key=order_id
    )


async def reply(url: str, order_id: str, count: int = 1) -> list[tuple[str, dict]]:
    """Waits for `count` replies to an order; returns them all."""

    async def enough() -> list[tuple[str, dict]] | None:
        found = await replies_for(url, order_id)
        return found if len(found) >= count else None

    return await wait_for(enough)


# -- fixtures ------------------------------------------------------------------


@pytest.fixture
def products_settings(settings_for: Callable[[str], ServiceSettings]) -> ServiceSettings:
    return settings_for("products")


@pytest.fixture
async def client(products_settings: ServiceSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(products_settings)
    async with serve_app(app) as c:
        c.app = app  # type: ignore[attr-defined]
        yield c


@pytest.fixture
async def worker(products_settings: ServiceSettings) -> AsyncIterator[Worker]:
    async with run_service_worker(products_settings, setup) as w:
        yield w


shop_url = service_in_both_topologies(
    "products",
    "orders' events and commands arrive over a link, its events and replies wait in its outbox",
)


@pytest.fixture
async def bus(shop_url: str) -> AsyncIterator[Courier]:
    """The admin's courier, standing in for the orders service."""
    async with Courier(shop_url) as courier:
        yield courier


# -- catalog API ----------------------------------------------------------------


async def test_admin_creates_product_and_its_category_and_product_created_is_published(
    client: httpx.AsyncClient, shop_url: str
) -> None:
    r = await client.post("/products", json={**WIDGET, "description": "Useful"}, headers=ADMIN)
    assert r.status_code == 201, r.text
    product = r.json()
    assert {k: product[k] for k in ("name", "description", "category", "price_cents")} == {
        "name": "Widget",
        "description": "Useful",
        "category": "tools",
        "price_cents": 1250,
    }
    assert product["stock"] == 7 and product["active"] is True
    uuid.UUID(product["product_id"])

    r = await client.get("/categories", headers=CUSTOMER)
    assert r.json() == {"categories": [{"name": "tools"}]}
    r = await client.get(f"/products/{product['product_id']}", headers=CUSTOMER)
    assert r.status_code == 200 and r.json() == product

    events = await sent_to_orders(shop_url, "product.created")
    assert len(events) == 1
    payload, headers = events[0]
    assert payload == {
        "product_id": product["product_id"],
        "name": "Widget",
        "price_cents": 1250,
        "active": True,
    }
    assert headers["x-pgmq-group"] == product["product_id"]


async def test_stock_defaults_to_zero_and_categories_are_created_once(
    client: httpx.AsyncClient,
) -> None:
    body = {"name": "Gadget", "category": "tools", "price_cents": 0}
    first = await client.post("/products", json=body, headers=ADMIN)
    second = await client.post("/products", json={**body, "name": "Gizmo"}, headers=ADMIN)
    assert first.status_code == second.status_code == 201
    assert first.json()["stock"] == 0 and first.json()["description"] == ""
    r = await client.get("/categories", headers=CUSTOMER)
    assert r.json() == {"categories": [{"name": "tools"}]}


async def test_writes_are_admin_only_and_everything_needs_a_token(
    client: httpx.AsyncClient, shop_url: str
) -> None:
    product_id = await add_product(shop_url, "Widget", 5)
    writes = [
        ("POST", "/products", WIDGET),
        ("PATCH", f"/products/{product_id}", {"price_cents": 1}),
        ("POST", f"/products/{product_id}/stock", {"delta": 1}),
    ]
    for method, path, body in writes:
        r = await client.request(method, path, json=body, headers=CUSTOMER)
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"] == "forbidden"
    for method, path, body in [
        *writes,
        ("GET", "/products", None),
        ("GET", f"/products/{product_id}", None),
        ("GET", "/categories", None),
    ]:
        r = await client.request(method, path, json=body)
        assert r.status_code == 401, (method, path, r.text)
    assert await stock_of(shop_url, product_id) == 5
    assert await sent_to_orders(shop_url) == []
    r = await client.get("/health")
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**WIDGET, "price_cents": -1}, "price_cents"),
        ({**WIDGET, "price_cents": "12.50"}, "price_cents"),
        ({**WIDGET, "price_cents": 100_000_001}, "price_cents"),
        ({**WIDGET, "colour": "red"}, "colour"),
        ({**WIDGET, "name": ""}, "name"),
        ({**WIDGET, "name": "   "}, "name"),
        ({**WIDGET, "name": "x" * 201}, "name"),
        ({**WIDGET, "category": 3}, "category"),
        ({**WIDGET, "stock": -1}, "stock"),
        ({**WIDGET, "stock": True}, "stock"),
        ({**WIDGET, "description": "x" * 2001}, "description"),
        ({"name": "Widget", "price_cents": 1}, "category"),
    ],
)
async def test_invalid_new_product_is_422_naming_the_field(
    client: httpx.AsyncClient, shop_url: str, body: dict, field: str
) -> None:
    r = await client.post("/products", json=body, headers=ADMIN)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field
    assert await fetch(shop_url, "SELECT 1 FROM products.product") == []


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("", {}, "body"),
        ("", {"active": "no"}, "active"),
        ("", {"price_cents": -5}, "price_cents"),
        ("", {"stock": 3}, "stock"),
        ("/stock", {"delta": 0}, "delta"),
        ("/stock", {"delta": "3"}, "delta"),
        ("/stock", {}, "delta"),
    ],
)
async def test_invalid_changes_are_422_naming_the_field(
    client: httpx.AsyncClient, shop_url: str, path: str, body: dict, field: str
) -> None:
    product_id = await add_product(shop_url, "Widget", 5)
    method = "POST" if path else "PATCH"
    r = await client.request(method, f"/products/{product_id}{path}", json=body, headers=ADMIN)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field


async def test_unknown_or_malformed_product_ids_are_404_json(client: httpx.AsyncClient) -> None:
    for product_id in ("not-a-uuid", str(uuid.uuid4()), "1" * 40):
        requests = [
            ("GET", f"/products/{product_id}", None),
            ("PATCH", f"/products/{product_id}", {"name": "x"}),
            ("POST", f"/products/{product_id}/stock", {"delta": 1}),
        ]
        for method, path, body in requests:
            r = await client.request(method, path, json=body, headers=ADMIN)
            assert r.status_code == 404, (method, path, r.text)
            assert r.json()["error"] == "not_found"


async def test_patch_changes_fields_and_publishes_product_updated(
    client: httpx.AsyncClient, shop_url: str
) -> None:
    product = (await client.post("/products", json=WIDGET, headers=ADMIN)).json()
    r = await client.patch(
        f"/products/{product['product_id']}",
        json={"price_cents": 999, "category": "garden", "name": " Spade "},
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    changed = r.json()
    assert (changed["name"], changed["price_cents"], changed["category"]) == (
        "Spade",
        999,
        "garden",
    )
    assert (changed["stock"], changed["description"]) == (7, "")
    assert changed["updated_at"] > product["updated_at"]

    events = await sent_to_orders(shop_url, "product.updated")
    assert [payload for payload, _ in events] == [
        {"product_id": product["product_id"], "name": "Spade", "price_cents": 999, "active": True}
    ]
    assert events[0][1]["x-pgmq-group"] == product["product_id"]
    r = await client.get("/categories", headers=CUSTOMER)
    assert r.json() == {"categories": [{"name": "garden"}, {"name": "tools"}]}


async def test_deactivated_products_are_hidden_from_customers_but_not_admins(
    client: httpx.AsyncClient, shop_url: str
) -> None:
    product = (await client.post("/products", json=WIDGET, headers=ADMIN)).json()
    path = f"/products/{product['product_id']}"
    r = await client.patch(path, json={"active": False}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["active"] is False
    events = await sent_to_orders(shop_url, "product.updated")
    assert events[-1][0]["active"] is False

    assert (await client.get(path, headers=CUSTOMER)).status_code == 404
    assert (await client.get("/products", headers=CUSTOMER)).json() == {"products": []}
    assert (await client.get(path, headers=ADMIN)).json()["active"] is False
    assert len((await client.get("/products", headers=ADMIN)).json()["products"]) == 1


async def test_listing_filters_by_category(client: httpx.AsyncClient) -> None:
    for name, category in [("Spade", "garden"), ("Hammer", "tools"), ("Rake", "garden")]:
        body = {"name": name, "category": category, "price_cents": 100}
        assert (await client.post("/products", json=body, headers=ADMIN)).status_code == 201
    r = await client.get("/products", params={"category": "garden"}, headers=CUSTOMER)
    assert [p["name"] for p in r.json()["products"]] == ["Rake", "Spade"]
    r = await client.get("/products", headers=CUSTOMER)
    assert [p["name"] for p in r.json()["products"]] == ["Hammer", "Rake", "Spade"]
    r = await client.get("/products", params={"category": "food"}, headers=CUSTOMER)
    assert r.json() == {"products": []}


async def test_stock_adjustments_add_and_remove_and_never_go_negative(
    client: httpx.AsyncClient, shop_url: str
) -> None:
    product_id = await add_product(shop_url, "Widget", 0)
    path = f"/products/{product_id}/stock"
    r = await client.post(path, json={"delta": 5}, headers=ADMIN)
    assert r.status_code == 200 and r.json() == {"product_id": product_id, "stock": 5}
    r = await client.post(path, json={"delta": -3}, headers=ADMIN)
    assert r.json() == {"product_id": product_id, "stock": 2}
    r = await client.post(path, json={"delta": -3}, headers=ADMIN)
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "stock_out_of_range"
    assert await stock_of(shop_url, product_id) == 2


async def test_concurrent_stock_removals_take_exactly_what_is_there(
    client: httpx.AsyncClient, shop_url: str
) -> None:
    product_id = await add_product(shop_url, "Widget", 5)
    path = f"/products/{product_id}/stock"
    results = await asyncio.gather(
        *(client.post(path, json={"delta": -1}, headers=ADMIN) for _ in range(12))
    )
    assert sorted(r.status_code for r in results) == [200] * 5 + [409] * 7
    assert await stock_of(shop_url, product_id) == 0


@pytest.mark.parametrize("change", ["create", "update"])
async def test_a_failed_write_publishes_nothing(
    client: httpx.AsyncClient, shop_url: str, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    product = (await client.post("/products", json=WIDGET, headers=ADMIN)).json()
    courier: Courier = client.app.state.courier  # type: ignore[attr-defined]
    publish = courier.publish

    async def publish_then_fail(*args: Any, **kwargs: Any) -> list[str]:
        # The event is written, then the request fails before its transaction commits.
        await publish(*args, **kwargs)
        raise RuntimeError("crash after publishing")

    monkeypatch.setattr(courier, "publish", publish_then_fail)
    with pytest.raises(RuntimeError, match="crash after publishing"):
        if change == "create":
            await client.post("/products", json={**WIDGET, "name": "Ghost"}, headers=ADMIN)
        else:
            path = f"/products/{product['product_id']}"
            await client.patch(path, json={"name": "Ghost"}, headers=ADMIN)

    names = await fetch(shop_url, "SELECT name FROM products.product")
    assert names == [("Widget",)]
    assert [h["type"] for _, h in await sent_to_orders(shop_url)] == ["product.created"]


async def test_openapi_lists_every_endpoint(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert set(spec["paths"]) == {
        "/health",
        "/metrics",
        "/products",
        "/products/{product_id}",
        "/products/{product_id}/stock",
        "/categories",
    }
    assert set(spec["paths"]["/products"]) == {"get", "post"}


# -- reservations ----------------------------------------------------------------


async def test_order_placed_reserves_every_line_and_replies_stock_reserved(
    worker: Worker, bus: Courier, shop_url: str
) -> None:
    a = await add_product(shop_url, "Apple", 10)
    b = await add_product(shop_url, "Bread", 3)
    lines = [
        {"product_id": a, "quantity": 2},
        {"product_id": b, "quantity": 3},
        {"product_id": a, "quantity": 1},
    ]
    order_id = await place_order(bus, lines)
    assert await reply(shop_url, order_id) == [(STOCK_RESERVED, {"order_id": order_id})]
    assert (await stock_of(shop_url, a), await stock_of(shop_url, b)) == (7, 0)
    status, stored = await reservation(shop_url, order_id)
    assert status == "reserved"
    assert sorted(stored, key=lambda line: line["product_id"]) == sorted(
        [{"product_id": a, "quantity": 3}, {"product_id": b, "quantity": 3}],
        key=lambda line: line["product_id"],
    )
    (_, headers), *_ = await sent_to_orders(shop_url, STOCK_RESERVED)
    assert headers["x-pgmq-group"] == order_id


async def test_order_is_rejected_whole_when_one_product_is_short(
    worker: Worker, bus: Courier, shop_url: str
) -> None:
    a = await add_product(shop_url, "Apple", 10)
    b = await add_product(shop_url, "Bread", 1)
    order_id = await place_order(
        bus, [{"product_id": a, "quantity": 2}, {"product_id": b, "quantity": 2}]
    )
    [(type, payload)] = await reply(shop_url, order_id)
    assert type == STOCK_REJECTED
    assert "Bread" in payload["reason"] and "out of stock" in payload["reason"]
    assert "Apple" not in payload["reason"]
    assert (await stock_of(shop_url, a), await stock_of(shop_url, b)) == (10, 1)
    assert await reservation(shop_url, order_id) is None


async def test_repeated_lines_of_one_product_are_summed_against_its_stock(
    worker: Worker, bus: Courier, shop_url: str
) -> None:
    a = await add_product(shop_url, "Apple", 3)
    order_id = await place_order(
        bus, [{"product_id": a, "quantity": 2}, {"product_id": a, "quantity": 2}]
    )
    [(type, payload)] = await reply(shop_url, order_id)
    assert type == STOCK_REJECTED and "out of stock" in payload["reason"]
    assert await stock_of(shop_url, a) == 3


@pytest.mark.parametrize("problem", ["unknown product", "inactive product"])
async def test_unknown_and_inactive_products_are_rejected_by_name(
    worker: Worker, bus: Courier, shop_url: str, problem: str
) -> None:
    a = await add_product(shop_url, "Apple", 5)
    if problem == "unknown product":
        b = missing = str(uuid.uuid4())
    else:
        b = await add_product(shop_url, "Bread", 5, active=False)
        missing = "Bread"
    order_id = await place_order(
        bus, [{"product_id": a, "quantity": 1}, {"product_id": b, "quantity": 1}]
    )
    [(type, payload)] = await reply(shop_url, order_id)
    assert type == STOCK_REJECTED
    assert problem in payload["reason"] and missing in payload["reason"]
    assert await stock_of(shop_url, a) == 5


async def test_lines_with_bad_quantities_are_rejected_without_touching_stock(
    worker: Worker, bus: Courier, shop_url: str
) -> None:
    a = await add_product(shop_url, "Apple", 5)
    b = await add_product(shop_url, "Bread", 5)
    order_id = await place_order(
        bus, [{"product_id": a, "quantity": 1}, {"product_id": b, "quantity": 0}]
    )
    [(type, payload)] = await reply(shop_url, order_id)
    assert type == STOCK_REJECTED and "invalid quantity" in payload["reason"]
    assert b in payload["reason"]
    assert (await stock_of(shop_url, a), await stock_of(shop_url, b)) == (5, 5)
    assert await reservation(shop_url, order_id) is None


async def test_release_restores_stock_and_is_idempotent(
    worker: Worker, bus: Courier, shop_url: str
) -> None:
    a = await add_product(shop_url, "Apple", 5)
    order_id = await place_order(bus, [{"product_id": a, "quantity": 4}])
    await reply(shop_url, order_id)
    assert await stock_of(shop_url, a) == 1

    await release(bus, order_id)
    found = await reply(shop_url, order_id, 2)
    assert found[1] == (STOCK_RELEASED, {"order_id": order_id})
    assert await stock_of(shop_url, a) == 5
    assert (await reservation(shop_url, order_id))[0] == "released"

    await release(bus, order_id)
    found = await reply(shop_url, order_id, 3)
    assert found[2] == (STOCK_RELEASED, {"order_id": order_id})
    assert await stock_of(shop_url, a) == 5


async def test_release_before_the_order_leaves_a_tombstone_that_rejects_it(
    worker: Worker, bus: Courier, shop_url: str
) -> None:
    a = await add_product(shop_url, "Apple", 5)
    order_id = str(uuid.uuid4())
    await release(bus, order_id)
    assert await reply(shop_url, order_id) == [(STOCK_RELEASED, {"order_id": order_id})]
    assert await reservation(shop_url, order_id) == ("released", [])

    payload = {"order_id": order_id, "customer_id": str(uuid.uuid4())}
    payload["lines"] = [{"product_id": a, "quantity": 1}]
    await acting(bus, "orders").publish(ORDER_PLACED, payload, ordering_key=order_id)
    found = await reply(shop_url, order_id, 2)
    assert found[1] == (STOCK_REJECTED, {"order_id": order_id, "reason": "order cancelled"})
    assert await stock_of(shop_url, a) == 5


async def test_an_order_placed_twice_is_reserved_once(
    worker: Worker, bus: Courier, shop_url: str
) -> None:
    a = await add_product(shop_url, "Apple", 5)
    order_id = str(uuid.uuid4())
    payload = {"order_id": order_id, "customer_id": str(uuid.uuid4())}
    payload["lines"] = [{"product_id": a, "quantity": 2}]
    # Two distinct messages (not a redelivery the inbox would catch) for one order.
    await acting(bus, "orders").publish(ORDER_PLACED, payload, ordering_key=order_id)
    await acting(bus, "orders").publish(ORDER_PLACED, payload, ordering_key=order_id)
    found = await reply(shop_url, order_id, 2)
    assert [type for type, _ in found] == [STOCK_RESERVED, STOCK_RESERVED]
    assert await stock_of(shop_url, a) == 3


async def test_concurrent_orders_never_oversell(
    products_settings: ServiceSettings,
    bus: Courier,
    shop_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pgcourier.consumer")
    a = await add_product(shop_url, "Apple", 10)
    orders = [str(uuid.uuid4()) for _ in range(50)]
    for order_id in orders:
        payload = {"order_id": order_id, "customer_id": str(uuid.uuid4())}
        payload["lines"] = [{"product_id": a, "quantity": 1}]
        await acting(bus, "orders").publish(ORDER_PLACED, payload, ordering_key=order_id)

    # Two workers of concurrency 20 each, competing for one row.
    async with (
        run_service_worker(products_settings, setup),
        run_service_worker(products_settings, setup),
    ):

        async def all_answered() -> list[tuple[dict, dict]] | None:
            stock = await stock_of(shop_url, a)
            assert stock >= 0
            found = await sent_to_orders(shop_url)
            return found if len(found) >= len(orders) else None

        found = await wait_for(all_answered, within=60)

    types = [h["type"] for _, h in found]
    assert types.count(STOCK_RESERVED) == 10
    assert types.count(STOCK_REJECTED) == 40
    assert {m["order_id"] for m, _ in found} == set(orders)
    assert await stock_of(shop_url, a) == 0
    rows = await fetch(shop_url, "SELECT count(*) FROM products.reservation")
    assert rows == [(10,)]
    assert not [r for r in caplog.records if "handler failed" in r.getMessage()]


async def test_orders_locking_the_same_products_in_any_line_order_do_not_deadlock(
    products_settings: ServiceSettings,
    bus: Courier,
    shop_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pgcourier.consumer")
    products = [await add_product(shop_url, name, 10) for name in ("A", "B", "C", "D")]
    rng = random.Random(7)
    for _ in range(30):
        lines = [{"product_id": p, "quantity": 1} for p in rng.sample(products, 4)]
        await place_order(bus, lines)
    async with (
        run_service_worker(products_settings, setup),
        run_service_worker(products_settings, setup),
    ):

        async def all_answered() -> bool:
            return len(await sent_to_orders(shop_url)) >= 30

        await wait_for(all_answered, within=60)

    types = [h["type"] for _, h in await sent_to_orders(shop_url)]
    assert types.count(STOCK_RESERVED) == 10
    assert [await stock_of(shop_url, p) for p in products] == [0, 0, 0, 0]
    # A deadlock would show as a failed, retried handler.
    assert not [r for r in caplog.records if "handler failed" in r.getMessage()]


# -- Idempotency-Key and malformed messages -------------------------------------------


async def test_a_retried_product_creation_with_its_key_creates_one_product(
    client: httpx.AsyncClient, shop_url: str
) -> None:
    headers = {**ADMIN, "Idempotency-Key": "p-1"}
    first = await client.post("/products", json=WIDGET, headers=headers)
    retry = await client.post("/products", json=WIDGET, headers=headers)
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert await fetch(shop_url, "SELECT count(*) FROM products.product") == [(1,)]
    assert len(await sent_to_orders(shop_url, "product.created")) == 1
    changed = {**WIDGET, "price_cents": 1}
    refused = await client.post("/products", json=changed, headers=headers)
    assert refused.status_code == 422 and refused.json()["field"] == "Idempotency-Key"


async def test_a_retried_stock_adjustment_with_its_key_adds_once(
    client: httpx.AsyncClient, shop_url: str
) -> None:
    product_id = await add_product(shop_url, "Bolt", 5)
    headers = {**ADMIN, "Idempotency-Key": "s-1"}
    path = f"/products/{product_id}/stock"
    first = await client.post(path, json={"delta": 10}, headers=headers)
    retry = await client.post(path, json={"delta": 10}, headers=headers)
    assert first.json() == retry.json() == {"product_id": product_id, "stock": 15}
    assert await stock_of(shop_url, product_id) == 15
    # The same key on another product's stock is another request: refused.
    other = await add_product(shop_url, "Nut", 5)
    refused = await client.post(f"/products/{other}/stock", json={"delta": 10}, headers=headers)
    assert refused.status_code == 422
    assert await stock_of(shop_url, other) == 5


@pytest.mark.parametrize(
    ("kind", "payload"),
    [(ORDER_PLACED, {"order_id": "nope", "lines": []}), (STOCK_RELEASE, ["no", "object"])],
)
async def test_a_malformed_message_is_dead_lettered_at_once_with_its_reason(
    worker: Worker, bus: Courier, shop_url: str, kind: str, payload: Any
) -> None:
    await acting(bus, sender_of(kind)).send(PRODUCTS_INBOX, payload, type=kind)

    async def dead() -> list[tuple[Any, ...]] | None:
        rows = await fetch(
            shop_url,
            "SELECT headers ->> 'type', attempts, errors -> -1 ->> 'error'"
            " FROM pgcourier.dead_letter",
        )
        return rows or None

    [(dead_kind, attempts, error)] = await wait_for(dead)
    assert (dead_kind, attempts) == (kind, 1)
    assert error.startswith("MalformedMessage: ") and "has no valid order_id" in error
    assert await replies_for(shop_url, "nope") == []
