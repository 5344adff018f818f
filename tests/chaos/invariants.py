"""What must hold after the faults, checked in SQL against the shop's own tables.

Each check is one query file in sql/ returning (value, detail); a check fails when
its value is above what it allows (nothing, for all but the fault-cancelled sagas).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg

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


@dataclass(frozen=True)
class Check:
    name: str
    value: int
    allowed: int
    detail: str

    @property
    def ok(self) -> bool:
        return self.value <= self.allowed


# (name, query file); each allows nothing.
SQL_CHECKS = (
    ("no unit oversold", "check_oversold"),
    ("stock conserved", "check_stock_conserved"),
    ("money conserved (cents off)", "check_money"),
    ("payment matches its order", "check_payment_matches_order"),
    ("no payment taken twice", "check_charged_twice"),
    ("provider ledger agrees", "check_provider_ledger"),
    ("no order created twice", "check_orders_twice"),
    ("one order per Idempotency-Key", "check_one_order_per_key"),
    ("every order final", "check_final"),
    ("queues drained", "check_queues_drained"),
    ("no dead letters", "check_dead_letters"),
    ("no bad card confirmed", "check_card_outcomes"),
)


def query(name: str) -> str:
    return (SQL / f"{name}.sql").read_text()


def load_run(conn: psycopg.Connection, initial_stock: dict[str, int], clients: ClientStats) -> None:
    """Puts what the suite knows next to the shop's tables (schema chaos)."""
    conn.execute("DROP SCHEMA IF EXISTS chaos CASCADE")
    conn.execute(query("chaos_schema"))  # type: ignore[arg-type]
    with conn.cursor() as cur:
        with cur.copy("COPY chaos.product_initial (product_id, stock) FROM STDIN") as copy:
            for product_id, stock in initial_stock.items():
                copy.write_row((product_id, stock))
        with cur.copy("COPY chaos.placed (key, card, order_id, refused) FROM STDIN") as copy:
            for p in clients.placed:
                copy.write_row((p.key, p.card, p.order_id, p.refused))
        with cur.copy("COPY chaos.seen (key, order_id) FROM STDIN") as copy:
            for p in clients.placed:
                for order_id in p.order_ids_seen:
                    copy.write_row((p.key, order_id))


def _one(conn: psycopg.Connection, name: str) -> tuple[int, str]:
    row = conn.execute(query(name)).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return int(row[0]), row[1] or ""


def check_all(
    admin_url: str,
    initial_stock: dict[str, int],
    clients: ClientStats,
    *,
    postgres_restarts: int = 0,
) -> list[Check]:
    accepted = len(clients.accepted)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        load_run(conn, initial_stock, clients)
        checks = []
        for name, file in SQL_CHECKS:
            value, detail = _one(conn, file)
            checks.append(Check(name, value, 0, detail))
        cancelled, detail = _one(conn, "check_fault_cancelled")
    allowed = FAULT_CANCELLED_PER_RESTART * postgres_restarts + int(
        accepted * FAULT_CANCELLED_PER_ORDER
    )
    checks.append(Check("sagas a fault cancelled", cancelled, allowed, detail))
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
