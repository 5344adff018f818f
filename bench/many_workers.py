"""Many workers on one queue behind PgBouncer: pgcourier against raw pgmq, side by side.

    .venv/bin/python bench/many_workers.py [--workers 16,64,256] [--processes 4]
                                           [--messages 20000] [--idle-seconds 3]

Not a test: it prints figures. For each number of workers and each system, that many
consumers (each with its own connection to PgBouncer, in transaction mode, spread
over --processes processes) wait on one queue; one producer sends --messages in
batches of 100; timed from the first send to the queue found empty. Then the queue
stays empty for --idle-seconds, and what the idle consumers cost is counted.

pgcourier: a Worker per consumer (a pool of one connection through PgBouncer,
prepared statements off as PgBouncer 1.18 needs) and one LISTEN per process,
straight to Postgres (PgBouncer in transaction mode drops LISTEN), which wakes every
worker of its process; it claims through the queue's claim function, which the server
keeps parsed (pgcourier/stmt: the same with the function dropped, so each claim is
sent and parsed, as before there was one). pgcourier/1w: one Worker per process, its
concurrency that process's share of the consumers, with as many pooled connections
through PgBouncer and its own LISTEN: one claim loop per process, no herd inside it.
pgmq: pgmq.read and pgmq.delete in a loop, sleeping 100 ms when a read comes back
empty (raw pgmq has no wake-up).

Reported per run: messages/s, the most Postgres connections seen (sampled every
0.1 s), claims (pgmq: reads) per message, and claims per second while idle.

Needs Debian's `pgbouncer` (apt-get install pgbouncer); skipped, saying so, without.
Database: as the other benchmarks (DATABASE_URL's server, else the embedded one).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from harness import bench_database, free_port, log
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

QUEUE = "many"
VT_S = 30
BATCH = 100
PGMQ_POLL_S = 0.1
PGCOURIER_POLL_S = 1.0
DB_NAME = f"pgcourier_many_{os.getpid()}"


# -- PgBouncer ----------------------------------------------------------------------


def _server_password(params: dict[str, str]) -> str:
    """The password the URL carries, or the one its libpq password file holds."""
    if params.get("password"):
        return params["password"]
    passfile = params.get("passfile")
    if not passfile:
        return ""
    for line in Path(passfile).read_text().splitlines():
        fields = line.split(":")
        if len(fields) == 5 and fields[3] in ("*", params.get("user", "postgres")):
            return fields[4]
    return ""


@contextmanager
def pgbouncer(url: str, *, pool_size: int) -> Iterator[str]:
    """A PgBouncer in transaction mode in front of url's database; yields its URL."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(binary).exists():
        raise FileNotFoundError("pgbouncer not found: apt-get install pgbouncer")
    params = {k: str(v) for k, v in conninfo_to_dict(url).items()}
    user = params.get("user", "postgres")
    host = params.get("host", "127.0.0.1")
    # PgBouncer will not run as root: as the user the embedded server runs as (it
    # owns the socket's folder), else as postgres.
    run_as = "pgserver" if host.startswith("/") else "postgres"
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="pgcourier-bouncer-"))
    password = _server_password(params).replace('"', '""')
    (folder / "userlist.txt").write_text(f'"{user}" "{password}"\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"{params['dbname']} = host={host} port={params.get('port', '5432')}"
        f" dbname={params['dbname']} user={user}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {folder / 'userlist.txt'}\n"
        "pool_mode = transaction\nmax_client_conn = 2000\n"
        f"default_pool_size = {pool_size}\nmax_db_connections = {pool_size}\n"
        f"logfile = {folder / 'pgbouncer.log'}\n"
    )
    shutil.chown(folder, run_as)
    for f in folder.iterdir():
        shutil.chown(f, run_as)
    folder.chmod(0o700)
    proc = subprocess.Popen([binary, "-q", "-u", run_as, str(folder / "pgbouncer.ini")])
    try:
        bouncer = make_conninfo(
            "", host="127.0.0.1", port=str(port), dbname=params["dbname"], user=user
        )
        for _ in range(100):
            try:
                psycopg.connect(bouncer, prepare_threshold=None).close()
                break
            except psycopg.OperationalError:
                time.sleep(0.05)
        yield bouncer
    finally:
        proc.terminate()
        proc.wait(5)
        shutil.rmtree(folder, ignore_errors=True)


# -- the consumers ------------------------------------------------------------------


@dataclass
class Shared:
    go: Any  # mp.Event: start consuming
    stop: Any  # mp.Event: report and exit
    ready: Any  # mp.Queue: one item per process once connected
    results: Any  # mp.Queue: (claims, claims when the queue went idle)
    idle: Any  # mp.Event: the queue is empty for good: mark the claim count


