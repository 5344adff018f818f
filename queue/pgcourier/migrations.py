"""Numbered SQL migrations, applied once each and recorded, safe under concurrency.

pgmq comes first: the pgmq extension when it is installed, otherwise the SQL-only
install bundled with the `pgmq` Python package. Then pgcourier's own migrations.
Services use `apply_migrations` with their own folders.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import psycopg

from . import claim_function, queries
from .errors import MigrationError

log = logging.getLogger(__name__)

# Every process that migrates takes this lock first, so concurrent start-ups apply
# each migration exactly once and later ones wait for the schema to be complete.
_MIGRATION_LOCK = 7_342_001


def migrations_in(folder: Path) -> list[tuple[str, str]]:
    """(version, sql) for every NNNN_name.sql file in a folder, in order."""
    return [(p.stem, p.read_text()) for p in sorted(folder.glob("*.sql"))]


async def apply_migrations(
    conn: psycopg.AsyncConnection,
    component: str,
    migrations: Iterable[tuple[str, str]],
) -> list[str]:
    """Applies the migrations of `component` not yet recorded; returns their versions."""
    applied_now: list[str] = []
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATION_LOCK])
            await conn.execute(queries.bootstrap_sql())
            cur = await conn.execute(
                "SELECT version FROM pgcourier.schema_migration WHERE component = %s",
                [component],
            )
            done = {row[0] for row in await cur.fetchall()}
            for version, text in migrations:
                if version in done:
                    continue
                log.info("applying migration %s/%s", component, version)
                await conn.execute(text)
                await conn.execute(
                    "INSERT INTO pgcourier.schema_migration (component, version) VALUES (%s, %s)",
                    [component, version],
                )
                applied_now.append(version)
    except psycopg.Error as exc:
        raise MigrationError(f"migrating {component} failed: {exc}") from exc
    return applied_now


def _pgmq_install() -> tuple[str, str]:
    folder = resources.files("pgmq.sql")
    version = folder.joinpath("VERSION").read_text().strip()
    return version, folder.joinpath("pgmq.sql").read_text()


async def _pgmq_present(conn: psycopg.AsyncConnection) -> bool:
    cur = await conn.execute("SELECT to_regclass('pgmq.meta') IS NOT NULL")
    row = await cur.fetchone()
    return bool(row and row[0])


async def migrate(conn: psycopg.AsyncConnection) -> list[str]:
    """Brings the bus schema up to date; returns what was applied, as component/version."""
    applied: list[str] = []
    # One transaction under the lock, pgmq and pgcourier's migrations both: a process
    # starting meanwhile waits for the whole schema, not just for pgmq (and a failed
    # migration leaves nothing half installed).
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATION_LOCK])
        if not await _pgmq_present(conn):
            version, text = _pgmq_install()
            log.info("installing pgmq %s from the bundled SQL", version)
            try:
                await conn.execute(text)
            except psycopg.Error as exc:
                raise MigrationError(f"installing pgmq {version} failed: {exc}") from exc
            applied.append(f"pgmq/{version}")
        applied += [
            f"pgcourier/{v}"
            for v in await apply_migrations(conn, "pgcourier", queries.migration_files())
        ]
        # Not a numbered migration: the claim function follows the claim's text, and a
        # new version of pgcourier may change that without a migration.
        await claim_function.install_all(conn)
    return applied


async def migrate_url(conninfo: str) -> list[str]:
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        return await migrate(conn)
