"""PGQueuer 1.6.0 with its psycopg driver: batch enqueue of 100, QueueManager(batch_size=100).

PGQueuer's docs recommend asyncpg (or its pool driver) for throughput; asyncpg is not
installed here (bench/requirements.lock), so this uses its async psycopg driver: one
autocommit `psycopg.AsyncConnection` per consumer process, as `PgQueuer.from_psycopg_connection`
does. Payloads are bytes, so the JSON is encoded by the producer and decoded by the
entrypoint. Finished jobs leave the `pgqueuer` table (moved to `pgqueuer_log`), so what is
left there is what is not yet completed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import psycopg
from harness import (
    BATCH,
    Link,
    System,
    Target,
    paced_async,
    record,
    table_rows,
)
from pgqueuer.db import PsycopgDriver
from pgqueuer.errors import FailingListenerError
from pgqueuer.models import Job
from pgqueuer.qm import QueueManager
from pgqueuer.queries import Queries
from psycopg import sql

ENTRYPOINT = "bench_pgqueuer"
# Default object names (no PGQUEUER_PREFIX): the queue table.
QUEUE_TABLE = "pgqueuer"
DEQUEUE_TIMEOUT = timedelta(seconds=30)  # PGQueuer's default: polling fallback to NOTIFY


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def consumer(link: Link, idx: int) -> None:
    asyncio.run(_consume(link, idx))


async def _consume(link: Link, idx: int) -> None:
    latencies: list[float] = []
    async with await psycopg.AsyncConnection.connect(link.target.url, autocommit=True) as conn:
        qm = QueueManager(Queries(PsycopgDriver(conn)))

        @qm.entrypoint(ENTRYPOINT)
        async def handler(job: Job) -> None:
            payload = json.loads(job.payload) if job.payload else {}
            record(link, idx, latencies, payload.get("t"))

        link.ready[idx] = 1
        while not await asyncio.to_thread(link.go.wait, 0.2):
            if link.stop.is_set():
                return
        run = asyncio.create_task(qm.run(batch_size=BATCH, dequeue_timeout=DEQUEUE_TIMEOUT))
        # Running once its LISTEN answers: PGQueuer's own NOTIFY round-trip probe.
        while not run.done():
            try:
                await qm.listener_healthy(timeout=timedelta(seconds=0.5))
                break
            except FailingListenerError:
                continue
        link.running[idx] = 1
        while not run.done() and not await asyncio.to_thread(link.stop.wait, 0.2):
            pass
        qm.shutdown.set()
        await run
    link.results.put((idx, latencies))


class Producer:
    def __init__(self, target: Target) -> None:
        self.runner = asyncio.Runner()
        self.conn = self.runner.run(psycopg.AsyncConnection.connect(target.url, autocommit=True))
        self.queries = Queries(PsycopgDriver(self.conn))

    def close(self) -> None:
        self.runner.run(self.conn.close())
        self.runner.close()

    def send_batches(self, batches: Sequence[list[dict[str, Any]]]) -> None:
        self.runner.run(self._send_batches(batches))

    async def _send_batches(self, batches: Sequence[list[dict[str, Any]]]) -> None:
        for batch in batches:
            # The list form of enqueue is PGQueuer's batch insert: one statement per batch.
            await self.queries.enqueue(
                [ENTRYPOINT] * len(batch), [encode(p) for p in batch], [0] * len(batch)
            )

    def send_paced(self, total: int, rate: float, payload: Any) -> None:
        self.runner.run(self._send_paced(total, rate, payload))

    async def _send_paced(self, total: int, rate: float, payload: Any) -> None:
        async for i in paced_async(total, rate):
            await self.queries.enqueue(ENTRYPOINT, encode(payload(i)))


async def _with_queries(url: str, action: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        queries = Queries(PsycopgDriver(conn))
        if action == "install":
            # `pgq install`, then `pgq autovac` (its performance guide's checklist).
            if not await queries.schema_is_installed():
                await queries.install()
                await queries.optimize_autovacuum()
        else:
            await queries.clear_queue()  # TRUNCATE of the queue table
            await queries.clear_queue_log()
            await queries.clear_statistics_log()


def reset(target: Target) -> None:
    """TRUNCATEs its tables, leaving them as a fresh install does.

    Deliberately no ANALYZE: on an empty, analyzed `pgqueuer` the generic plan of the
    dequeue (which the server may settle on once psycopg has prepared the statement,
    after 5 runs) uses seq scans + sort, and would stay while the table fills up.
    """
    asyncio.run(_with_queries(target.url, "clear"))


def pending(target: Target) -> int:
    return table_rows(target.url, sql.Identifier(QUEUE_TABLE))


def system(url: str) -> System:
    target = Target(url, ENTRYPOINT)
    asyncio.run(_with_queries(url, "install"))
    return System(
        "pgqueuer",
        target,
        consumer,
        Producer,
        reset=reset,
        pending=pending,
        describe=f"PGQueuer {_version()}, psycopg async driver (asyncpg, which its docs "
        f"recommend for throughput, is not installed); 1 QueueManager + 1 connection per "
        f"consumer process, batch_size={BATCH}, unlimited concurrent tasks, no-op entrypoint; "
        f"enqueue of lists of {BATCH}; LISTEN/NOTIFY (statement trigger on its table), "
        f"dequeue_timeout={DEQUEUE_TIMEOUT.total_seconds():.0f}s; durability=durable, "
        "`pgq autovac` applied; reset = TRUNCATE",
    )


def _version() -> str:
    from importlib import metadata

    return metadata.version("pgqueuer")
