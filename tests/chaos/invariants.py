"""What must hold after the faults, checked against the shop's own tables, each
service's read in its own database.

A check whose facts all live in one database is a query file in sql/ run there and
returning (value, detail): the orders' checks run in the orders database, where what
the clients saw is loaded next to the orders (schema chaos); the pgcourier checks
(queues, dead letters, links) run in every database and add up. A check comparing two
services (stock sold against stock left, money taken against orders confirmed) reads
each service's facts from its database and compares them here. In the one topology
every service's database is the same one; the checks are the same.

A check fails when its value is above what it allows (nothing, for all but the
fault-cancelled sagas).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from services.shared.settings import SERVICES
from services.shared.topology_db import ShopDatabases

from .clients import ClientStats

SQL = Path(__file__).parent / "sql"

# A saga cancelled by a fault rather than by its customer's card or the shelf is a lost
# sale; the target is none. A killed worker's step comes back after the 5 s lease, well
# within the 10 s step timeout, so kills alone should cost nothing. A Postgres crash
# aborts every step in flight at once, and on a loaded machine its recovery (3-5 s)
# plus the lease can reach the step timeout: those few steps may lose the race to
# their timeout. So: up to 3 per Postgres restart, plus one per thousand orders for
# anything slower. A shop whose lease equals its step timeout loses ~6 per thousand
# (about 100 in a 10-minute run) and still fails.
FAULT_CANCELLED_PER_RESTART = 3
FAULT_CANCELLED_PER_ORDER = 0.001

# Run in every database, added up.
EVERY = "every database"


@dataclass(frozen=True)
class Check:
    name: str
    value: int
    allowed: int
    detail: str

    @property
    def ok(self) -> bool:
        return self.value <= self.allowed


# (name, [(whose database, query file)]): each part runs in that service's database
# (or in every one) and the values add up; each check allows nothing.
SQL_CHECKS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "no payment taken twice",
        (("payments", "check_charged_twice"), ("orders", "check_reported_twice")),
    ),
    ("provider ledger agrees", (("payments", "check_provider_ledger"),)),
    ("no order created twice", (("orders", "check_orders_twice"),)),
    ("one order per Idempotency-Key", (("orders", "check_one_order_per_key"),)),
    ("every order final", (("orders", "check_final"),)),
    ("queues drained", ((EVERY, "check_queues_drained"),)),
    ("no dead letters", ((EVERY, "check_dead_letters"),)),
    ("no bad card confirmed", (("orders", "check_card_outcomes"),)),
    ("link outboxes emptied", ((EVERY, "check_links_drained"),)),
    ("no row undeliverable", ((EVERY, "check_undeliverable"),)),
)


def query(name: str) -> str:
    return (SQL / f"{name}.sql").read_text()


class Connections:
    """One connection per database of the shop, by service (the same one for every
    service in the one topology)."""

    def __init__(self, databases: ShopDatabases, by_url: dict[str, psycopg.Connection]) -> None:
        self.databases = databases
        self._by_url = by_url

    def of(self, service: str) -> psycopg.Connection:
        return self._by_url[self.databases.url(service)]

    def every(self) -> Iterator[tuple[str, psycopg.Connection]]:
        """(whose database, connection) for each database once: the services' names
        in the databases topology, '' in the one topology."""
        for url in self.databases.distinct_urls():
            owners = [s for s in SERVICES if self.databases.url(s) == url]
            yield ("" if len(owners) == len(SERVICES) else "+".join(owners)), self._by_url[url]

    def rows(self, service: str, name: str, params: object = None) -> list[tuple]:
        return self.of(service).execute(query(name), params).fetchall()  # type: ignore[arg-type]

    def rollback(self) -> None:
        for conn in self._by_url.values():
            conn.rollback()


@contextmanager
def connections(
    databases: ShopDatabases | str,
    *,
    connect_timeout: int | None = None,
    autocommit: bool = True,
) -> Iterator[Connections]:
    """autocommit=False: one transaction per database, committed at the end unless
    rolled back (tests break a shop and check it in transactions they roll back)."""
    databases = ShopDatabases.one(databases) if isinstance(databases, str) else databases
    with ExitStack() as stack:
        by_url = {
            url: stack.enter_context(
                psycopg.connect(url, autocommit=autocommit, connect_timeout=connect_timeout)
            )
            for url in databases.distinct_urls()
        }
        yield Connections(databases, by_url)


def load_run(conn: psycopg.Connection, clients: ClientStats) -> None:
    """Puts what the clients saw next to the orders' tables (schema chaos)."""
    conn.execute("DROP SCHEMA IF EXISTS chaos CASCADE")
    conn.execute(query("chaos_schema"))  # type: ignore[arg-type]
    with conn.cursor() as cur:
        with cur.copy("COPY chaos.placed (key, card, order_id, refused) FROM STDIN") as copy:
            for p in clients.placed:
                copy.write_row((p.key, p.card, p.order_id, p.refused))
        with cur.copy("COPY chaos.seen (key, order_id) FROM STDIN") as copy:
            for p in clients.placed:
                for order_id in p.order_ids_seen:
                    copy.write_row((p.key, order_id))


