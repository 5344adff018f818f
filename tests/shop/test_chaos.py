"""The fault suite (tests/chaos): its checks catch what they claim to, in either
topology, and a short run of the whole shop under faults (a database per service,
linked by logical replication) keeps every invariant.

The short run has its own embedded Postgres (.pgdata-chaos-test), since the suite
restarts its server with `-m immediate` and must never crash the one other tests use.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from pgcourier.keeper import LinkKeeper
from services.shared.topology_db import TOPOLOGIES, ShopDatabases
from tests.chaos.clients import ClientStats, Placed
from tests.chaos.faults import watch_catch_up
from tests.chaos.invariants import Connections, check_all, connections
from tests.chaos.shop import fresh_shop
from tests.helpers import server_folder
from tests.shop.conftest import ROLE_PASSWORDS


@pytest.fixture(scope="module")
def chaos_shop(request: pytest.FixtureRequest, server_url: str) -> Iterator[ShopDatabases]:
    """An empty shop in the topology given (indirect parametrization), migrated and
    linked as the fault suite does it, once per topology: each test breaks it in
    transactions it rolls back (see `conns`)."""
    with fresh_shop(server_url, topology=request.param, role_passwords=ROLE_PASSWORDS) as shop:
        yield shop


@pytest.fixture
def conns(chaos_shop: ShopDatabases) -> Iterator[Connections]:
    """A transaction in each of the shop's databases, rolled back after the test: what
    a test writes, and the chaos schema the checks load, are seen by the checks run on
    these connections, and by nothing else."""
    with connections(chaos_shop, autocommit=False) as found:
        try:
            yield found
        finally:
            found.rollback()


def _order(
    conn: psycopg.Connection,
    clients: ClientStats,
    *,
    status: str,
    reason: str | None = None,
    total: int = 0,
    card: str = "tok_visa",
) -> str:
    """An order placed through the API as the suite records it: a key, and the 202 it got."""
    key = f"key-{len(clients.placed)}"
    # The card is the client's record: orders keeps no card token past pending.
    row = conn.execute(
        'INSERT INTO orders."order" (customer_id, status, reason, total_cents) '
        "VALUES ('c1', %s, %s, %s) RETURNING order_id::text",
        [status, reason, total],
    ).fetchone()
    assert row is not None
    conn.execute(
        "INSERT INTO orders.idempotency_key (caller, key, request_hash, status, body) "
        "VALUES ('c1', %s, 'hash', 202, jsonb_build_object('order_id', %s::text))",
        [key, row[0]],
    )
    clients.placed.append(Placed(key, card, row[0], {row[0]}))
    return row[0]


def _consistent_shop(conns: Connections) -> tuple[str, str, dict[str, int], ClientStats]:
    """One product (10 units), one confirmed order of 2 for 2,000 cents, paid: all
    consistent, each service's rows in its own database."""
    product_id = str(uuid.uuid4())
    clients = ClientStats()
    orders, products, payments = (conns.of(s) for s in ("orders", "products", "payments"))
    order_id = _order(orders, clients, status="confirmed", total=2000)
    products.execute("INSERT INTO products.category (name) VALUES ('chaos')")
    products.execute(
        "INSERT INTO products.product (product_id, name, category, price_cents, stock) "
        "VALUES (%s, 'Thing', 'chaos', 1000, 8)",
        [product_id],
    )
    products.execute(
        "INSERT INTO products.reservation (order_id, lines, status) "
        "VALUES (%s, jsonb_build_array(jsonb_build_object('product_id', %s::text, "
        "'quantity', 2)), 'reserved')",
        [order_id, product_id],
    )
    orders.execute(
        "INSERT INTO orders.order_line (order_id, line_no, product_id, name, quantity, "
        "unit_price_cents) VALUES (%s, 1, %s, 'Thing', 2, 1000)",
        [order_id, product_id],
    )
    payments.execute(
        "INSERT INTO payments.payment (order_id, customer_id, amount_cents, status, "
        "provider_ref) VALUES (%s, 'c1', 2000, 'captured', 'ref-1')",
        [order_id],
    )
    payments.execute(
        "INSERT INTO card_provider.charge (idempotency_key, order_id, amount_cents, "
        "card_fingerprint, card_last4, outcome, provider_ref) VALUES ('charge-1', %s, 2000,"
        " repeat('0', 64), 'visa', 'captured', 'ref-1')",
        [order_id],
    )
    return product_id, order_id, {product_id: 10}, clients


