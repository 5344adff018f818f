"""Every test gets its own clean, migrated, real database.

The server is DATABASE_URL's when set, otherwise an embedded Postgres in
.pgdata-test (in memory when there is room: tests.helpers.server_folder). The schema
is migrated once per session into a template database, and each test gets a fresh
clone of it (CREATE DATABASE ... TEMPLATE).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgcourier import Courier
from pgcourier.migrations import migrate_url
from tests.helpers import server_folder


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from pgcourier.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(server_folder(".pgdata-test"))
    yield server.url


def _admin(server_url: str) -> psycopg.Connection:
    return psycopg.connect(server_url, autocommit=True)


def _drop(conn: psycopg.Connection, name: str) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def template_url(server_url: str) -> Iterator[str]:
    import asyncio

    name = f"pgcourier_tpl_{os.getpid()}"
    with _admin(server_url) as conn:
        _drop(conn, name)
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(server_url, dbname=name)
    asyncio.run(migrate_url(url))
    yield url
    with _admin(server_url) as conn:
        _drop(conn, name)


@pytest.fixture
def database_url(server_url: str, template_url: str) -> Iterator[str]:
    name = f"pgcourier_t_{uuid.uuid4().hex[:12]}"
    template = psycopg.conninfo.conninfo_to_dict(template_url)["dbname"]
    with _admin(server_url) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(str(template))
            )
        )
    yield make_conninfo(server_url, dbname=name)
    with _admin(server_url) as conn:
        _drop(conn, name)


@pytest.fixture
def empty_database_url(server_url: str) -> Iterator[str]:
    """A database with nothing in it: not even the bus's schema."""
    name = f"pgcourier_empty_{uuid.uuid4().hex[:12]}"
    with _admin(server_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_conninfo(server_url, dbname=name)
    with _admin(server_url) as conn:
        _drop(conn, name)


@pytest.fixture
async def courier(database_url: str) -> AsyncIterator[Courier]:
    async with Courier(database_url, pool_max_size=10) as c:
        yield c


@pytest.fixture(scope="session")
def second_server() -> Iterator[Any]:
    """Another embedded Postgres beside the first (its own folder and postmaster), for
    links between servers; restartable (tests.chaos.postgres.RestartablePostgres)."""
    if os.environ.get("DATABASE_URL"):
        pytest.skip("needs the embedded server (a second one is started beside it)")
    from tests.chaos.postgres import embedded

    # One per test process (pytest-xdist's workers): some tests stop and restart it.
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    server = embedded(
        server_folder(f".pgdata-test-second-{worker}" if worker else ".pgdata-test-second")
    )
    try:
        yield server
    finally:
        # Restarted by a test, its postmaster is not the one pgserver started, and
        # pgserver would leave it running after the session.
        server.stop()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: Any) -> Iterator[None]:
    """A loud notice, last of all, when the console's browser tests did not run."""
    yield
    skipped = terminalreporter.stats.get("skipped", [])
    if any("test_console_browser" in report.nodeid for report in skipped):
        terminalreporter.write_line("")
        terminalreporter.write_line("!" * 78, red=True, bold=True)
        terminalreporter.write_line(
            "!!! BROWSER TESTS SKIPPED: no Chromium found. Install it to run them:",
            red=True,
            bold=True,
        )
        terminalreporter.write_line(
            "!!!     apt-get install -y chromium chromium-driver", red=True, bold=True
        )
        terminalreporter.write_line("!" * 78, red=True, bold=True)
