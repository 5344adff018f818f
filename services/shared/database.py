"""The shop's database: bus schema, service roles, queues and each service's schema.

Run by runner.py (and the tests) with a role that may create roles; the services
themselves connect as their own roles (`role_url`).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgcourier import apply_migrations, migrate, migrations_in

from .bus import grant_bus
from .roles import role_name
from .settings import SERVICES
from .sql import SQL_ROOT, migrations_dir


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
    return make_conninfo(**params)


def new_role_passwords() -> dict[str, str]:
    """A fresh random password for each service's role."""
    return {service: secrets.token_urlsafe(24) for service in SERVICES}


async def shop_migrate(
    admin_url: str, *, role_passwords: Mapping[str, str | None] | None = None
) -> list[str]:
    """Brings everything up to date; returns what was applied as component/version.

    role_passwords: by service; each role given one gets it (roles are the
    cluster's, so this is for every database on the server), the others keep theirs.
    """
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        applied = await migrate(conn)
        async with conn.transaction():
            for service in SERVICES:
                password = (role_passwords or {}).get(service)
                role = role_name(service)
                # The SCRAM verifier, computed here: the clear password never reaches
                # the server (nor its statement log).
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