def _failed(conns: Connections, initial: dict[str, int], clients: ClientStats) -> set[str]:
    checks = check_all(conns, initial, clients, postgres_restarts=1)
    return {c.name for c in checks if not c.ok}


# scope="module": the tests are grouped by topology, so each shop is made once.
@pytest.mark.parametrize("chaos_shop", TOPOLOGIES, indirect=True, scope="module")
def test_checks_pass_on_a_consistent_shop(conns: Connections) -> None:
    _, _, initial, clients = _consistent_shop(conns)
    assert _failed(conns, initial, clients) == set()


Breaking = Callable[[Connections, str, str, ClientStats], None]


def _sql(*statements: tuple[str, str]) -> Breaking:
    """Runs each (service, statement) in that service's database."""

    def breaking(conns: Connections, product_id: str, order_id: str, _: ClientStats) -> None:
        for service, statement in statements:
            conns.of(service).execute(statement, {"product_id": product_id, "order_id": order_id})

    return breaking


def _server_error(_c: Connections, _p: str, _o: str, clients: ClientStats) -> None:
    clients.server_errors.append('{"error":"internal_error"}')


def _abandoned(_c: Connections, _p: str, _o: str, clients: ClientStats) -> None:
    clients.placed.append(Placed("key-2", "tok_visa"))


def _declined_card_confirmed(_c: Connections, _p: str, _o: str, clients: ClientStats) -> None:
    # The confirmed order was placed, as its client recorded, with a declining card.
    clients.placed[0].card = "tok_decline"


def _fault_cancelled(conns: Connections, _p: str, _o: str, clients: ClientStats) -> None:
    for _ in range(4):  # three are tolerated, for one Postgres restart
        _order(
            conns.of("orders"), clients, status="cancelled", reason="timed out waiting for payment"
        )


def _dead_letter(service: str, error: str) -> Breaking:
    """A dead letter in that service's database, its last error `error`."""

    def breaking(conns: Connections, _p: str, _o: str, _c: ClientStats) -> None:
        conns.of(service).execute(
            "INSERT INTO pgcourier.dead_letter (queue_name, msg_id, enqueued_at, attempts,"
            " errors) VALUES ('orders_inbox', 1, now(), 10, jsonb_build_array("
            "jsonb_build_object('attempt', 0, 'error', %s::text)))",
            [error],
        )

    return breaking


