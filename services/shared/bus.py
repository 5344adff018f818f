"""The shop's bus rights, generated from the contracts: who may send what, to where.

`grant_bus` gives each service's role exactly the sends its contracts name and the
consumption of its own inbox, nothing else (users, which sends nothing, gets nothing);
`receive` registers a handler that accepts its message type only from the service
the contract names.
"""

from __future__ import annotations

from collections.abc import Collection

import psycopg

from pgcourier import Handler, Worker

from . import contracts
from .roles import role_name


async def grant_bus(
    conn: psycopg.AsyncConnection, *, services: Collection[str] | None = None
) -> None:
    """Gives each service role the rights on the bus its contracts name (run after
    sql/shop/grants.sql has taken every right away, in the same transaction).

    services: those whose database this is (all, in the one-database topology); a
    queue of another service's database is remote here, and sending to it means
    writing to the outbox (pgcourier.grant_send knows which)."""
    # pgcourier's SQL API for privileges (what Admin.grant_send and grant_consume call).
    for c in contracts.CONTRACTS:
        if services is None or c.sender in services:
            await conn.execute(
                "SELECT pgcourier.grant_send(%s, %s)", [c.queue, role_name(c.sender)]
            )
    for queue, service in contracts.CONSUMERS.items():
        if services is None or service in services:
            await conn.execute(
                "SELECT pgcourier.grant_consume(%s, %s)", [queue, role_name(service)]
            )


def receive(worker: Worker, kind: str, handler: Handler) -> None:
    """A transactional handler for `kind` on its contract's queue, accepting it only from
    the service the contract names (anything else is dead-lettered, never handled)."""
    c = contracts.contract(kind)
    # Sent from the same database, Postgres stamps the role; from the sender's own
    # database over a link, the role and that database's node name (the service's).
    role = role_name(c.sender)
    worker.handle(
        c.queue, handler, type=kind, transactional=True, senders={role, f"{role}@{c.sender}"}
    )
