"""The fault suite (tests/chaos): its checks catch what they claim to, and a short run
of the whole shop under faults keeps every invariant.

The short run has its own embedded Postgres (.pgdata-chaos-test), since the suite
restarts its server with `-m immediate` and must never crash the one other tests use.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.chaos.clients import ClientStats, Placed
from tests.chaos.invariants import check_all

ROOT = Path(__file__).resolve().parent.parent.parent


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


def _consistent_shop(url: str) -> tuple[str, str, dict[str, int], ClientStats]:
    """One product (10 units), one confirmed order of 2 for 2,000 cents, paid: all consistent."""
    product_id = str(uuid.uuid4())
    clients = ClientStats()
    with psycopg.connect(url, autocommit=True) as conn:
        order_id = _order(conn, clients, status="confirmed", total=2000)
        conn.execute("INSERT INTO products.category (name) VALUES ('chaos')")
        conn.execute(
            "INSERT INTO products.product (product_id, name, category, price_cents, stock) "
            "VALUES (%s, 'Thing', 'chaos', 1000, 8)",
            [product_id],
        )
        conn.execute(
            "INSERT INTO products.reservation (order_id, lines, status) "
            "VALUES (%s, jsonb_build_array(jsonb_build_object('product_id', %s::text, "
            "'quantity', 2)), 'reserved')",
            [order_id, product_id],
        )
        conn.execute(
            "INSERT INTO orders.order_line (order_id, line_no, product_id, name, quantity, "
            "unit_price_cents) VALUES (%s, 1, %s, 'Thing', 2, 1000)",
            [order_id, product_id],
        )
        conn.execute(
            "INSERT INTO payments.payment (order_id, customer_id, amount_cents, status, "
            "provider_ref) VALUES (%s, 'c1', 2000, 'captured', 'ref-1')",
            [order_id],
        )
        conn.execute(
            "INSERT INTO card_provider.charge (idempotency_key, order_id, amount_cents, "
            "card_fingerprint, card_last4, outcome, provider_ref) VALUES ('charge-1', %s, 2000,"
            " repeat('0', 64), 'visa', 'captured', 'ref-1')",
            [order_id],
        )
    return product_id, order_id, {product_id: 10}, clients


def _failed(url: str, initial: dict[str, int], clients: ClientStats) -> set[str]:
    checks = check_all(url, initial, clients, postgres_restarts=1)
    return {c.name for c in checks if not c.ok}


def test_checks_pass_on_a_consistent_shop(shop_url: str) -> None:
    _, _, initial, clients = _consistent_shop(shop_url)
    assert _failed(shop_url, initial, clients) == set()


def _sql(*statements: str) -> Callable[[psycopg.Connection, str, str, ClientStats], None]:
    def breaking(conn: psycopg.Connection, product_id: str, order_id: str, _: ClientStats) -> None:
        for statement in statements:
            conn.execute(statement, {"product_id": product_id, "order_id": order_id})

    return breaking


def _server_error(_c: psycopg.Connection, _p: str, _o: str, clients: ClientStats) -> None:
    clients.server_errors.append('{"error":"internal_error"}')


def _abandoned(_c: psycopg.Connection, _p: str, _o: str, clients: ClientStats) -> None:
    clients.placed.append(Placed("key-2", "tok_visa"))


def _declined_card_confirmed(
    _c: psycopg.Connection, _p: str, _o: str, clients: ClientStats
) -> None:
    # The confirmed order was placed, as its client recorded, with a declining card.
    clients.placed[0].card = "tok_decline"


def _fault_cancelled(conn: psycopg.Connection, _p: str, _o: str, clients: ClientStats) -> None:
    for _ in range(4):  # three are tolerated, for one Postgres restart
        _order(conn, clients, status="cancelled", reason="timed out waiting for payment")


BREAKAGES = {
    "a unit vanished from the shelf": (
        _sql("UPDATE products.product SET stock = 7 WHERE product_id = %(product_id)s"),
        {"stock conserved"},
    ),
    "a unit sold beyond the stock": (
        _sql(
            "UPDATE orders.order_line SET quantity = 11 WHERE order_id = %(order_id)s",
            'UPDATE orders."order" SET total_cents = 11000 WHERE order_id = %(order_id)s',
            "UPDATE payments.payment SET amount_cents = 11000 WHERE order_id = %(order_id)s",
        ),
        {"no unit oversold", "stock conserved", "provider ledger agrees"},
    ),
    "a cent went missing": (
        _sql("UPDATE payments.payment SET amount_cents = 1999 WHERE order_id = %(order_id)s"),
        {"money conserved (cents off)", "payment matches its order", "provider ledger agrees"},
    ),
    "a capture reported twice": (
        _sql(
            "INSERT INTO orders.order_event (order_id, kind, status, detail) "
            "SELECT %(order_id)s, 'payment.captured', 'confirmed', 'x' FROM generate_series(1, 2)"
        ),
        {"no payment taken twice"},
    ),
    "an order no client was given": (
        _sql(
            'INSERT INTO orders."order" (customer_id, status, reason, total_cents) '
            "VALUES ('c1', 'cancelled', 'payment declined: card declined', 0)"
        ),
        {"no order created twice", "one order per Idempotency-Key"},
    ),
    "a card captured twice by the provider": (
        _sql(
            "INSERT INTO card_provider.charge (idempotency_key, order_id, amount_cents, "
            "card_fingerprint, card_last4, outcome, provider_ref) VALUES ('charge-2', "
            "%(order_id)s, 2000, repeat('0', 64), 'visa', 'captured', 'ref-2')"
        ),
        {"provider ledger agrees"},
    ),
    "a key answered with another order": (
        _sql(
            "UPDATE orders.idempotency_key SET body = jsonb_build_object('order_id', "
            "gen_random_uuid()::text)"
        ),
        {"one order per Idempotency-Key"},
    ),
    "an order left pending": (
        _sql("UPDATE orders.\"order\" SET status = 'pending' WHERE order_id = %(order_id)s"),
        {"every order final", "money conserved (cents off)", "stock conserved"},
    ),
    "a message left on a queue": (
        _sql("SELECT pgmq.send('orders_inbox', '{}'::jsonb)"),
        {"queues drained"},
    ),
    "a dead letter": (
        _sql(
            "INSERT INTO pgcourier.dead_letter (queue_name, msg_id, enqueued_at, attempts) "
            "VALUES ('orders_inbox', 1, now(), 10)"
        ),
        {"no dead letters"},
    ),
    "a declined card confirmed": (_declined_card_confirmed, {"no bad card confirmed"}),
    "sagas a fault cancelled": (_fault_cancelled, {"sagas a fault cancelled"}),
    "a 500 seen by a client": (_server_error, {"no 500s seen by clients"}),
    "a request never answered": (_abandoned, {"every request answered"}),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_each_broken_invariant_is_reported_by_name(shop_url: str, breakage: str) -> None:
    product_id, order_id, initial, clients = _consistent_shop(shop_url)
    breaking, expected = BREAKAGES[breakage]
    with psycopg.connect(shop_url, autocommit=True) as conn:
        breaking(conn, product_id, order_id, clients)
    assert _failed(shop_url, initial, clients) == expected


@pytest.mark.timeout(240)
def test_short_run_under_faults_keeps_every_invariant(tmp_path: Path) -> None:
    pytest.importorskip("pgserver", reason="the fault suite needs the embedded Postgres")
    from tests.chaos import postgres
    from tests.chaos.run import Options, run

    pg = postgres.embedded(ROOT / ".pgdata-chaos-test")
    try:
        result = run(
            pg,
            Options(seconds=40, clients=6, drain_s=60, log_dir=tmp_path / "logs"),
        )
    finally:
        pg.stop()
    print(result.table)
    assert result.ok, f"failed: {', '.join(result.failed)}\n{result.table}"
