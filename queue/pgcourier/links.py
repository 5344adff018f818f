"""Links between databases: queues that live in another database, reached through
pgcourier.outbox by Postgres's logical replication or by a relay.

`link()` sets one up (one sender, one receiver, the receiver's queues the sender
sends to), idempotently, as the migrating role of both databases; `links()` lists
them with their health; `resync()` delivers again every row the sender still keeps
(after a replication slot was lost), the receiver skipping those it has.
See sql/pgcourier/migrations/0004_links.sql for the tables and triggers.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import pq, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .errors import ConfigurationError, DatabaseError, QueueNotFoundError
from .naming import check_queue_name

Mode = Literal["replication", "relay"]

NODE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,19}$")
# Logical replication needs both ends on 16 or later: a subscription's owner need not
# be a superuser there (pg_create_subscription), and the embedded server is 16.
MIN_REPLICATION_VERSION = 160000

# What a relay or a re-sync copies of an outbox row (xid stays the receiver's own).
_OUTBOX_SELECT = (
    "SELECT id, origin, target, queue_name, message::text, headers::text, delay_s, sender,"
    " created_at, xid::text, forget_below, forget_xmin::text FROM pgcourier.outbox"
)
_OUTBOX_INSERT = (
    "INSERT INTO pgcourier.outbox (id, origin, target, queue_name, message, headers, delay_s,"
    " sender, created_at, xid, forget_below, forget_xmin)"
    " VALUES (%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s, %s::xid8, %s, %s::xid8)"
)


class LinkError(ConfigurationError):
    """A link cannot be set up as asked (server too old, wal_level, names)."""


@dataclass(frozen=True, slots=True)
class LinkInfo:
    """One link as a database sees it. direction: 'out' (this database sends, to node)
    or 'in' (this database receives, from node, by a subscription)."""

    direction: str
    node: str
    mode: str
    state: str
    lag_bytes: int | None
    lag_s: float | None
    retained: int | None
    expired: int | None
    slot_name: str | None
    slot_status: str | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class LinkReport:
    sender: str
    receiver: str
    mode: Mode
    queues: tuple[str, ...]
    created: tuple[str, ...]  # what this call created (empty when all was there)
    resent: int = 0  # rows delivered again by a re-sync


def publication_name(receiver: str) -> str:
    return f"pgcourier_to_{receiver}"


def slot_name(sender: str, receiver: str, sender_database_oid: int) -> str:
    """Slots are the server's, and node names need only be unique among linked
    databases (two shops on one server both have an orders node): the sender
    database's oid makes the name the server's only one."""
    return f"pgcourier_{sender}_{receiver}_{sender_database_oid}"


def subscription_name(sender: str) -> str:
    return f"pgcourier_from_{sender}"


def check_node_name(name: str) -> str:
    if not NODE_NAME.match(name):
        raise LinkError(
            f"invalid node name {name!r}: use 1-20 lowercase letters, digits or _, "
            "not starting with a digit (set one with: python -m pgcourier node NAME)"
        )
    return name


async def node_name(conn: psycopg.AsyncConnection) -> str:
    cur = await conn.execute("SELECT pgcourier.node_name()")
    row = await cur.fetchone()
    assert row is not None
    return str(row[0])


async def set_node_name(conn: psycopg.AsyncConnection, name: str) -> None:
    """Names this database among linked ones (its database name until set)."""
    check_node_name(name)
    await conn.execute(
        "INSERT INTO pgcourier.node (name) VALUES (%s)"
        " ON CONFLICT (only_one) DO UPDATE SET name = EXCLUDED.name",
        [name],
    )


def conninfo_for_server(url: str) -> str:
    """The sender's conninfo as the receiving server will use it: a password file
    named in the URL (readable by this process, not by the server's system user) is
    read here and its password put in the conninfo, which Postgres keeps readable by
    superusers only (pg_subscription.subconninfo)."""
    params = conninfo_to_dict(url)
    passfile = params.pop("passfile", None)
    if passfile and "password" not in params:
        for line in Path(str(passfile)).read_text().splitlines():
            fields = line.split(":", 4)
            if len(fields) == 5 and fields[3] in ("*", str(params.get("user", ""))):
                params["password"] = fields[4]
                break
    return make_conninfo(**{k: str(v) for k, v in params.items()})


async def _connect(url: str) -> psycopg.AsyncConnection:
    try:
        return await psycopg.AsyncConnection.connect(url, autocommit=True)
    except psycopg.Error as exc:
        raise DatabaseError(f"could not connect: {exc}") from exc


async def _check_replication_ready(conn: psycopg.AsyncConnection, what: str) -> None:
    cur = await conn.execute(
        "SELECT current_setting('server_version_num')::int, current_setting('wal_level')"
    )
    row = await cur.fetchone()
    assert row is not None
    version, wal_level = row
    if version < MIN_REPLICATION_VERSION:
        raise LinkError(
            f"the {what} runs PostgreSQL {version // 10000}: logical replication links "
            "need 16 or later; use a relay (python -m pgcourier link --relay) instead"
        )
    if what == "sender" and wal_level != "logical":
        raise LinkError(
            f"the sender's wal_level is {wal_level!r}, not 'logical': set wal_level = "
            "logical and restart it, or use a relay (--relay)"
        )


async def link(
    sender_url: str,
    receiver_url: str,
    *,
    queues: Sequence[str],
    mode: Mode = "replication",
    subscription_conninfo: str | None = None,
    resync: bool = False,
) -> LinkReport:
    """Makes `queues` of the receiver sendable from the sender; safe to run again.

    Both URLs are the migrating (owner) role's. In replication mode the sender needs
    wal_level = logical and a role with REPLICATION; the receiver's role creates the
    subscription (a superuser, or pg_create_subscription on 16+). The subscription
    connects with subscription_conninfo (default: sender_url, its password file read
    here), as seen from the receiving server.

    A replication slot found lost (or missing) is made again and every row the
    sender still keeps is delivered again (re-sync); resync=True does so anyway.
    """
    if mode not in ("replication", "relay"):
        raise LinkError(f"unknown link mode {mode!r}: 'replication' or 'relay'")
    for queue in queues:
        check_queue_name(queue)
    created: list[str] = []
    resent = 0
    async with await _connect(receiver_url) as receiver, await _connect(sender_url) as sender:
        receiver_node = check_node_name(await node_name(receiver))
        sender_node = check_node_name(await node_name(sender))
        if receiver_node == sender_node:
            raise LinkError(
                f"sender and receiver are both named {sender_node!r}: name each database "
                "(python -m pgcourier node NAME)"
            )
        settings = {}
        for queue in queues:
            cur = await receiver.execute(
                "SELECT visibility_timeout_s, max_attempts, backoff_base_s, backoff_max_s"
                " FROM pgcourier.queue WHERE queue_name = %s",
                [queue],
            )
            row = await cur.fetchone()
            if row is None:
                raise QueueNotFoundError(f"{queue} (on the receiver, {receiver_node})")
            settings[queue] = row
        if mode == "replication":
            await _check_replication_ready(sender, "sender")
            await _check_replication_ready(receiver, "receiver")
        cur = await sender.execute("SELECT oid FROM pg_database WHERE datname = current_database()")
        oid_row = await cur.fetchone()
        assert oid_row is not None
        slot = slot_name(sender_node, receiver_node, oid_row[0]) if mode == "replication" else None
        async with sender.transaction():
            for queue in queues:
                await sender.execute(
                    "SELECT pgcourier.remote_queue_declare(%s, %s)", [queue, receiver_node]
                )
                await sender.execute(
                    "UPDATE pgcourier.remote_queue SET visibility_timeout_s = %s,"
                    " max_attempts = %s, backoff_base_s = %s, backoff_max_s = %s"
                    " WHERE queue_name = %s",
                    [*settings[queue], queue],
                )
            await sender.execute(
                "INSERT INTO pgcourier.link (node, mode, slot_name) VALUES (%s, %s, %s)"
                " ON CONFLICT (node) DO UPDATE"
                " SET mode = EXCLUDED.mode, slot_name = EXCLUDED.slot_name",
                [receiver_node, mode, slot],
            )
        if mode == "relay":
            await _drop_replication(sender, receiver, sender_node, receiver_node)
        if mode == "replication":
            assert slot is not None
            lost = await _ensure_publication_and_slot(sender, receiver_node, slot, created)
            sub_lost = await _ensure_subscription(
                receiver,
                sender_node,
                receiver_node,
                slot,
                subscription_conninfo or conninfo_for_server(sender_url),
                created,
                recreate=lost,
            )
            if lost or sub_lost or resync:
                resent = await copy_retained(sender, receiver, receiver_node)
        elif resync:
            resent = await copy_retained(sender, receiver, receiver_node)
    return LinkReport(sender_node, receiver_node, mode, tuple(queues), tuple(created), resent)


async def _drop_replication(
    sender: psycopg.AsyncConnection,
    receiver: psycopg.AsyncConnection,
    sender_node: str,
    receiver_node: str,
) -> None:
    """A link turned to a relay keeps no subscription, slot or publication: the relay
    alone carries its rows (a slot left behind would hold the sender's WAL forever)."""
    name = subscription_name(sender_node)
    cur = await receiver.execute(
        "SELECT 1 FROM pg_subscription WHERE subname = %s"
        " AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
        [name],
    )
    if await cur.fetchone() is not None:
        await drop_subscription(receiver, name)
    cur = await sender.execute(
        "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE %s"
        " AND database = current_database()",
        [f"pgcourier\\_{sender_node}\\_{receiver_node}\\_%"],
    )
    for (slot,) in await cur.fetchall():
        await _drop_slot(sender, slot)
    await sender.execute(
        sql.SQL("DROP PUBLICATION IF EXISTS {}").format(
            sql.Identifier(publication_name(receiver_node))
        )
    )


async def _drop_slot(sender: psycopg.AsyncConnection, slot: str, *, patience_s: float = 2) -> None:
    """Drops a slot whose subscription is gone. Its walsender exits on its own a moment
    after the subscription is dropped, and a slot still in use cannot be dropped: wait
    for it, then, past patience_s, end the walsender (nothing needs it any more)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        cur = await sender.execute(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", [slot]
        )
        row = await cur.fetchone()
        if row is None:
            return
        if row[0] is None:
            try:
                await sender.execute("SELECT pg_drop_replication_slot(%s)", [slot])
                return
            except psycopg.errors.ObjectInUse:
                pass  # taken again between the two statements: look again
        elif loop.time() - started > patience_s:
            await sender.execute("SELECT pg_terminate_backend(%s)", [row[0]])
        await asyncio.sleep(0.05)


async def _ensure_publication_and_slot(
    sender: psycopg.AsyncConnection, receiver_node: str, slot: str, created: list[str]
) -> bool:
    """Returns True when the slot had to be made again (it was lost): rows sent while
    it was gone are still in the outbox, and must be delivered by a re-sync."""
    publication = publication_name(receiver_node)
    cur = await sender.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", [publication])
    if await cur.fetchone() is None:
        await sender.execute(
            sql.SQL(
                "CREATE PUBLICATION {} FOR TABLE pgcourier.outbox WHERE (target = {})"
                " WITH (publish = 'insert')"
            ).format(sql.Identifier(publication), sql.Literal(receiver_node))
        )
        created.append(f"publication {publication}")
    cur = await sender.execute(
        "SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s", [slot]
    )
    row = await cur.fetchone()
    lost = False
    if row is not None and row[0] == "lost":
        await sender.execute("SELECT pg_drop_replication_slot(%s)", [slot])
        row, lost = None, True
    if row is None:
        # Made here, not by CREATE SUBSCRIPTION: between two databases of one server
        # that would wait forever on its own transaction.
        await sender.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [slot])
        created.append(f"replication slot {slot}")
        cur = await sender.execute(
            "SELECT count(*) FROM pgcourier.outbox WHERE target = %s", [receiver_node]
        )
        row = await cur.fetchone()
        lost = lost or bool(row and row[0])
    return lost


async def _ensure_subscription(
    receiver: psycopg.AsyncConnection,
    sender_node: str,
    receiver_node: str,
    slot: str,
    conninfo: str,
    created: list[str],
    *,
    recreate: bool,
) -> bool:
    name = subscription_name(sender_node)
    cur = await receiver.execute(
        # Subscriptions are the cluster's: the name is unique only within a database.
        "SELECT subenabled FROM pg_subscription WHERE subname = %s"
        " AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
        [name],
    )
    row = await cur.fetchone()
    if row is not None and recreate:
        await drop_subscription(receiver, name)
        row = None
    if row is None:
        await receiver.execute(
            sql.SQL(
                "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {}"
                " WITH (create_slot = false, slot_name = {}, copy_data = false, binary = true)"
            ).format(
                sql.Identifier(name),
                sql.Literal(conninfo),
                sql.Identifier(publication_name(receiver_node)),
                sql.Literal(slot),
            )
        )
        created.append(f"subscription {name}")
        return recreate
    if not row[0]:
        await receiver.execute(sql.SQL("ALTER SUBSCRIPTION {} ENABLE").format(sql.Identifier(name)))
    return False


async def drop_subscription(receiver: psycopg.AsyncConnection, name: str) -> None:
    """Drops a subscription without touching its slot (the sender's, maybe lost)."""
    ident = sql.Identifier(name)
    await receiver.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(ident))
    await receiver.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(ident))
    await receiver.execute(sql.SQL("DROP SUBSCRIPTION {}").format(ident))


async def copy_retained(
    sender: psycopg.AsyncConnection,
    receiver: psycopg.AsyncConnection,
    receiver_node: str,
    *,
    batch_size: int = 1000,
) -> int:
    """Delivers every row the sender keeps for the receiver, again; the receiver skips
    the ones it has (by origin and outbox id). Returns the rows sent."""
    sent = 0
    after = 0
    while True:
        rows = await fetch_outbox(sender, receiver_node, after=after, limit=batch_size)
        if not rows:
            return sent
        await deliver_rows(receiver, rows)
        sent += len(rows)
        after = rows[-1][0]


async def fetch_outbox(
    conn: psycopg.AsyncConnection,
    target: str,
    *,
    after: int = 0,
    limit: int = 1000,
    lock: bool = False,
) -> list[tuple[Any, ...]]:
    """The rows kept for `target` after id `after`, oldest first; lock: FOR UPDATE.

    The (target, id) index is forced: an outbox is mostly near empty when analyzed,
    and with those statistics the planner read a whole backlog (a bitmap scan, then
    a sort of every kept row for the first 500: 65 ms at 40,000 rows against 0.7 ms),
    so a relay that fell behind fell further behind."""
    query = _OUTBOX_SELECT + " WHERE target = %s AND id > %s ORDER BY id LIMIT %s"
    if lock:
        query += " FOR UPDATE SKIP LOCKED"
    async with contextlib.AsyncExitStack() as stack:
        if conn.info.transaction_status == pq.TransactionStatus.IDLE:
            # Settings local to a transaction: one of our own when the caller has none.
            await stack.enter_async_context(conn.transaction())
        await conn.execute(
            "SELECT set_config('enable_bitmapscan', 'off', true),"
            " set_config('enable_seqscan', 'off', true)"
        )
        cur = await conn.execute(query, [target, after, limit])
        return await cur.fetchall()


async def deliver_rows(conn: psycopg.AsyncConnection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Inserts outbox rows of another node into this database's outbox: its trigger
    delivers each to its queue once (or to the dead letters), keeping none."""
    async with conn.cursor() as cur:
        await cur.executemany(_OUTBOX_INSERT, rows)


async def links(conn: psycopg.AsyncConnection) -> list[LinkInfo]:
    cur = await conn.execute(
        "SELECT direction, node, mode, state, lag_bytes, lag_s, retained, expired,"
        " slot_name, slot_status, last_error FROM pgcourier.links ORDER BY direction DESC, node"
    )
    return [LinkInfo(*row) for row in await cur.fetchall()]


async def prune(conn: psycopg.AsyncConnection) -> int:
    """Sender side: deletes rows receivers confirmed (see link_prune in SQL)."""
    cur = await conn.execute("SELECT pgcourier.link_prune()")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def nudge(conn: psycopg.AsyncConnection, *, stalled_s: float = 5.0) -> list[str]:
    """Receiver side: restarts subscriptions left without an apply worker."""
    cur = await conn.execute("SELECT pgcourier.link_nudge(%s)", [stalled_s])
    row = await cur.fetchone()
    return list(row[0]) if row and row[0] else []
