"""The shop's database: bus schema, service roles, queues and each service's schema.

Run by runner.py (and the tests) with a role that may create roles; the services
themselves connect as their own roles (`role_url`).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgcourier import apply_migrations, links, migrate, migrations_in

from . import contracts
from .bus import grant_bus
from .roles import role_name
from .settings import SERVICES
from .sql import SQL_ROOT, migrations_dir
from .topology_db import ShopDatabases, create_databases, inbox_of, link_pairs, publisher


def role_url(admin_url: str, service: str, password: str | None = None) -> str:
    """The same server and database as admin_url, as the service's own role.

    Nothing of the admin's credentials is kept: neither its password nor its
    password file (the embedded server's superuser's).
    """
    params = {
        k: v for k, v in conninfo_to_dict(admin_url).items() if k not in ("password", "passfile")
    }
    params["user"] = role_name(service)
    if password:
        params["password"] = password
    return make_conninfo("", **params)


def new_role_passwords() -> dict[str, str]:
    """A fresh random password for each service's role."""
    return {service: secrets.token_urlsafe(24) for service in SERVICES}


async def _set_role_passwords(
    conn: psycopg.AsyncConnection, role_passwords: Mapping[str, str | None] | None
) -> None:
    """Creates the roles (once per server) and sets the passwords given.

    Roles are the cluster's, and an advisory lock only the database's: two shops (or
    two services' databases) migrated at once on one server may alter one role at the
    same moment, which Postgres refuses ("tuple concurrently updated", or a unique
    violation when both create it). The loser tries again, its transaction rolled
    back whole."""
    for attempt in range(1, _ROLE_ATTEMPTS + 1):
        try:
            await _set_role_passwords_once(conn, role_passwords)
            return
        except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateObject):
            if attempt == _ROLE_ATTEMPTS:
                raise
        except psycopg.errors.InternalError_ as exc:
            if "concurrently" not in str(exc) or attempt == _ROLE_ATTEMPTS:
                raise
        await asyncio.sleep(0.05 * attempt)


_ROLE_ATTEMPTS = 5


async def _set_role_passwords_once(
    conn: psycopg.AsyncConnection, role_passwords: Mapping[str, str | None] | None
) -> None:
    async with conn.transaction():
        for service in SERVICES:
            password = (role_passwords or {}).get(service)
            role = role_name(service)
            # The SCRAM verifier, computed here: the clear password never reaches the
            # server (nor its statement log).
            verifier = (
                conn.pgconn.encrypt_password(
                    password.encode(), role.encode(), b"scram-sha-256"
                ).decode()
                if password
                else ""
            )
            await conn.execute(
                "SELECT set_config(%s, %s, true)", [f"shop.{role}_password", verifier]
            )
        await conn.execute((SQL_ROOT / "shop" / "roles.sql").read_text())


async def shop_migrate(
    admin_url: str | ShopDatabases,
    *,
    role_passwords: Mapping[str, str | None] | None = None,
    queue_settings: tuple[float, int, float, float] | None = None,
) -> list[str]:
    """Brings everything up to date; returns what was applied as component/version.

    admin_url: the one database of every service, or where each service's is.
    role_passwords: by service; each role given one gets it (roles are the
    cluster's, so this is for every database on the server), the others keep theirs.
    queue_settings: (lease, attempts, backoff base, backoff max) of every inbox, if
    not the shop's own (contracts.QUEUE_SETTINGS); tests shorten them.
    """
    databases = ShopDatabases.one(admin_url) if isinstance(admin_url, str) else admin_url
    if databases.topology == "databases":
        return await _migrate_databases(
            databases, role_passwords, queue_settings or contracts.QUEUE_SETTINGS
        )
    url = databases.url(SERVICES[0])
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        applied = await migrate(conn)
        await _set_role_passwords(conn, role_passwords)
        for component in ("shop", *SERVICES):
            versions = await apply_migrations(
                conn, component, migrations_in(migrations_dir(component))
            )
            applied += [f"{component}/{v}" for v in versions]
        if queue_settings is not None:
            for queue in contracts.CONSUMERS:
                await _queue_create(conn, queue, queue_settings)
        async with conn.transaction():
            await conn.execute((SQL_ROOT / "shop" / "grants.sql").read_text())
            await grant_bus(conn)
    return applied


async def _queue_create(
    conn: psycopg.AsyncConnection, queue: str, settings: tuple[float, int, float, float]
) -> None:
    await conn.execute(
        "SELECT pgcourier.queue_create(%s, visibility_timeout_s => %s,"
        " max_attempts => %s, backoff_base_s => %s, backoff_max_s => %s)",
        [queue, *settings],
    )


async def _migrate_databases(
    databases: ShopDatabases,
    role_passwords: Mapping[str, str | None] | None,
    queue_settings: tuple[float, int, float, float],
) -> list[str]:
    """A database per service: each gets the bus, the roles, its service's schema and
    its inbox; then the links between them; then bindings and grants, which name
    remote queues the links declare."""
    applied: list[str] = []
    create_databases(databases)
    for service in SERVICES:
        async with await psycopg.AsyncConnection.connect(
            databases.url(service), autocommit=True
        ) as conn:
            applied += [f"{service}:{v}" for v in await migrate(conn)]
            await _set_role_passwords(conn, role_passwords)
            await links.set_node_name(conn, service)
            versions = await apply_migrations(conn, service, migrations_in(migrations_dir(service)))
            applied += [f"{service}/{v}" for v in versions]
            inbox = inbox_of(service)
            if inbox is not None:
                await _queue_create(conn, inbox, queue_settings)
    for (sender, consumer), queues in link_pairs().items():
        report = await links.link(
            databases.url(sender), databases.url(consumer), queues=queues, mode=databases.link_mode
        )
        applied += [f"link {sender}->{consumer}: {what}" for what in report.created]
    for service in SERVICES:
        async with await psycopg.AsyncConnection.connect(
            databases.url(service), autocommit=True
        ) as conn:
            for pattern, queue in contracts.TOPIC_BINDINGS:
                if publisher(pattern, queue) == service:
                    await conn.execute("SELECT pgcourier.bind_topic(%s, %s)", [pattern, queue])
            async with conn.transaction():
                await conn.execute((SQL_ROOT / "shop" / "grants.sql").read_text())
                await grant_bus(conn, services=[service])
                await _connect_only(conn, service)
    return applied


async def _connect_only(conn: psycopg.AsyncConnection, service: str) -> None:
    """A service's database admits its own role alone (and the owner)."""
    cur = await conn.execute("SELECT current_database()")
    row = await cur.fetchone()
    assert row is not None
    database = sql.Identifier(row[0])
    await conn.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(database))
    for other in SERVICES:
        verb = "GRANT" if other == service else "REVOKE"
        await conn.execute(
            sql.SQL(
                verb + " CONNECT ON DATABASE {} " + ("TO" if verb == "GRANT" else "FROM") + " {}"
            ).format(database, sql.Identifier(role_name(other)))
        )
