"""pgcourier against the raw pgmq Python client, side by side on one database.

    .venv/bin/python bench/throughput.py [--messages N] [--quick] [--rounds R]
                                         [--rate MSG_PER_S] [--latency-seconds S]

Not a test: it prints figures and the ratio pgcourier/pgmq. The machine is shared
and noisy, so the two systems run back to back in the same run, on the same fresh
database, alternating which goes first, and the ratios are what to compare.

Database: DATABASE_URL's server when set, otherwise an embedded Postgres in
.pgdata-bench at the repository root. A database `pgcourier_bench` is created,
migrated with pgcourier's migrations (which install pgmq's SQL) and dropped at the end.

Scenarios, each run for both systems, ~100-byte JSON payloads:
  * enqueue only: one producer, batches of 100, nobody consuming;
  * drain only: the queue prefilled, then 1 or 4 consumer processes (already
    connected) are let go, claim, run a no-op handler and acknowledge until it is
    empty; timed from "go", so a Worker's start-up (LISTEN connection) counts;
  * end to end: consumers already running, one producer sends the messages in
    batches of 100; timed from the first send to the last acknowledgement;
  * latency: one producer sends single messages at a steady rate with a timestamp
    in the payload; the consumer measures send-to-handler-start.

pgcourier: one Worker per consumer process, each with its own Courier,
batch_size=100, concurrency=100, LISTEN/NOTIFY on. Raw pgmq: the sync
`pgmq.PGMQueue` client, `send_batch` of 100, then `read(qty=100)` and
`delete_batch`; a consumer that finds the queue empty sleeps 10 ms before reading
again (client-side polling, not `read_with_poll`). The pgmq client gets its own
psycopg pool (`PGMQueue(pool=..., init_extension=False)`): its `conn_string` parser
drops a Unix-socket host, as in the embedded server's URL, and would quietly connect
to localhost:5432 instead.

The throughput scenarios run --rounds times (3; 1 with --quick) and the medians are
reported, with the median and range of the back-to-back pgcourier/pgmq ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / ".pgdata-bench"
BENCH_DB = "pgcourier_bench"
PGC_QUEUE = "bench_pgcourier"
PGMQ_QUEUE = "bench_pgmq"
BATCH = 100
VT_S = 30
PGMQ_POLL_S = 0.010
LATENCY_WARMUP = 20  # first messages of a latency run left out of the percentiles

START = time.monotonic()


def log(text: str) -> None:
    print(f"[{time.monotonic() - START:6.1f}s] {text}", flush=True)


# -- payloads ------------------------------------------------------------------


def order_payload(i: int) -> dict[str, Any]:
    """About 100 bytes of JSON."""
    return {
        "order_id": i,
        "customer": f"cust-{i % 99991:05d}",
        "amount_cents": 1999 + i % 5000,
        "currency": "EUR",
        "note": "gift wrap",
    }


def timed_payload(i: int) -> dict[str, Any]:
    """About 100 bytes of JSON, stamped with the send time (CLOCK_MONOTONIC, system-wide)."""
    return {
        "t": time.monotonic(),
        "seq": i,
        "customer": f"cust-{i % 99991:05d}",
        "note": "standard shipping, gift wrap, x",
    }


def json_size(payload: dict[str, Any]) -> int:
    import json

    return len(json.dumps(payload, separators=(",", ":")).encode())


def batches_of(payloads: Sequence[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [list(payloads[i : i + size]) for i in range(0, len(payloads), size)]


# -- consumer processes (spawned; module-level so they can be pickled) ----------------


@dataclass
class Link:
    """What a consumer process shares with this one (picklable for spawn)."""

    url: str
    queue: str
    counts: Any  # messages handled, one slot per process
    ready: Any  # 1 once connected, one slot per process
    running: Any  # 1 once consuming, one slot per process
    go: Any
    stop: Any
    results: Any  # each process puts (idx, latencies) when it stops
    record_latency: bool


def pgcourier_consumer(link: Link, idx: int) -> None:
    asyncio.run(_pgcourier_consume(link, idx))


async def _pgcourier_consume(link: Link, idx: int) -> None:
    from pgcourier import Context, Courier, Message, Worker

    latencies: list[float] = []
    async with Courier(link.url) as courier:
        worker = Worker(courier, concurrency=BATCH, batch_size=BATCH, poll_interval=1.0)

        async def handler(message: Message, ctx: Context) -> None:
            if link.record_latency:
                latencies.append(time.monotonic() - message.payload["t"])
            link.counts[idx] += 1

        worker.handle(link.queue, handler)
        link.ready[idx] = 1
        while not await asyncio.to_thread(link.go.wait, 0.2):
            if link.stop.is_set():
                return
        run = asyncio.create_task(worker.run())
        started = asyncio.create_task(worker.started.wait())
        await asyncio.wait({run, started}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        link.running[idx] = 1
        while not run.done() and not await asyncio.to_thread(link.stop.wait, 0.2):
            pass
        worker.stop()
        await run
    link.results.put((idx, latencies))


def _handle_noop(message: Any) -> None:
    """The raw pgmq consumer's handler."""