async def _pgcourier_process(
    system: str, bouncer: str, direct: str, workers: int, shared: Shared
) -> None:
    from psycopg_pool import AsyncConnectionPool

    from pgcourier import Courier, Worker
    from pgcourier.listener import Listener

    async def handle(message: Any, ctx: Any) -> None:
        return None

    couriers, running = [], []
    if system == ONE_WORKER:
        # pgcourier's own way: one Worker per process, its concurrency the process's
        # share of the consumers, with as many pooled connections and its own LISTEN.
        pool = AsyncConnectionPool(
            bouncer,
            min_size=workers,
            max_size=workers,
            open=False,
            kwargs={"prepare_threshold": None},
        )
        await pool.open(wait=True, timeout=60)
        courier = Courier(bouncer, pool=pool)
        worker = Worker(
            courier,
            listen_conninfo=direct,
            poll_interval=PGCOURIER_POLL_S,
            batch_size=BATCH,
            concurrency=workers,
        )
        worker.handle(QUEUE, handle)
        couriers.append(courier)
        running.append(worker)
    for _ in range(workers if system != ONE_WORKER else 0):
        pool = AsyncConnectionPool(
            bouncer, min_size=1, max_size=1, open=False, kwargs={"prepare_threshold": None}
        )
        await pool.open(wait=True, timeout=60)
        courier = Courier(bouncer, pool=pool)
        worker = Worker(courier, listen=False, poll_interval=PGCOURIER_POLL_S, batch_size=BATCH)
        worker.handle(QUEUE, handle)
        couriers.append(courier)
        running.append(worker)

    def woken(queue: str) -> None:  # one LISTEN for the process wakes each of its workers
        for worker in running:
            consumer = worker.consumers.get(queue)
            if consumer is not None:
                consumer.wake.set()

    shared.ready.put(1)
    await asyncio.get_running_loop().run_in_executor(None, shared.go.wait)
    tasks = [asyncio.create_task(w.run()) for w in running]
    # The one Worker listens itself; Workers of one consumer each share one LISTEN.
    listen_task = None
    if system != ONE_WORKER:
        listen_task = asyncio.create_task(Listener(direct, [QUEUE], woken).run())
    await asyncio.get_running_loop().run_in_executor(None, shared.idle.wait)
    at_idle = sum(w.consumers[QUEUE].claims for w in running if QUEUE in w.consumers)
    await asyncio.get_running_loop().run_in_executor(None, shared.stop.wait)
    claims = sum(w.consumers[QUEUE].claims for w in running if QUEUE in w.consumers)
    for w in running:
        w.stop()
    await asyncio.gather(*tasks, return_exceptions=True)
    if listen_task is not None:
        listen_task.cancel()
        await asyncio.gather(listen_task, return_exceptions=True)
    for courier in couriers:
        await courier.pool.close()
    shared.results.put((at_idle, claims))


def _pgmq_process(bouncer: str, workers: int, shared: Shared) -> None:
    import threading

    counts = [[0, 0] for _ in range(workers)]  # [claims, claims at idle]

    def consume(i: int) -> None:
        with psycopg.connect(bouncer, autocommit=True, prepare_threshold=None) as conn:
            shared.go.wait()
            marked = False
            while not shared.stop.is_set():
                if shared.idle.is_set() and not marked:
                    counts[i][1], marked = counts[i][0], True
                # The whole message, decoded, as a consumer would have it.
                rows = conn.execute(
                    "SELECT msg_id, message, headers FROM pgmq.read(%s, %s, %s)",
                    [QUEUE, VT_S, BATCH],
                ).fetchall()
                counts[i][0] += 1
                if not rows:
                    time.sleep(PGMQ_POLL_S)
                    continue
                conn.execute("SELECT pgmq.delete(%s, %s::bigint[])", [QUEUE, [r[0] for r in rows]])
            if not marked:
                counts[i][1] = counts[i][0]

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    shared.ready.put(1)
    for t in threads:
        t.join()
    shared.results.put((sum(c[1] for c in counts), sum(c[0] for c in counts)))


def consumer_process(system: str, bouncer: str, direct: str, workers: int, shared: Shared) -> None:
    if system != "pgmq":
        asyncio.run(_pgcourier_process(system, bouncer, direct, workers, shared))
    else:
        _pgmq_process(bouncer, workers, shared)


# -- one run ------------------------------------------------------------------------


@dataclass
class Run:
    system: str
    workers: int
    seconds: float
    messages: int
    max_connections: int
    claims_draining: int
    idle_claims: int
    idle_seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


def _connections(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    ).fetchone()
    return int(row[0]) if row else 0