def _sql_check(conns: Connections, name: str, parts: tuple[tuple[str, str], ...]) -> Check:
    value, details = 0, []
    for whose, file in parts:
        targets = list(conns.every()) if whose == EVERY else [("", conns.of(whose))]
        for owner, conn in targets:
            row = conn.execute(query(file)).fetchone()  # type: ignore[arg-type]
            assert row is not None
            value += int(row[0])
            if row[0] and row[1]:
                details.append(f"{owner}: {row[1]}" if owner else row[1])
    return Check(name, value, 0, "; ".join(details))


def _with_messages_left(conns: Connections, check: Check) -> Check:
    """A failed drain names the messages left (attempts, when the lease ends, headers,
    the start of the body): what tells a stuck handler from a lost wake-up."""
    if not check.value:
        return check
    found = []
    for owner, conn in conns.every():
        for (queue,) in conn.execute(
            "SELECT queue FROM pgcourier.queues WHERE ready + in_flight + delayed > 0"
        ).fetchall():
            rows = conn.execute(
                sql.SQL(
                    "SELECT msg_id, read_ct, round(extract(epoch FROM vt - now())::numeric, 1),"
                    " headers, left(message::text, 160) FROM pgmq.{} ORDER BY msg_id LIMIT 5"
                ).format(sql.Identifier(f"q_{queue}"))
            ).fetchall()
            for msg_id, read_ct, vt_in_s, headers, body in rows:
                found.append(
                    f"{owner or 'shop'}/{queue} msg {msg_id}: read {read_ct} times, "
                    f"lease ends in {vt_in_s} s, headers {headers}, message {body}"
                )
    return Check(check.name, check.value, check.allowed, "; ".join([check.detail, *found]))


def _first(found: list[str], n: int = 3) -> str:
    return "; ".join(found[:n])


