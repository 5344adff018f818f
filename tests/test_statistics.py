"""A queue that grew from empty gets its planner statistics refreshed by the workers
(statistics.py, migration 0005): a claim plan cached while the queue looked empty
scans the whole queue until the next ANALYZE, which re-plans it."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg import sql

from pgcourier import Courier, Message, Worker
from pgcourier.statistics import Statistics
from tests.helpers import prepare_claim, scalar, wait_until

FILL = (
    "INSERT INTO pgmq.q_jobs (vt, message)"
    " SELECT clock_timestamp() + make_interval(secs => %s), '{}'"
    " FROM generate_series(1, 20000)"
)


async def _planned_rows(courier: Courier) -> float:
    return float(
        await scalar(courier, "SELECT reltuples FROM pg_class WHERE oid = 'pgmq.q_jobs'::regclass")
    )


async def _fill(courier: Courier, *, delay_s: float = 0) -> None:
    """20,000 messages, counted at once by the cumulative statistics."""
    async with courier.pool.connection() as conn:
        await conn.set_autocommit(True)
        await conn.execute("SELECT pg_stat_force_next_flush()")
        await conn.execute(FILL, [delay_s])
        await conn.execute("SELECT pg_stat_force_next_flush()")


async def _analyzed_empty(courier: Courier) -> None:
    await courier.queue_create("jobs")
    async with courier.pool.connection() as conn:
        await conn.set_autocommit(True)
        await conn.execute("VACUUM ANALYZE pgmq.q_jobs")


async def test_a_claim_plan_cached_on_an_empty_queue_walks_the_index_once_refreshed(
    courier: Courier,
) -> None:
    await _analyzed_empty(courier)
    async with courier.pool.connection() as conn:
        await conn.set_autocommit(True)
        await prepare_claim(conn, "cached_claim", "jobs")
        # The plan a prepared claim (or the claim function) keeps: made on the empty queue.
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute("EXECUTE cached_claim(50, 30, 1.0, NULL)")
        await _fill(courier)

        async def plan() -> str:
            async with conn.transaction(force_rollback=True):
                cur = await conn.execute("EXPLAIN EXECUTE cached_claim(50, 30, 1.0, NULL)")
                return "\n".join(row[0] for row in await cur.fetchall())

        assert "Seq Scan on q_jobs" in await plan()  # the empty queue's plan, kept
        statistics = Statistics(courier, ["jobs"])
        await statistics.run_once()
        assert statistics.refreshed == 1
        refreshed = await plan()
    assert "Seq Scan on q_jobs" not in refreshed, refreshed
    assert "Index Scan using q_jobs_vt_idx" in refreshed, refreshed
    assert await _planned_rows(courier) > 10_000


async def test_statistics_near_the_truth_or_a_small_queue_are_left_alone(
    courier: Courier,
) -> None:
    await _analyzed_empty(courier)
    statistics = Statistics(courier, ["jobs"])
    await courier.send_batch("jobs", list(range(500)))
    async with courier.pool.connection() as conn:
        await conn.execute("SELECT pg_stat_force_next_flush()")
    await statistics.run_once()
    assert statistics.refreshed == 0  # 500 live rows: too few to matter
    await _fill(courier)
    await statistics.run_once()
    await statistics.run_once()
    assert statistics.refreshed == 1  # once: then they are near the truth


async def test_a_queue_never_analyzed_is_left_alone_the_planner_sizes_it_as_it_is(
    courier: Courier,
) -> None:
    await courier.queue_create("jobs")
    await _fill(courier)
    statistics = Statistics(courier, ["jobs"])
    await statistics.run_once()
    assert statistics.refreshed == 0


async def test_a_role_that_does_not_own_the_queue_may_have_its_statistics_refreshed(
    courier: Courier,
) -> None:
    await _analyzed_empty(courier)
    await _fill(courier)
    role = f"stranger_{uuid.uuid4().hex[:8]}"
    async with courier.pool.connection() as conn:
        await conn.set_autocommit(True)
        await conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
        try:
            async with conn.transaction(force_rollback=True):
                await conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
                cur = await conn.execute("SELECT pgcourier.queue_refresh_statistics('jobs')")
                assert await cur.fetchone() == (True,)
                cur = await conn.execute("SELECT pgcourier.queue_refresh_statistics('jobs')")
                assert await cur.fetchone() == (False,)
                cur = await conn.execute("SELECT pgcourier.queue_refresh_statistics('nosuch')")
                assert await cur.fetchone() == (False,)
        finally:
            await conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


async def test_a_running_worker_refreshes_the_statistics_of_its_queue(courier: Courier) -> None:
    await _analyzed_empty(courier)

    async def handle(message: Message, ctx: Any) -> None:
        return None

    worker = Worker(courier, maintenance_interval=0.05, poll_interval=0.5)
    worker.handle("jobs", handle)
    async with worker.running():
        # Delayed: they stay queued while the worker's maintenance looks.
        await _fill(courier, delay_s=600)
        await wait_until(lambda: _planned_rows_over(courier, 10_000), within=10)


async def _planned_rows_over(courier: Courier, rows: int) -> bool:
    return await _planned_rows(courier) > rows