def pgmq_consumer(link: Link, idx: int) -> None:
    from pgmq.queue import PGMQueue
    from psycopg_pool import ConnectionPool

    latencies: list[float] = []
    with ConnectionPool(link.url, min_size=1, max_size=1, open=True) as pool:
        pool.wait()
        client = PGMQueue(pool=pool, init_extension=False)
        link.ready[idx] = 1
        while not link.go.wait(0.2):
            if link.stop.is_set():
                return
        link.running[idx] = 1
        while not link.stop.is_set():
            messages = client.read(link.queue, vt=VT_S, qty=BATCH)
            if not messages:
                time.sleep(PGMQ_POLL_S)
                continue
            for m in messages:
                if link.record_latency:
                    latencies.append(time.monotonic() - m.message["t"])
                _handle_noop(m)
            client.delete_batch(link.queue, [m.msg_id for m in messages])
            link.counts[idx] += len(messages)
    link.results.put((idx, latencies))


class Consumers:
    """N consumer processes, started and connected before anything is timed."""

    def __init__(self, system: System, n: int, *, record_latency: bool = False) -> None:
        ctx = mp.get_context("spawn")
        self.n = n
        self.link = Link(
            url=system.url,
            queue=system.queue,
            counts=ctx.Array("q", n, lock=False),
            ready=ctx.Array("b", n, lock=False),
            running=ctx.Array("b", n, lock=False),
            go=ctx.Event(),
            stop=ctx.Event(),
            results=ctx.Queue(),
            record_latency=record_latency,
        )
        self.latencies: list[float] = []
        self.procs = [
            ctx.Process(
                target=system.consumer,
                args=(self.link, i),
                name=f"{system.name}-consumer-{i}",
                daemon=True,
            )
            for i in range(n)
        ]

    def __enter__(self) -> Consumers:
        for p in self.procs:
            p.start()
        self._wait(lambda: all(self.link.ready), 60, "consumers to connect")
        return self

    def start(self) -> None:
        self.link.go.set()

    def wait_running(self) -> None:
        self._wait(lambda: all(self.link.running), 30, "consumers to start")

    def handled(self) -> int:
        return sum(self.link.counts)

    def wait_handled(self, total: int, timeout: float) -> None:
        self._wait(lambda: self.handled() >= total, timeout, f"{total} messages handled")

    def _wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            for p in self.procs:
                if not p.is_alive():
                    raise RuntimeError(f"{p.name} exited with code {p.exitcode}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"timed out after {timeout:.0f}s waiting for {what} "
                    f"({self.handled()} handled so far)"
                )
            time.sleep(0.002)

    def __exit__(self, *exc: object) -> None:
        started = self.link.go.is_set()
        self.link.stop.set()
        if started and exc[0] is None:
            for _ in self.procs:
                _, latencies = self.link.results.get(timeout=60)
                self.latencies.extend(latencies)
        for p in self.procs:
            p.join(timeout=30)
        for p in self.procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        if exc[0] is None:
            for p in self.procs:
                if p.exitcode != 0:
                    raise RuntimeError(f"{p.name} exited with code {p.exitcode}")


