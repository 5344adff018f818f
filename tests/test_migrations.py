import asyncio

import psycopg

from pgcourier.migrations import migrate_url


async def test_migrations_are_recorded_and_applied_once(database_url: str) -> None:
    # The template already holds the schema: migrating again applies nothing.
    assert await migrate_url(database_url) == []
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT component, version FROM pgcourier.schema_migration ORDER BY 1, 2"
        ).fetchall()
    assert ("pgcourier", "0001_queue_settings") in rows


async def test_concurrent_migrations_on_an_empty_database_apply_everything_once(
    server_url: str,
) -> None:
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    name = "pgcourier_concurrent_migrate"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(server_url, dbname=name)
    try:
        results = await asyncio.gather(*(migrate_url(url) for _ in range(4)))
        applied = [r for r in results if r]
        assert len(applied) == 1, results
        assert applied[0][0].startswith("pgmq/")
        assert "pgcourier/0001_queue_settings" in applied[0]
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