# name: (how to break a consistent shop, the checks that must fail).
BREAKAGES: dict[str, tuple[Breaking, set[str]]] = {
    "a unit vanished from the shelf": (
        _sql(
            ("products", "UPDATE products.product SET stock = 7 WHERE product_id = %(product_id)s")
        ),
        {"stock conserved"},
    ),
    "a unit sold beyond the stock": (
        _sql(
            ("orders", "UPDATE orders.order_line SET quantity = 11 WHERE order_id = %(order_id)s"),
            (
                "orders",
                'UPDATE orders."order" SET total_cents = 11000 WHERE order_id = %(order_id)s',
            ),
            (
                "payments",
                "UPDATE payments.payment SET amount_cents = 11000 WHERE order_id = %(order_id)s",
            ),
        ),
        {"no unit oversold", "stock conserved", "provider ledger agrees"},
    ),
    "a cent went missing": (
        _sql(
            (
                "payments",
                "UPDATE payments.payment SET amount_cents = 1999 WHERE order_id = %(order_id)s",
            )
        ),
        {"money conserved (cents off)", "payment matches its order", "provider ledger agrees"},
    ),
    "a payment taken twice": (
        # The schema forbids it (one payment per order): only a shop that lost that
        # constraint could, and the check must still see it.
        _sql(
            ("payments", "ALTER TABLE payments.payment DROP CONSTRAINT payment_order_id_key"),
            (
                "payments",
                "INSERT INTO payments.payment (order_id, customer_id, amount_cents, status,"
                " provider_ref) VALUES (%(order_id)s, 'c1', 2000, 'pending', 'ref-2')",
            ),
        ),
        {"no payment taken twice", "payment matches its order"},
    ),
    "a capture reported twice": (
        _sql(
            (
                "orders",
                "INSERT INTO orders.order_event (order_id, kind, status, detail) SELECT"
                " %(order_id)s, 'payment.captured', 'confirmed', 'x' FROM generate_series(1, 2)",
            )
        ),
        {"no payment taken twice"},
    ),
    "an order no client was given": (
        _sql(
            (
                "orders",
                'INSERT INTO orders."order" (customer_id, status, reason, total_cents) '
                "VALUES ('c1', 'cancelled', 'payment declined: card declined', 0)",
            )
        ),
        {"no order created twice", "one order per Idempotency-Key"},
    ),
    "a card captured twice by the provider": (
        _sql(
            (
                "payments",
                "INSERT INTO card_provider.charge (idempotency_key, order_id, amount_cents, "
                "card_fingerprint, card_last4, outcome, provider_ref) VALUES ('charge-2', "
                "%(order_id)s, 2000, repeat('0', 64), 'visa', 'captured', 'ref-2')",
            )
        ),
        {"provider ledger agrees"},
    ),
    "a key answered with another order": (
        _sql(
            (
                "orders",
                "UPDATE orders.idempotency_key SET body = jsonb_build_object('order_id', "
                "gen_random_uuid()::text)",
            )
        ),
        {"one order per Idempotency-Key"},
    ),
    "an order left pending": (
        _sql(
            (
                "orders",
                "UPDATE orders.\"order\" SET status = 'pending' WHERE order_id = %(order_id)s",
            )
        ),
        {"every order final", "money conserved (cents off)", "stock conserved"},
    ),
    "a message left on the orders' queue": (
        _sql(("orders", "SELECT pgmq.send('orders_inbox', '{}'::jsonb)")),
        {"queues drained"},
    ),
    "a message left on the payments' queue": (
        _sql(("payments", "SELECT pgmq.send('payments_inbox', '{}'::jsonb)")),
        {"queues drained"},
    ),
    "a dead letter": (
        _dead_letter("orders", "handler failed"),
        {"no dead letters"},
    ),
    "a dead letter in the products' database": (
        _dead_letter("products", "handler failed"),
        {"no dead letters"},
    ),
    "a row a link could not deliver": (
        _dead_letter("payments", "undeliverable: no queue here"),
        {"no dead letters", "no row undeliverable"},
    ),
    "a declined card confirmed": (_declined_card_confirmed, {"no bad card confirmed"}),
    "sagas a fault cancelled": (_fault_cancelled, {"sagas a fault cancelled"}),
    "a 500 seen by a client": (_server_error, {"no 500s seen by clients"}),
    "a request never answered": (_abandoned, {"every request answered"}),
}


# Links exist only with a database per service.
LINK_BREAKAGES: dict[str, tuple[Breaking, set[str]]] = {
    "a row its receiver never confirmed": (
        # Kept until its receiver confirms it; rolled back here, it never reaches one.
        _sql(
            (
                "orders",
                "INSERT INTO pgcourier.outbox (queue_name, message) "
                "VALUES ('products_inbox', '{}'::jsonb)",
            )
        ),
        {"link outboxes emptied"},
    ),
    "rows dropped past a link's retention": (
        _sql(("users", "UPDATE pgcourier.link SET expired = 2 WHERE node = 'orders'")),
        {"link outboxes emptied"},
    ),
}


@pytest.mark.parametrize("chaos_shop", TOPOLOGIES, indirect=True, scope="module")
@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_each_broken_invariant_is_reported_by_name(conns: Connections, breakage: str) -> None:
    breaking, expected = BREAKAGES[breakage]
    product_id, order_id, initial, clients = _consistent_shop(conns)
    breaking(conns, product_id, order_id, clients)
    assert _failed(conns, initial, clients) == expected


