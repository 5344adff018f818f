"""After the database restarts, the pool hands out live connections again at once."""

import asyncio

import psycopg
import pytest

from pgcourier import Courier


async def test_one_broken_connection_makes_the_pool_replace_every_dead_idle_one(
    database_url: str, server_url: str
) -> None:
    async with Courier(database_url, pool_min_size=4, pool_max_size=4) as courier:
        await courier.pool.wait()
        # Every pooled connection dies, as in a restart of the server.
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                [psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]],
            )
        await asyncio.sleep(0.2)
        with pytest.raises(psycopg.OperationalError):
            async with courier.pool.connection() as conn:
                await conn.execute("SELECT 1")
        # The broken one made the pool check the others: the next four succeed.
        await asyncio.sleep(0.5)
        for _ in range(4):
            async with courier.pool.connection() as conn:
                await conn.execute("SELECT 1")