def cross_service_checks(conns: Connections, initial_stock: dict[str, int]) -> list[Check]:
    """The checks comparing two services' facts, each read in its own database."""
    sold = {p: int(u) for p, u in conns.rows("orders", "orders_sold")}
    stock = {p: int(s) for p, s in conns.rows("products", "products_stock", [list(initial_stock)])}
    reserved = {p: int(u) for p, u in conns.rows("products", "products_reserved")}
    orders = conns.rows("orders", "orders")
    payments_of: dict[str, list[tuple]] = defaultdict(list)
    for row in conns.rows("payments", "payments"):
        payments_of[row[0]].append(row)
    captured, refunded = conns.rows("payments", "figures_payments")[0]

    # Products that sold more units than they had, or whose stock went below zero
    # (or that products no longer has).
    oversold = []
    for product, had in initial_stock.items():
        units, now = sold.get(product, 0), stock.get(product)
        if now is None or now < 0 or units > had:
            oversold.append(f"{product}: had {had}, sold {units}, stock now {now}")
    # Per product: what left the shelf (initial - stock) is what the confirmed orders
    # bought, and is what products still holds as reserved; every other unit came back.
    unconserved = []
    for product, had in initial_stock.items():
        units, now, held = sold.get(product, 0), stock.get(product), reserved.get(product, 0)
        if now is None or had - now != units or held != units:
            unconserved.append(f"{product}: had {had}, stock {now}, sold {units}, reserved {held}")
    # Money conserved to the cent: captured minus refunded is what the confirmed orders
    # cost.
    held_cents = int(captured) - int(refunded)
    sold_cents = sum(int(total) for _, status, total in orders if status == "confirmed")
    # Per order: a confirmed order has one captured payment of its total; a final
    # order has no money still captured or a charge still pending.
    mismatched = []
    for order_id, status, total in sorted(orders):
        for payment in payments_of.get(order_id) or [(order_id, None, None, None)]:
            _, paid_status, amount, _ = payment
            if (status == "confirmed" and (paid_status != "captured" or amount != total)) or (
                status == "cancelled" and paid_status in ("captured", "pending")
            ):
                mismatched.append(
                    f"{order_id} {status}: payment {paid_status or 'none'} "
                    f"({'' if amount is None else amount} of {total} cents)"
                )
    return [
        Check("no unit oversold", len(oversold), 0, _first(oversold)),
        Check("stock conserved", len(unconserved), 0, _first(unconserved)),
        Check(
            "money conserved (cents off)",
            abs(held_cents - sold_cents),
            0,
            f"captured - refunded = {held_cents} cents; confirmed orders total {sold_cents} cents",
        ),
        Check("payment matches its order", len(mismatched), 0, _first(mismatched)),
    ]


def check_all(
    databases: ShopDatabases | str | Connections,
    initial_stock: dict[str, int],
    clients: ClientStats,
    *,
    postgres_restarts: int = 0,
) -> list[Check]:
    """databases: where each service's data is (or the one database's URL), or
    connections to them already open."""
    if not isinstance(databases, Connections):
        with connections(databases) as conns:
            return check_all(conns, initial_stock, clients, postgres_restarts=postgres_restarts)
    conns = databases
    accepted = len(clients.accepted)
    load_run(conns.of("orders"), clients)
    checks = cross_service_checks(conns, initial_stock)
    checks += [_sql_check(conns, name, parts) for name, parts in SQL_CHECKS]
    checks = [_with_messages_left(conns, c) if c.name == "queues drained" else c for c in checks]
    row = conns.of("orders").execute(query("check_fault_cancelled")).fetchone()  # type: ignore[arg-type]
    assert row is not None
    allowed = FAULT_CANCELLED_PER_RESTART * postgres_restarts + int(
        accepted * FAULT_CANCELLED_PER_ORDER
    )
    checks.append(Check("sagas a fault cancelled", int(row[0]), allowed, row[1] or ""))
    checks += client_checks(clients)
    return checks


def client_checks(clients: ClientStats) -> list[Check]:
    """What the clients saw: no 500, every request answered in the end, nothing refused."""
    refused = [p for p in clients.placed if p.refused is not None]
    return [
        Check(
            "no 500s seen by clients",
            len(clients.server_errors),
            0,
            "; ".join(sorted(set(clients.server_errors))[:3]),
        ),
        Check(
            "every request answered",
            len(clients.abandoned),
            0,
            "keys given up after retrying: " + ", ".join(p.key for p in clients.abandoned[:3])
            if clients.abandoned
            else "",
        ),
        Check(
            "no order refused (4xx)",
            len(refused),
            0,
            ", ".join(f"{p.refused}" for p in refused[:5]),
        ),
    ]
