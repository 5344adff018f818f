"""Two databases of the test server, each a named node, and their reliable cleanup.

A link leaves objects that outlive a test unless removed in order: a subscription
in the receiving database (DROP DATABASE refuses a database that has one) and a
replication slot in the sending one (it holds WAL for as long as it exists). So
teardown drops every subscription first, without touching its slot (the sender's
slot may be gone already), then every slot of the test's databases, waiting for the
walsender that serves one to go, then the databases.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgcourier import Courier, links
from tests.helpers import skip_unless_logical_replication, wait_until


@dataclass(frozen=True)
class Node:
    name: str  # the node name (pgcourier.node)
    database: str
    url: str  # the owner's (migrating role's) URL


def new_node_name() -> str:
    return f"n_{uuid.uuid4().hex[:12]}"


def _dbname(url: str) -> str:
    return str(conninfo_to_dict(url)["dbname"])


def create_database(server_url: str, template_url: str) -> Node:
    database = f"pgcourier_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(database), sql.Identifier(_dbname(template_url))
            )
        )
    return Node(new_node_name(), database, make_conninfo(server_url, dbname=database))


def drop_subscriptions(url: str) -> None:
    """Drops every subscription of the database at `url`, leaving their slots alone."""
    with psycopg.connect(url, autocommit=True) as conn:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT subname FROM pg_subscription"
                " WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchall()
        ]
        for name in names:
            ident = sql.Identifier(name)
            conn.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(ident))
            conn.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(ident))
            conn.execute(sql.SQL("DROP SUBSCRIPTION {}").format(ident))


def drop_slots(server_url: str, databases: Sequence[str], *, within: float = 10.0) -> None:
    """Drops the replication slots of `databases`; a slot still in use by a walsender
    (its apply worker just stopped) is freed by ending that walsender."""
    deadline = time.monotonic() + within
    with psycopg.connect(server_url, autocommit=True) as conn:
        while True:
            slots = conn.execute(
                "SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = ANY(%s)",
                [list(databases)],
            ).fetchall()
            if not slots:
                return
            for slot, pid in slots:
                if pid is not None:
                    conn.execute("SELECT pg_terminate_backend(%s)", [pid])
                    continue
                # In use again, or gone meanwhile: the next round tells.
                with contextlib.suppress(
                    psycopg.errors.ObjectInUse, psycopg.errors.UndefinedObject
                ):
                    conn.execute("SELECT pg_drop_replication_slot(%s)", [slot])
            if time.monotonic() > deadline:
                raise AssertionError(f"replication slots still in use: {slots}")
            time.sleep(0.02)


def drop_databases(server_url: str, nodes: Sequence[Node]) -> None:
    """Subscriptions, then slots, then the databases; every step is tried whatever
    failed before it, and the first failure is raised at the end."""
    errors: list[BaseException] = []
    for node in nodes:
        try:
            drop_subscriptions(node.url)
        except psycopg.Error as exc:
            errors.append(exc)
    try:
        drop_slots(server_url, [n.database for n in nodes])
    except (psycopg.Error, AssertionError) as exc:
        errors.append(exc)
    with psycopg.connect(server_url, autocommit=True) as conn:
        for node in nodes:
            try:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(node.database)
                    )
                )
            except psycopg.Error as exc:
                errors.append(exc)
    if errors:
        raise errors[0]


@contextlib.asynccontextmanager
async def two_nodes(server_url: str, template_url: str) -> AsyncIterator[tuple[Node, Node]]:
    """A sender and a receiver, each named (links.set_node_name); dropped on exit."""
    skip_unless_logical_replication(server_url)
    made: list[Node] = []
    try:
        for _ in range(2):
            node = create_database(server_url, template_url)
            made.append(node)
            async with await psycopg.AsyncConnection.connect(node.url, autocommit=True) as conn:
                await links.set_node_name(conn, node.name)
        yield made[0], made[1]
    finally:
        drop_databases(server_url, made)


async def link_jobs(
    sender: Node,
    receiver: Node,
    *,
    queues: Sequence[str] = ("jobs",),
    mode: links.Mode = "replication",
) -> links.LinkReport:
    """Creates `queues` on the receiver and links the sender to them."""
    async with Courier(receiver.url, pool_max_size=1) as courier:
        for queue in queues:
            await courier.queue_create(queue)
    return await links.link(sender.url, receiver.url, queues=queues, mode=mode)


async def scalar_at(url: str, query: str, params: object = None) -> object:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(query, params)  # type: ignore[arg-type]
        row = await cur.fetchone()
    return row[0] if row else None


async def rows_at(url: str, query: str, params: object = None) -> list[tuple]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(query, params)  # type: ignore[arg-type]
        return await cur.fetchall()


async def disable_subscription(sender: Node, receiver: Node) -> None:
    """Stops the link's apply worker; returns once the sender's slot is free (its
    walsender gone), so nothing more is confirmed."""
    name = sql.Identifier(links.subscription_name(sender.name))
    async with await psycopg.AsyncConnection.connect(receiver.url, autocommit=True) as conn:
        await conn.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(name))
    slot = await link_slot(sender, receiver)
    query = "SELECT NOT active FROM pg_replication_slots WHERE slot_name = %s"
    await wait_until(lambda: scalar_at(sender.url, query, [slot]))


async def link_slot(sender: Node, receiver: Node) -> str:
    """The replication slot the sender keeps for the link (as links.link named it)."""
    slot = await scalar_at(
        sender.url, "SELECT slot_name FROM pgcourier.link WHERE node = %s", [receiver.name]
    )
    assert isinstance(slot, str)
    return slot


async def nudge_at(url: str, *, stalled_s: float = 0.5) -> list[str]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await links.nudge(conn, stalled_s=stalled_s)