# -- producers (in this process) ---------------------------------------------------


class Producer(Protocol):
    def send_batches(self, batches: Sequence[list[dict[str, Any]]]) -> None: ...

    def send_paced(self, total: int, rate: float) -> None: ...


class PgcourierProducer:
    def __init__(self, url: str, queue: str) -> None:
        from pgcourier import Courier

        self.queue = queue
        self.runner = asyncio.Runner()
        self.courier = Courier(url)
        self.runner.run(self.courier.open())

    def close(self) -> None:
        self.runner.run(self.courier.close())
        self.runner.close()

    def send_batches(self, batches: Sequence[list[dict[str, Any]]]) -> None:
        self.runner.run(self._send_batches(batches))

    async def _send_batches(self, batches: Sequence[list[dict[str, Any]]]) -> None:
        for batch in batches:
            await self.courier.send_batch(self.queue, batch)

    def send_paced(self, total: int, rate: float) -> None:
        self.runner.run(self._send_paced(total, rate))

    async def _send_paced(self, total: int, rate: float) -> None:
        t0 = time.monotonic()
        for i in range(total):
            wait = t0 + i / rate - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await self.courier.send(self.queue, timed_payload(i))


class PgmqProducer:
    def __init__(self, url: str, queue: str) -> None:
        from pgmq.queue import PGMQueue
        from psycopg_pool import ConnectionPool

        self.queue = queue
        self.pool = ConnectionPool(url, min_size=1, max_size=1, open=True)
        self.pool.wait()
        self.client = PGMQueue(pool=self.pool, init_extension=False)

    def close(self) -> None:
        self.pool.close()

    def send_batches(self, batches: Sequence[list[dict[str, Any]]]) -> None:
        for batch in batches:
            self.client.send_batch(self.queue, batch)

    def send_paced(self, total: int, rate: float) -> None:
        t0 = time.monotonic()
        for i in range(total):
            wait = t0 + i / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.client.send(self.queue, timed_payload(i))


@dataclass
class System:
    name: str
    url: str
    queue: str
    consumer: Callable[..., None]
    producer_class: Callable[[str, str], Any]

    @contextlib.contextmanager
    def producer(self) -> Iterator[Producer]:
        producer = self.producer_class(self.url, self.queue)
        try:
            yield producer
        finally:
            producer.close()


# -- the database --------------------------------------------------------------------


