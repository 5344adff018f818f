"""The claim as a server-side function (claim_function.py): the same claim as the
statement, used by workers whose connections cannot prepare (behind PgBouncer in
transaction mode), made by queue_create and migrate, and never a worker's downfall
when it is missing."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from pgcourier import Courier, Worker, claim_function, store
from pgcourier.migrations import migrate
from tests.helpers import scalar, wait_until

NOW = datetime(2030, 1, 1, tzinfo=UTC)


async def _functions(courier: Courier) -> list[str]:
    async with courier.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT proname FROM pg_proc WHERE pronamespace = 'pgcourier'::regnamespace"
            " AND proname LIKE 'claim%%' ORDER BY 1"
        )
        return [row[0] for row in await cur.fetchall()]


async def test_a_created_queue_has_its_claim_function_and_a_dropped_one_loses_it(
    courier: Courier,
) -> None:
    await courier.queue_create("jobs")
    await courier.queue_create("jobs")  # again: settings updated, the function kept
    assert await _functions(courier) == [claim_function.function_name("jobs")]
    await courier.queue_drop("jobs")
    assert await _functions(courier) == []


async def test_the_function_claims_what_the_statement_claims(courier: Courier) -> None:
    """Ready, delayed and in-flight messages, two keys (one with its head in flight),
    a JSON null key and a key set by another client: each claim, run at a fixed `now`
    and rolled back, claims the same messages with the same answers either way."""
    await courier.queue_create("jobs")
    async with courier.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO pgmq.q_jobs (vt, read_ct, message, headers)"
            " SELECT %(now)s::timestamptz + make_interval(secs =>"
            "          CASE WHEN i %% 7 = 0 THEN 30 WHEN i %% 11 = 0 THEN 0.5 ELSE -5 END),"
            "        CASE WHEN i %% 7 = 0 THEN 1 ELSE 0 END,"
            "        jsonb_build_object('i', i),"
            "        CASE WHEN i %% 5 = 0 THEN jsonb_build_object('x-pgmq-group', 'k' || (i %% 3))"
            "             WHEN i %% 13 = 0 THEN '{\"x-pgmq-group\": null}'::jsonb"
            "             ELSE '{}' END"
            " FROM generate_series(1, 300) AS i",
            {"now": NOW},
        )
        claims = []
        for through_function in (False, True):
            for limit in (1, 7, 100, 500):
                async with conn.transaction(force_rollback=True):
                    claim = await store.claim(
                        conn,
                        "jobs",
                        limit=limit,
                        vt_s=30,
                        horizon_s=2.0,
                        now=NOW,
                        through_function=through_function,
                    )
                claims.append((limit, claim))
    by_statement, by_function = claims[:4], claims[4:]
    assert by_function == by_statement
    everything = by_statement[-1][1]
    assert len(everything.rows) > 100  # the claims had something to choose from
    assert any(row.more_of_key for row in everything.rows)
    assert everything.next_due_s == pytest.approx(0.5)


async def test_migrate_makes_the_current_function_and_drops_other_versions(
    courier: Courier,
) -> None:
    await courier.queue_create("jobs")
    current = claim_function.function_name("jobs")
    async with courier.pool.connection() as conn:
        await conn.execute(sql.SQL("DROP FUNCTION {}").format(sql.Identifier("pgcourier", current)))
        # What an older version of pgcourier left: another hash, and a gone queue's.
        for stale in ("claim_0badc0de_jobs", "claim_0badc0de_gone"):
            await conn.execute(
                sql.SQL("CREATE FUNCTION {}() RETURNS int LANGUAGE sql AS 'SELECT 1'").format(
                    sql.Identifier("pgcourier", stale)
                )
            )
        await conn.commit()
        await migrate(conn)
    assert await _functions(courier) == [current]


async def test_a_worker_that_cannot_prepare_claims_through_the_function_and_without_it(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With prepared statements off (as behind PgBouncer 1.18), the worker claims
    through the function; when it is dropped under the worker (a newer version
    migrated), the worker says so and claims with the statement, losing nothing."""
    pool = AsyncConnectionPool(
        database_url, min_size=1, max_size=4, open=False, kwargs={"prepare_threshold": None}
    )
    await pool.open(wait=True)
    handled: list[int] = []
    async with Courier(database_url, pool=pool) as courier:
        await courier.queue_create("jobs")
        worker = Worker(courier, poll_interval=0.2)

        @worker.handle("jobs")
        async def handle(message: Any, ctx: Any) -> None:
            handled.append(message.payload["n"])

        async with worker.running():
            assert worker.consumers["jobs"].claim_function
            await courier.send("jobs", {"n": 1})
            await wait_until(lambda: handled == [1])
            async with courier.pool.connection() as conn:
                await claim_function.drop(conn, "jobs")
            with caplog.at_level(logging.WARNING, logger="pgcourier.worker"):
                await courier.send("jobs", {"n": 2})
                await wait_until(lambda: handled == [1, 2])
            assert not worker.consumers["jobs"].claim_function
            assert "claiming with the statement" in caplog.text
            await courier.send("jobs", {"n": 3})
            await wait_until(lambda: handled == [1, 2, 3])
        assert await scalar(courier, "SELECT count(*) FROM pgmq.q_jobs") == 0
    await pool.close()


async def test_a_worker_whose_connections_prepare_claims_with_the_statement(
    courier: Courier,
) -> None:
    """Prepared, the statement's plan is kept (0.22 ms an empty claim against the
    function's 0.82): the function is for connections that cannot prepare."""
    await courier.queue_create("jobs")
    async with courier.pool.connection() as conn:
        assert conn.prepare_threshold is not None
    handled: list[int] = []
    worker = Worker(courier, poll_interval=0.2)

    @worker.handle("jobs")
    async def handle(message: Any, ctx: Any) -> None:
        handled.append(1)

    async with worker.running():
        async with courier.pool.connection() as conn:
            # Dropped: a worker claiming through it would say so and flip its flag.
            await claim_function.drop(conn, "jobs")
        await courier.send("jobs", {})
        await wait_until(lambda: handled == [1])
        assert worker.consumers["jobs"].claim_function


def test_the_name_fits_postgres_for_the_longest_queue_name() -> None:
    longest = "q" * 47
    assert len(claim_function.function_name(longest)) <= 63
    assert claim_function.function_name("jobs") != claim_function.function_name("jobs2")
