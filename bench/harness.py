"""What every benchmark shares: the bench database, consumer processes, results.

A *system* is one way of moving messages (pgcourier, the raw pgmq client, PGQueuer,
Procrastinate, RabbitMQ): a consumer function run in spawned processes, a producer
class run in the benchmark's process, and how to prepare, empty and inspect its
queue. Each lives in its own `<name>_system.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import platform
import socket
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgcourier.naming import queue_table

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / ".pgdata-bench"
# One database per run, so concurrent benchmark runs never share (or drop) one.
BENCH_DB = f"pgcourier_bench_{os.getpid()}"
BATCH = 100
VT_S = 30
POLL_S = 0.010  # client-side sleep of polling consumers when they find nothing
LATENCY_WARMUP = 20  # first messages of a latency run left out of the percentiles

START = time.monotonic()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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

    target: Target
    counts: Any  # messages handled, one slot per process
    ready: Any  # 1 once connected, one slot per process
    running: Any  # 1 once consuming, one slot per process
    go: Any
    stop: Any
    results: Any  # each process puts (idx, latencies) when it stops
    record_latency: bool


class Consumers:
    """N consumer processes, started and connected before anything is timed."""

    def __init__(self, system: System, n: int, *, record_latency: bool = False) -> None:
        ctx = mp.get_context("spawn")
        self.n = n
        self.link = Link(
            target=system.target,
            counts=ctx.Array("q", n, lock=False),
            ready=ctx.Array("b", n, lock=False),
            running=ctx.Array("b", n, lock=False),
            go=ctx.Event(),
            stop=ctx.Event(),
            results=ctx.Queue(),
            record_latency=record_latency,
        )
        # Seconds per message; bench/links.py records a tuple of its legs instead.
        self.latencies: list[Any] = []
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


# -- producers and systems ------------------------------------------------------


class Producer(Protocol):
    def send_batches(self, batches: Sequence[list[dict[str, Any]]]) -> None: ...

    def send_paced(self, total: int, rate: float, payload: Any) -> None: ...


class Unavailable(Exception):
    """Raised by a system's setup when it cannot run on this machine (it is skipped)."""


@dataclass(frozen=True)
class Target:
    """Where a system's messages go: the bench database, and RabbitMQ's URL if any."""

    url: str
    queue: str
    amqp_url: str | None = None