class Database:
    """An admin connection to the bench database: table checks and vacuums."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)

    def close(self) -> None:
        self.conn.close()

    def _table(self, queue: str) -> sql.Identifier:
        return sql.Identifier("pgmq", f"q_{queue}")

    def is_empty(self, queue: str) -> bool:
        query = sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(self._table(queue))
        row = self.conn.execute(query).fetchone()
        return bool(row and row[0])

    def wait_empty(self, queue: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.is_empty(queue):
            if time.monotonic() > deadline:
                raise RuntimeError(f"queue {queue} still not empty after {timeout}s")
            time.sleep(0.002)

    def reset(self, queue: str) -> None:
        """Empties the queue and vacuums it, so every run starts from the same state."""
        self.conn.execute(sql.SQL("DELETE FROM {}").format(self._table(queue)))
        self.conn.execute(sql.SQL("VACUUM ANALYZE {}").format(self._table(queue)))

    def setting(self, name: str) -> str:
        row = self.conn.execute("SELECT current_setting(%s)", [name]).fetchone()
        return str(row[0]) if row else "?"


@contextlib.contextmanager
def bench_database() -> Iterator[tuple[str, str, list[str]]]:
    """(url of a fresh, migrated bench database, the server, migrations applied)."""
    from pgcourier.migrations import migrate_url

    url = os.environ.get("DATABASE_URL")
    server = None
    if url:
        info = conninfo_to_dict(url)
        where = f"DATABASE_URL (host {info.get('host', 'default')}, port {info.get('port', 5432)})"
    else:
        from pgcourier.embedded import EmbeddedPostgres

        log(f"starting the embedded Postgres in {DATA_DIR.name}/")
        server = EmbeddedPostgres(DATA_DIR)
        url = server.url
        where = f"embedded Postgres (pgserver), data in {DATA_DIR.name}/"

    def admin(statement: sql.Composable) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(statement)

    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DB))
    admin(drop)
    admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DB)))
    try:
        bench_url = make_conninfo(url, dbname=BENCH_DB)
        applied = asyncio.run(migrate_url(bench_url))
        log(f"created and migrated database {BENCH_DB}: {', '.join(applied)}")
        yield bench_url, where, applied
    finally:
        admin(drop)
        log(f"dropped database {BENCH_DB}")
        if server is not None:
            server.stop()


def create_queues(url: str) -> None:
    from pgmq.queue import PGMQueue
    from psycopg_pool import ConnectionPool

    from pgcourier import Courier

    async def pgcourier_queue() -> None:
        async with Courier(url) as courier:
            await courier.queue_create(PGC_QUEUE, visibility_timeout=VT_S)

    asyncio.run(pgcourier_queue())
    with ConnectionPool(url, min_size=1, max_size=1) as pool:
        PGMQueue(pool=pool, init_extension=False).create_queue(PGMQ_QUEUE)


# -- scenarios --------------------------------------------------------------------------


@dataclass
class Results:
    # (scenario, system) -> samples; msg/s for throughput, seconds for latency
    samples: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    units: dict[str, str] = field(default_factory=dict)

    def add(self, scenario: str, system: str, value: float, unit: str) -> None:
        if scenario not in self.units:
            self.order.append(scenario)
            self.units[scenario] = unit
        self.samples.setdefault((scenario, system), []).append(value)

    def value(self, scenario: str, system: str) -> float | None:
        samples = self.samples.get((scenario, system))
        return statistics.median(samples) if samples else None

    def ratios(self, scenario: str) -> list[float]:
        """pgcourier / pgmq of each pair of runs made back to back."""
        pgc = self.samples.get((scenario, "pgcourier"), [])
        pgmq = self.samples.get((scenario, "pgmq"), [])
        return [a / b for a, b in zip(pgc, pgmq, strict=False) if b]


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def drain(system: System, db: Database, results: Results, n: int, consumers: int) -> None:
    payloads = [order_payload(i) for i in range(n)]
    batches = batches_of(payloads, BATCH)
    db.reset(system.queue)
    with system.producer() as producer:
        t0 = time.perf_counter()
        producer.send_batches(batches)
        enqueue_s = time.perf_counter() - t0
    results.add("enqueue only, 1 producer", system.name, rate(n, enqueue_s), "msg/s")
    log(f"{system.name:<9} enqueue {n:,}: {enqueue_s:.2f}s, {rate(n, enqueue_s):,.0f} msg/s")
    with Consumers(system, consumers) as group:
        t0 = time.perf_counter()
        group.start()
        group.wait_running()
        startup_s = time.perf_counter() - t0
        group.wait_handled(n, timeout=max(60, n / 200))
        db.wait_empty(system.queue)
        drain_s = time.perf_counter() - t0
    scenario = f"drain only, {consumers} consumer{'s' if consumers > 1 else ''}"
    results.add(scenario, system.name, rate(n, drain_s), "msg/s")
    log(
        f"{system.name:<9} {scenario}: {drain_s:.2f}s, {rate(n, drain_s):,.0f} msg/s "
        f"(all consumers running after {startup_s * 1000:.0f} ms)"
    )


def end_to_end(system: System, db: Database, results: Results, n: int, consumers: int) -> None:
    payloads = [order_payload(i) for i in range(n)]
    batches = batches_of(payloads, BATCH)
    db.reset(system.queue)
    with system.producer() as producer, Consumers(system, consumers) as group:
        group.start()
        group.wait_running()
        t0 = time.perf_counter()
        producer.send_batches(batches)
        sent_s = time.perf_counter() - t0
        group.wait_handled(n, timeout=max(60, n / 200))
        db.wait_empty(system.queue)
        total_s = time.perf_counter() - t0
    scenario = f"end to end, {consumers} consumer{'s' if consumers > 1 else ''}"
    results.add(scenario, system.name, rate(n, total_s), "msg/s")
    log(
        f"{system.name:<9} {scenario}: {total_s:.2f}s, {rate(n, total_s):,.0f} msg/s "
        f"(producer done after {sent_s:.2f}s)"
    )


def latency(system: System, db: Database, results: Results, seconds: float, per_s: float) -> None:
    total = int(seconds * per_s)
    db.reset(system.queue)
    with system.producer() as producer, Consumers(system, 1, record_latency=True) as group:
        group.start()
        group.wait_running()
        t0 = time.perf_counter()
        producer.send_paced(total, per_s)
        sent_s = time.perf_counter() - t0
        group.wait_handled(total, timeout=60)
        db.wait_empty(system.queue)
    samples = group.latencies[LATENCY_WARMUP:] if len(group.latencies) > 100 else group.latencies
    if len(samples) < 2:
        raise RuntimeError(f"{system.name}: only {len(samples)} latency samples")
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    p50, p99 = cuts[49], cuts[98]
    label = f"latency at {per_s:.0f} msg/s"
    results.add(f"{label}, p50", system.name, p50 * 1000, "ms")
    results.add(f"{label}, p99", system.name, p99 * 1000, "ms")
    log(
        f"{system.name:<9} {label}: {total} sent in {sent_s:.2f}s "
        f"({rate(total, sent_s):.0f}/s), p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, "
        f"max {max(samples) * 1000:.2f} ms"
    )


# -- report -----------------------------------------------------------------------------


def facts(db: Database, where: str, applied_pgmq: str) -> list[tuple[str, str]]:
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = os.cpu_count() or 0
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    version = db.setting("server_version")
    return [
        ("cores", f"{os.cpu_count()} (usable by this process: {affinity}), load avg {load}"),
        ("machine", f"{platform.machine()}, {platform.system()} {platform.release()}"),
        ("server", where),
        ("postgres", version),
        (
            "settings",
            f"synchronous_commit={db.setting('synchronous_commit')}, "
            f"fsync={db.setting('fsync')}, shared_buffers={db.setting('shared_buffers')}, "
            f"max_connections={db.setting('max_connections')}",
        ),
        ("pgmq SQL", applied_pgmq),
        (
            "clients",
            f"Python {platform.python_version()}, psycopg {metadata.version('psycopg')}, "
            f"pgmq (Python) {metadata.version('pgmq')}, pgcourier {metadata.version('pgcourier')}",
        ),
        (
            "payload",
            f"{json_size(order_payload(12345))} bytes JSON (throughput), "
            f"{json_size(timed_payload(12345))} bytes (latency)",
        ),
        (
            "pgcourier",
            f"1 Worker + Courier per consumer process, batch_size={BATCH}, "
            f"concurrency={BATCH}, LISTEN/NOTIFY, poll_interval=1s",
        ),
        (
            "pgmq",
            f"PGMQueue (sync, psycopg) per process, send_batch({BATCH}), read(qty={BATCH}) "
            f"+ delete_batch, {PGMQ_POLL_S * 1000:.0f} ms client-side sleep when empty",
        ),
    ]


def print_report(results: Results, machine: list[tuple[str, str]], rounds: int) -> None:
    print()
    width = max(len(k) for k, _ in machine)
    for key, value in machine:
        print(f"{key:<{width}}  {value}")
    print()
    name_w = max(len(s) for s in results.order)
    header = (
        f"{'scenario':<{name_w}}  {'system':<9}  {'result':>14}  "
        f"{'pgcourier/pgmq':>14}  {'(range)':<11}"
    )
    print(header.rstrip())
    print("-" * len(header))
    for scenario in results.order:
        unit = results.units[scenario]
        for system in ("pgmq", "pgcourier"):
            value = results.value(scenario, system)
            shown = "-" if value is None else _fmt(value, unit)
            ratio = spread = ""
            ratios = results.ratios(scenario)
            if system == "pgcourier" and ratios:
                ratio = f"{statistics.median(ratios):.2f}x"
                if len(ratios) > 1:
                    spread = f"({min(ratios):.2f}-{max(ratios):.2f})"
            label = scenario if system == "pgmq" else ""
            line = f"{label:<{name_w}}  {system:<9}  {shown:>14}  {ratio:>14}  {spread:<11}"
            print(line.rstrip())
    print()
    print("msg/s: higher is better; ms: lower is better.")
    print(
        f"Throughput results: median of {rounds} round(s); enqueue only is measured by the "
        f"prefill of each drain run ({2 * rounds} samples). pgcourier/pgmq: median (and range) "
        "of the ratios of runs made back to back."
    )


def _fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.2f} ms"
    return f"{value:,.0f} msg/s"


# -- main -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=None, help="messages per throughput run")
    parser.add_argument(
        "--quick", action="store_true", help="5,000 messages, 1 round, 3 s of latency"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="throughput rounds; medians are reported"
    )
    parser.add_argument("--rate", type=float, default=200.0, help="latency run: msg/s")
    parser.add_argument("--latency-seconds", type=float, default=None, help="latency run length")
    args = parser.parse_args(argv)
    if args.messages is None:
        args.messages = 5_000 if args.quick else 20_000
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.latency_seconds is None:
        args.latency_seconds = 3.0 if args.quick else 8.0
    if min(args.messages, args.rounds, args.rate, args.latency_seconds) <= 0:
        parser.error("--messages, --rounds, --rate and --latency-seconds must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    n = args.messages
    results = Results()
    with bench_database() as (url, where, applied):
        db = Database(url)
        try:
            create_queues(url)
            pgmq_sql = [a.split("/", 1)[1] for a in applied if a.startswith("pgmq/")]
            installed = f"{pgmq_sql[0]}, SQL-only install" if pgmq_sql else "already present"
            machine = facts(db, where, installed)
            systems = [
                System("pgmq", url, PGMQ_QUEUE, pgmq_consumer, PgmqProducer),
                System("pgcourier", url, PGC_QUEUE, pgcourier_consumer, PgcourierProducer),
            ]
            steps: list[tuple[str, Callable[[System], None]]] = [
                ("enqueue + drain, 1 consumer", lambda s: drain(s, db, results, n, 1)),
                ("enqueue + drain, 4 consumers", lambda s: drain(s, db, results, n, 4)),
                ("end to end, 1 consumer", lambda s: end_to_end(s, db, results, n, 1)),
                ("end to end, 4 consumers", lambda s: end_to_end(s, db, results, n, 4)),
            ]
            k = 0
            for r in range(args.rounds):
                for title, step in steps:
                    log(f"== round {r + 1}/{args.rounds}: {title}, {n:,} messages")
                    # Alternate which system goes first, so drift favours neither.
                    for system in systems if k % 2 == 0 else systems[::-1]:
                        step(system)
                    k += 1
            log(f"== latency, {args.rate:.0f} msg/s for {args.latency_seconds:.0f}s")
            for system in systems:
                latency(system, db, results, args.latency_seconds, args.rate)
        finally:
            db.close()
    print_report(results, machine, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