@pytest.mark.parametrize("chaos_shop", TOPOLOGIES, indirect=True, scope="module")
def test_a_queue_not_drained_names_each_message_left_and_its_lease(conns: Connections) -> None:
    _, _, initial, clients = _consistent_shop(conns)
    row = (
        conns.of("payments")
        .execute("SELECT pgmq.send('payments_inbox', '{\"left\": \"behind\"}'::jsonb)")
        .fetchone()
    )
    assert row is not None
    (drained,) = [
        c
        for c in check_all(conns, initial, clients, postgres_restarts=1)
        if c.name == "queues drained"
    ]
    assert not drained.ok
    assert f"payments_inbox msg {row[0]}: read 0 times" in drained.detail
    assert '{"left": "behind"}' in drained.detail


@pytest.mark.parametrize("chaos_shop", ["databases"], indirect=True, scope="module")
@pytest.mark.parametrize("breakage", list(LINK_BREAKAGES))
def test_each_broken_link_invariant_is_reported_by_name(conns: Connections, breakage: str) -> None:
    breaking, expected = LINK_BREAKAGES[breakage]
    product_id, order_id, initial, clients = _consistent_shop(conns)
    breaking(conns, product_id, order_id, clients)
    assert _failed(conns, initial, clients) == expected


@pytest.mark.parametrize("shop_databases", ["databases"], indirect=True)
async def test_link_catch_up_waits_for_streaming_and_for_rows_sent_before_the_restart(
    shop_databases: ShopDatabases,
) -> None:
    """What the run reports as the links' catch-up after a Postgres restart: a link is
    behind while its subscription is not streaming, and until its receiver confirmed
    (and the keeper pruned) the rows sent before the server came back."""
    orders, products = shop_databases.url("orders"), shop_databases.url("products")
    with psycopg.connect(products, autocommit=True) as conn:
        conn.execute("ALTER SUBSCRIPTION pgcourier_from_orders DISABLE")
    with psycopg.connect(orders, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pgcourier.outbox (queue_name, message) VALUES ('products_inbox', '{}')"
        )
    back_at = time.monotonic()  # as if the server had just come back
    stop = asyncio.Event()
    keeper = asyncio.create_task(LinkKeeper(shop_databases.distinct_urls(), interval=0.2).run(stop))
    watch = asyncio.create_task(watch_catch_up(shop_databases, back_at, within_s=30))
    try:
        # The link stays down for a while: the watch must not call it caught up.
        done, _ = await asyncio.wait({watch}, timeout=1.5)
        assert not done
        with psycopg.connect(products, autocommit=True) as conn:
            conn.execute("ALTER SUBSCRIPTION pgcourier_from_orders ENABLE")
        seconds, slowest, first = await watch
    finally:
        stop.set()
        await asyncio.wait_for(keeper, 10)
    assert slowest == "orders->products"
    assert 1.5 <= seconds < 30
    assert "orders->products receiver disconnected, 1 retained" in first
    with psycopg.connect(orders) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pgcourier.outbox WHERE forget_below IS NULL"
        ).fetchone() == (0,)
    with psycopg.connect(products) as conn:
        assert conn.execute("SELECT count(*) FROM pgmq.q_products_inbox").fetchone() == (1,)


@pytest.mark.timeout(240)
def test_short_run_under_faults_keeps_every_invariant(tmp_path: Path) -> None:
    pytest.importorskip("pgserver", reason="the fault suite needs the embedded Postgres")
    from tests.chaos import postgres
    from tests.chaos.run import Options, run

    pg = postgres.embedded(server_folder(".pgdata-chaos-test"))
    try:
        # A database per service, linked by logical replication (runner.py's default):
        # the apply workers and the links keeper are among what it breaks.
        result = run(
            pg,
            Options(
                seconds=24,
                clients=6,
                drain_s=60,
                log_dir=tmp_path / "logs",
                topology="databases",
                link_mode="replication",
                # Its own server: what a killed run left there (slots holding WAL) goes.
                drop_leftovers=True,
            ),
        )
    finally:
        pg.stop()
    print(result.table)
    assert result.ok, f"failed: {', '.join(result.failed)}\n{result.table}"