@dataclass
class System:
    name: str
    target: Target
    consumer: Callable[[Link, int], None]  # module-level: runs in spawned processes
    producer_class: Callable[[Target], Any]
    reset: Callable[[Target], None]  # empty the queue, vacuum: every run starts alike
    pending: Callable[[Target], int]  # messages not yet completed
    describe: str = ""
    # A slow system runs each throughput scenario on fewer messages, so that a full
    # run stays within minutes; its rate is still messages over seconds.
    max_messages: int | None = None

    def messages(self, n: int) -> int:
        return min(n, self.max_messages) if self.max_messages else n

    @contextlib.contextmanager
    def producer(self) -> Iterator[Producer]:
        producer = self.producer_class(self.target)
        try:
            yield producer
        finally:
            producer.close()

    def wait_drained(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while (left := self.pending(self.target)) > 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: {left} messages left after {timeout}s")
            time.sleep(0.002)


def paced(total: int, rate: float) -> Iterator[int]:
    """Yields 0..total-1 at `rate` per second (sleeping in between)."""
    t0 = time.monotonic()
    for i in range(total):
        wait = t0 + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        yield i


async def paced_async(total: int, rate: float) -> Any:
    t0 = time.monotonic()
    for i in range(total):
        wait = t0 + i / rate - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        yield i


# -- the database --------------------------------------------------------------------


def setting(url: str, name: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT current_setting(%s)", [name]).fetchone()
    return str(row[0]) if row else "?"


def table_rows(url: str, table: sql.Composable) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
    return int(row[0]) if row else 0


def queue_rows(target: Target) -> int:
    """Messages left in a pgmq queue table (pgcourier's and raw pgmq's systems)."""
    return table_rows(target.url, queue_table(target.queue))


def queue_reset(target: Target) -> None:
    table_reset(target.url, queue_table(target.queue))


def table_reset(url: str, table: sql.Composable) -> None:
    """Empties a table and vacuums it, so every run starts from the same state."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DELETE FROM {}").format(table))
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(table))


@contextlib.contextmanager
def bench_server() -> Iterator[tuple[str, str]]:
    """(the superuser's URL of the server, where it is): DATABASE_URL's server when set,
    otherwise the embedded Postgres in .pgdata-bench (stopped at the end)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        info = conninfo_to_dict(url)
        where = f"DATABASE_URL (host {info.get('host', 'default')}, port {info.get('port', 5432)})"
        yield url, where
        return
    from pgcourier.embedded import EmbeddedPostgres

    log(f"starting the embedded Postgres in {DATA_DIR.name}/")
    server = EmbeddedPostgres(DATA_DIR)
    try:
        yield server.url, f"embedded Postgres (pgserver), data in {DATA_DIR.name}/"
    finally:
        server.stop()


def admin_execute(url: str, statement: sql.Composed) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


def create_database(server_url: str, name: str) -> str:
    """A fresh database on the server (dropped first if a previous run left it)."""
    admin_execute(
        server_url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    )
    admin_execute(server_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_conninfo(server_url, dbname=name)


def drop_databases(server_url: str, names: Sequence[str], *, timeout_s: float = 30) -> None:
    """Drops databases that may be linked by logical replication: their subscriptions
    first (each in its own database, its slot left alone: it may be gone), then the
    replication slots on them, then the databases. A slot left behind would keep the
    server's WAL forever, and a database holding one cannot be dropped.

    Every step is tried for every database even when one fails; the first error is
    raised at the end."""
    errors: list[BaseException] = []
    with psycopg.connect(server_url, autocommit=True) as admin:
        existing = [
            n
            for n in names
            if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [n]).fetchone()
        ]
        for name in existing:
            try:
                with psycopg.connect(make_conninfo(server_url, dbname=name), autocommit=True) as c:
                    subscriptions = c.execute(
                        "SELECT subname FROM pg_subscription WHERE subdbid ="
                        " (SELECT oid FROM pg_database WHERE datname = current_database())"
                    ).fetchall()
                    for (sub,) in subscriptions:
                        ident = sql.Identifier(sub)
                        c.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(ident))
                        c.execute(
                            sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(ident)
                        )
                        c.execute(sql.SQL("DROP SUBSCRIPTION {}").format(ident))
            except psycopg.Error as exc:
                errors.append(exc)
        for name in existing:
            try:
                _drop_slots(admin, name, timeout_s)
            except (psycopg.Error, RuntimeError) as exc:
                errors.append(exc)
            try:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
            except psycopg.Error as exc:
                errors.append(exc)
    if errors:
        raise errors[0]


def _drop_slots(admin: psycopg.Connection, database: str, timeout_s: float) -> None:
    """Drops every replication slot of a database. A slot whose walsender has not yet
    noticed its subscription is gone is still active for a moment: its walsender is
    ended, and the drop tried again until timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        slots = admin.execute(
            "SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = %s",
            [database],
        ).fetchall()
        if not slots:
            return
        for slot, active_pid in slots:
            if active_pid is not None:
                admin.execute("SELECT pg_terminate_backend(%s)", [active_pid])
                continue
            with contextlib.suppress(psycopg.errors.ObjectInUse, psycopg.errors.UndefinedObject):
                admin.execute("SELECT pg_drop_replication_slot(%s)", [slot])
        if time.monotonic() > deadline:
            raise RuntimeError(f"replication slots of {database} still there after {timeout_s}s")
        time.sleep(0.05)


def sweep_stale_databases(server_url: str, prefix: str) -> list[str]:
    """Drops the databases `<prefix><pid>_...` of earlier runs whose process is gone
    (killed before it could clean up): their slots would hold the WAL forever."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", [prefix]
            ).fetchall()
        ]
    stale = []
    for name in names:
        pid = name[len(prefix) :].split("_", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            stale.append(name)
    if stale:
        drop_databases(server_url, stale)
        log(f"dropped {len(stale)} database(s) left by earlier runs: {', '.join(stale)}")
    return stale


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def bench_database(
    migrate: Callable[[str], Any] | None = None, name: str = BENCH_DB
) -> Iterator[tuple[str, str, list[str]]]:
    """(url of a fresh, migrated bench database, the server, migrations applied).

    migrate: an async function migrating a database URL (pgcourier's by default).
    """
    from pgcourier.migrations import migrate_url

    migrate = migrate or migrate_url
    with bench_server() as (url, where):
        bench_url = create_database(url, name)
        try:
            applied = asyncio.run(migrate(bench_url))
            log(f"created and migrated database {name}: {', '.join(applied)}")
            yield bench_url, where, applied
        finally:
            admin_execute(
                url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            log(f"dropped database {name}")


# -- results ------------------------------------------------------------------


@dataclass
class Results:
    # (scenario, system) -> samples; msg/s for throughput, seconds for latency
    samples: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    units: dict[str, str] = field(default_factory=dict)
    # (scenario, system, kind) -> samples of CPU microseconds per message (or cores)
    cpu: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)

    def add_cpu(self, scenario: str, system: str, kind: str, value: float) -> None:
        self.cpu.setdefault((scenario, system, kind), []).append(value)

    def cpu_value(self, scenario: str, system: str, kind: str) -> float | None:
        samples = self.cpu.get((scenario, system, kind))
        return statistics.median(samples) if samples else None

    def add(self, scenario: str, system: str, value: float, unit: str) -> None:
        if scenario not in self.units:
            self.order.append(scenario)
            self.units[scenario] = unit
        self.samples.setdefault((scenario, system), []).append(value)

    def value(self, scenario: str, system: str) -> float | None:
        samples = self.samples.get((scenario, system))
        return statistics.median(samples) if samples else None

    def ratios(self, scenario: str, system: str, reference: str = "pgcourier") -> list[float]:
        """system / reference of each pair of runs made in the same round."""
        mine = self.samples.get((scenario, system), [])
        ref = self.samples.get((scenario, reference), [])
        return [a / b for a, b in zip(mine, ref, strict=False) if b]


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


# -- helpers for consumer processes ---------------------------------------------


def wait_for_go(link: Link, idx: int) -> bool:
    """Marks the consumer connected and waits for the start; False if stopped first."""
    link.ready[idx] = 1
    while not link.go.wait(0.2):
        if link.stop.is_set():
            return False
    return True


def record(link: Link, idx: int, latencies: list[float], sent_at: float | None) -> None:
    """Counts one handled message, and its latency when the run records them."""
    if link.record_latency and sent_at is not None:
        latencies.append(time.monotonic() - sent_at)
    link.counts[idx] += 1


def machine_facts(url: str, where: str) -> list[tuple[str, str]]:
    """The lines every benchmark prints first: the machine, the server, its settings."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = os.cpu_count() or 0
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        ("cores", f"{os.cpu_count()} (usable by this process: {affinity}), load avg {load}"),
        ("machine", f"{platform.machine()}, {platform.system()} {platform.release()}"),
        ("server", where),
        ("postgres", setting(url, "server_version")),
        (
            "settings",
            f"synchronous_commit={setting(url, 'synchronous_commit')}, "
            f"fsync={setting(url, 'fsync')}, shared_buffers={setting(url, 'shared_buffers')}, "
            f"max_connections={setting(url, 'max_connections')}",
        ),
    ]
