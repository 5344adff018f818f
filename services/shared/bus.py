"""The shop's bus rights, generated from the contracts: who may send what, to where.

`grant_bus` gives each service's role exactly the sends its contracts name and the
consumption of its own inbox, nothing else (users, which sends nothing, gets nothing);
`receive` registers a handler that accepts its message type only from the service
the contract names.
"""

from __future__ import annotations

import psycopg

from pgcourier import Handler, Worker

from . import contracts
from .roles import role_name


async def grant_bus(conn: psycopg.AsyncConnection) -> None:
    """Gives each service role the rights on the bus its contracts name (run after
    sql/shop/grants.sql has taken every right away, in the same transaction)."""
    # pgcourier's SQL API for privileges (what Admin.grant_send and grant_consume call).
    for c in contracts.CONTRACTS:
        await conn.execute("SELECT pgcourier.grant_send(%s, %s)", [c.queue, role_name(c.sender)])
    for queue, service in contracts.CONSUMERS.items():
        await conn.execute("SELECT pgcourier.grant_consume(%s, %s)", [queue, role_name(service)])


def receive(worker: Worker, kind: str, handler: Handler) -> None:
    """A transactional handler for `kind` on its contract's queue, accepting it only from
    the service the contract names (anything else is dead-lettered, never handled)."""
    c = contracts.contract(kind)
    worker.handle(c.queue, handler, type=kind, transactional=True, senders={role_name(c.sender)})