def run_once(
    system: str, url: str, bouncer: str, workers: int, processes: int, args: argparse.Namespace
) -> Run:
    with psycopg.connect(url, autocommit=True) as conn:
        # Each run on a vacuumed queue: the last run's 20,000 deleted rows would
        # otherwise slow the claims of whichever system runs next.
        conn.execute(sql.SQL("VACUUM (ANALYZE) pgmq.{}").format(sql.Identifier(f"q_{QUEUE}")))
    ctx = mp.get_context("spawn")
    shared = Shared(ctx.Event(), ctx.Event(), ctx.Queue(), ctx.Queue(), ctx.Event())
    per = [workers // processes + (i < workers % processes) for i in range(processes)]
    procs = [
        ctx.Process(target=consumer_process, args=(system, bouncer, url, n, shared))
        for n in per
        if n
    ]
    for p in procs:
        p.start()
    for _ in procs:
        shared.ready.get(timeout=300)
    payloads = [{"n": i, "pad": "x" * 80} for i in range(args.messages)]
    queue_rows = sql.SQL("SELECT count(*) FROM pgmq.{}").format(sql.Identifier(f"q_{QUEUE}"))
    most = 0
    with psycopg.connect(url, autocommit=True) as conn:
        shared.go.set()
        time.sleep(0.5)  # every consumer is past its start and claiming
        started = time.perf_counter()
        from psycopg.types.json import Jsonb

        for i in range(0, len(payloads), BATCH):
            conn.execute(
                "SELECT pgmq.send_batch(%s, %s::jsonb[])",
                [QUEUE, [Jsonb(p) for p in payloads[i : i + BATCH]]],
            )
            most = max(most, _connections(conn))
        while True:
            row = conn.execute(queue_rows).fetchone()
            most = max(most, _connections(conn))
            if row and row[0] == 0:
                break
            time.sleep(0.1)
        seconds = time.perf_counter() - started
        shared.idle.set()
        idle_started = time.perf_counter()
        while time.perf_counter() - idle_started < args.idle_seconds:
            most = max(most, _connections(conn))
            time.sleep(0.1)
        idle_s = time.perf_counter() - idle_started
    shared.stop.set()
    at_idle = total = 0
    for _ in procs:
        a, t = shared.results.get(timeout=120)
        at_idle, total = at_idle + a, total + t
    for p in procs:
        p.join(30)
    return Run(system, workers, seconds, args.messages, most, at_idle, total - at_idle, idle_s)


# -- main ---------------------------------------------------------------------------


# pgcourier claiming through its claim function (the server keeps its plan), and
# through the statement, parsed and planned at every claim (before the function).
# pgcourier/1w: one Worker per process instead of one per consumer (see above).
ONE_WORKER = "pgcourier/1w"
SYSTEMS = ("pgcourier", "pgcourier/stmt", ONE_WORKER, "pgmq")


async def _claim_function(url: str, *, installed: bool) -> None:
    """The queue made, with its claim function or without (its workers then claim with
    the statement)."""
    from pgcourier import Courier, claim_function

    async with Courier(url, pool_min_size=1, pool_max_size=1) as courier:
        await courier.queue_create(QUEUE)
        if not installed:
            async with courier.pool.connection() as conn:
                await claim_function.drop(conn, QUEUE)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="16,64,256", help="comma-separated counts")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--idle-seconds", type=float, default=3.0)
    parser.add_argument("--pool-size", type=int, default=8, help="PgBouncer's server pool")
    args = parser.parse_args(argv)
    try:
        args.counts = [int(x) for x in args.workers.split(",") if x]
    except ValueError:
        parser.error("--workers: comma-separated whole numbers")
    if not args.counts or min([*args.counts, args.processes, args.messages]) <= 0:
        parser.error("every number must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("pgbouncer") is None and not Path("/usr/sbin/pgbouncer").exists():
        print("many_workers: skipped: pgbouncer not found (apt-get install pgbouncer)")
        return 0
    runs: list[Run] = []
    with (
        bench_database(name=DB_NAME) as (url, where, _),
        pgbouncer(url, pool_size=args.pool_size) as bouncer,
    ):
        asyncio.run(_claim_function(url, installed=True))
        log(f"server: {where}; PgBouncer (transaction mode, pool {args.pool_size}) in front")
        for workers in args.counts:
            for system in SYSTEMS:
                if system != "pgmq":
                    asyncio.run(_claim_function(url, installed=system != "pgcourier/stmt"))
                log(f"{system}: {workers} workers in {min(args.processes, workers)} processes")
                run = run_once(system, url, bouncer, workers, min(args.processes, workers), args)
                runs.append(run)
                log(f"  {run.rate:,.0f} msg/s, at most {run.max_connections} connections")
    print()
    print(f"{args.messages:,} messages through one queue; PgBouncer pool {args.pool_size}")
    header = (
        f"{'workers':>7}  {'system':<14}  {'msg/s':>8}  {'vs pgmq':>7}  {'pg conns':>8}"
        f"  {'claims/msg':>10}  {'idle claims/s':>13}"
    )
    print(header)
    print("-" * len(header))
    for run in runs:
        peer = next(r for r in runs if r.workers == run.workers and r.system == "pgmq")
        ratio = run.rate / peer.rate if peer.rate else 0.0
        print(
            f"{run.workers:>7}  {run.system:<14}  {run.rate:>8,.0f}  {ratio:>6.2f}x"
            f"  {run.max_connections:>8}  {run.claims_draining / run.messages:>10.2f}"
            f"  {run.idle_claims / run.idle_seconds:>13,.1f}"
        )
    print()
    print("pg conns: the most connections to the bench database seen during the run")
    print("(PgBouncer's pool, pgcourier's LISTEN per process, this script's own).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
