"""Procrastinate 3.10.0 with PsycopgConnector: batch_defer_async(100), run_worker_async.

One no-op async task; the payload dict is the job's keyword arguments. Each consumer
process opens its own App (the connector's default psycopg pool) and runs
`app.run_worker_async(...)` as a task, cancelled to stop it gracefully, as Procrastinate's
"launch a worker inside an application" how-to does. Workers keep finished jobs (its
default, delete_jobs="never"), so pending counts the jobs still 'todo' or 'doing'.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from harness import BATCH, Link, System, Target, paced_async, record
from procrastinate import App, PsycopgConnector

QUEUE = "bench_procrastinate"
TASK = "bench_noop"
CONCURRENCY = BATCH  # async sub-workers per worker process, as pgcourier's concurrency

# The whole of this file's SQL, small enough to stay inline (psycopg placeholders).
# Jobs not yet finished (status is an enum: todo, doing, succeeded, failed, ...).
PENDING_SQL = "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
# Empties the job tables between runs (events and periodic defers reference jobs),
# leaving them as a fresh install does. Deliberately no ANALYZE: an empty, analyzed
# procrastinate_jobs makes the planner choose seq scans + sort for the fetch query, a plan
# the worker's session keeps (plpgsql plan cache) and that slows down as jobs pile up
# (seen here: a worker down to 2-3 jobs/s within 10 s of a 200 msg/s latency run).
RESET_SQL = "TRUNCATE procrastinate_events, procrastinate_periodic_defers, procrastinate_jobs"
# Planner statistics as a table in use has them (mostly finished jobs, some waiting), set
# once at setup: its fetch query is fast on those, but on a never-analyzed table it sorts
# every waiting job on each fetch (PG15 here: 12 ms a fetch with 20,000 waiting, a drain
# of 20,000 at ~40 jobs/s). Column statistics survive the TRUNCATEs of reset; autovacuum
# replaces them with what it sees during the runs.
SEED_STATS_SQL = (
    "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status)"
    " SELECT %s, %s, '{}', (CASE WHEN g %% 10 = 0 THEN 'todo' ELSE 'succeeded' END)::"
    "procrastinate_job_status FROM generate_series(1, 2200) AS g",
    "ANALYZE procrastinate_jobs",
)
# Whether the schema is there already.
INSTALLED_SQL = "SELECT to_regclass('procrastinate_jobs')"
# Whether this process's worker has LISTENed yet: the connector's listener connection
# carries our application_name and its last statement is `LISTEN <channel>`.
LISTENING_SQL = (
    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND query LIKE 'LISTEN %%'"
)


def make_app(
    url: str,
    application_name: str | None = None,
    on_job: Callable[[dict[str, Any]], None] | None = None,
) -> App:
    """The app with its one task, registered under the same name by producer and consumers."""
    kwargs: dict[str, Any] = {"application_name": application_name} if application_name else {}
    app = App(connector=PsycopgConnector(conninfo=url, kwargs=kwargs))

    @app.task(name=TASK, queue=QUEUE)
    async def noop(**payload: Any) -> None:
        if on_job is not None:
            on_job(payload)

    return app


def consumer(link: Link, idx: int) -> None:
    asyncio.run(_consume(link, idx))


async def _consume(link: Link, idx: int) -> None:
    latencies: list[float] = []
    name = f"bench-procrastinate-{idx}-{os.getpid()}"
    app = make_app(link.target.url, name, lambda p: record(link, idx, latencies, p.get("t")))
    async with app.open_async():
        link.ready[idx] = 1
        while not await asyncio.to_thread(link.go.wait, 0.2):
            if link.stop.is_set():
                return
        worker = asyncio.create_task(
            app.run_worker_async(
                queues=[QUEUE],
                name=name,
                concurrency=CONCURRENCY,
                wait=True,
                listen_notify=True,
                install_signal_handlers=False,
            )
        )
        # autocommit: pg_stat_activity is read once per transaction.
        async with await psycopg.AsyncConnection.connect(link.target.url, autocommit=True) as conn:
            while not worker.done():
                row = await (await conn.execute(LISTENING_SQL, [name])).fetchone()
                if row and row[0]:
                    break
                await asyncio.sleep(0.005)
        link.running[idx] = 1
        while not worker.done() and not await asyncio.to_thread(link.stop.wait, 0.2):
            pass
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
    link.results.put((idx, latencies))


class Producer:
    def __init__(self, target: Target) -> None:
        self.runner = asyncio.Runner()
        self.app = make_app(target.url)
        self.task = self.app.tasks[TASK]
        self.runner.run(self._open())

    async def _open(self) -> None:
        await self.app.open_async()

    def close(self) -> None:
        self.runner.run(self.app.close_async())
        self.runner.close()

    def send_batches(self, batches: Sequence[list[dict[str, Any]]]) -> None:
        self.runner.run(self._send_batches(batches))

    async def _send_batches(self, batches: Sequence[list[dict[str, Any]]]) -> None:
        for batch in batches:
            await self.task.batch_defer_async(*batch)

    def send_paced(self, total: int, rate: float, payload: Any) -> None:
        self.runner.run(self._send_paced(total, rate, payload))

    async def _send_paced(self, total: int, rate: float, payload: Any) -> None:
        async for i in paced_async(total, rate):
            await self.task.defer_async(**payload(i))


def reset(target: Target) -> None:
    with psycopg.connect(target.url, autocommit=True) as conn:
        conn.execute(RESET_SQL)


def pending(target: Target) -> int:
    with psycopg.connect(target.url) as conn:
        row = conn.execute(PENDING_SQL).fetchone()
    return int(row[0]) if row else 0


async def _apply_schema(url: str) -> None:
    app = make_app(url)
    async with (
        app.open_async(),
        await psycopg.AsyncConnection.connect(url, autocommit=True) as conn,
    ):
        row = await (await conn.execute(INSTALLED_SQL)).fetchone()
        if not row or row[0] is None:
            await app.schema_manager.apply_schema_async()
            await conn.execute(SEED_STATS_SQL[0], [QUEUE, TASK])
            await conn.execute(SEED_STATS_SQL[1])
            await conn.execute(RESET_SQL)


def system(url: str) -> System:
    from importlib import metadata

    asyncio.run(_apply_schema(url))
    return System(
        "procrastinate",
        Target(url, QUEUE),
        consumer,
        Producer,
        reset=reset,
        pending=pending,
        describe=f"Procrastinate {metadata.version('procrastinate')}, PsycopgConnector (default "
        f"pool) per process; task.batch_defer_async({BATCH}); 1 run_worker_async per consumer "
        f"process, concurrency={CONCURRENCY}, listen_notify=True (LISTEN/NOTIFY, row trigger "
        "per insert), fetches one job per query, keeps finished jobs (delete_jobs=never); "
        "reset = TRUNCATE; planner statistics seeded once (see SEED_STATS_SQL); "
        "2,000 messages per throughput run (it handles well under 1k msg/s here)",
        max_messages=2_000,
    )
