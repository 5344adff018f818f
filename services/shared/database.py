"""The shop's database: bus schema, service roles, queues and each service's schema.

Run by runner.py (and the tests) with a role that may create roles; the services
themselves connect as their own roles (`role_url`).
"""

from __future__ import annotations

import psycopg
from psycopg.conninfo import make_conninfo

from pgcourier import apply_migrations, migrate, migrations_in

from .bus import grant_bus
from .roles import role_name
from .settings import SERVICES
from .sql import SQL_ROOT, migrations_dir


def role_url(admin_url: str, service: str, password: str | None = None) -> str:
    """The same server and database as admin_url, as the service's own role."""
    return make_conninfo(admin_url, user=role_name(service), password=password or "")


async def shop_migrate(admin_url: str, *, role_password: str | None = None) -> list[str]:
    """Brings everything up to date; returns what was applied as component/version."""
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        applied = await migrate(conn)
        async with conn.transaction():
            await conn.execute(
                "SELECT set_config('shop.role_password', %s, true)", [role_password or ""]
            )
            await conn.execute((SQL_ROOT / "shop" / "roles.sql").read_text())  # type: ignore[arg-type]
        for component in ("shop", *SERVICES):
            versions = await apply_migrations(
                conn, component, migrations_in(migrations_dir(component))
            )
            applied += [f"{component}/{v}" for v in versions]
        async with conn.transaction():
            await conn.execute((SQL_ROOT / "shop" / "grants.sql").read_text())  # type: ignore[arg-type]
            await grant_bus(conn)
    return applied
