"""What a link between databases costs: a send within one database against the same
send to a queue of another database, carried by logical replication or by a relay.

    .venv/bin/python bench/links.py [--messages N] [--rounds R] [--rate MSG_PER_S]
                                    [--latency-seconds S] [--quick]

Not a test: it prints figures and each path's ratio to the send within one database.
The machine is shared and noisy, so the three paths run in the same run, on the same
server, round after round with the order rotated; the ratios are what to compare.

Server: DATABASE_URL's when set, otherwise the embedded Postgres in .pgdata-bench
(wal_level=logical). Three databases `pgcourier_linkbench_<pid>_<role>` are created and
migrated; at the end (and on any error or SIGTERM) the subscription, then the
replication slot, then the databases are dropped; a run killed outright leaves them
to the next run, which drops them first.

  * receiver (node lb_recv): holds the three queues, and the consumer's Worker;
  * in-database: the producer sends to `bench_local` in the receiver itself;
  * replication (node lb_repl): the producer sends to `bench_repl`, a remote queue; its
    outbox rows are published, and the receiver's subscription's apply worker inserts
    them into the receiver's outbox, whose trigger delivers each to the queue;
  * relay (node lb_relay): the producer sends to `bench_relay`; pgcourier's Relay
    (woken by the sender's NOTIFY) moves the rows into the receiver's outbox.

The links are kept as a deployment keeps them: one spawned process runs the links
keeper (pgcourier.keeper: pruning confirmed outbox rows, every second) for the three
databases and the relay (pgcourier.relay, its defaults) for its link, all through the
run. Scenarios, for each path, ~100-byte JSON payloads:

  * hop latency: one producer sends single messages at a steady rate (200/s), stamped
    with the send time; one consumer (a Worker in a spawned process, on the receiver)
    records send-to-handler-start;
  * throughput: the consumer already running, one producer sends the messages in
    batches of 100; timed from the first send to the last acknowledgement.

Before each run the sender's outbox is left empty by the link and vacuumed (with
ANALYZE), as a link's outbox usually is: whatever backlog a run builds, the planner
meets it with the statistics of an empty table. Then the receiving end alone is
measured: rows arriving in its outbox (the trigger's work) against rows inserted
into the queue directly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pgcourier_system
import psycopg
from cpu import CpuSampler
from harness import (
    BATCH,
    LATENCY_WARMUP,
    VT_S,
    Consumers,
    Link,
    Results,
    System,
    Target,
    batches_of,
    bench_server,
    create_database,
    drop_databases,
    json_size,
    log,
    machine_facts,
    order_payload,
    paced_async,
    queue_reset,
    queue_rows,
    rate,
    setting,
    sweep_stale_databases,
    timed_payload,
)
from psycopg import sql

from pgcourier import Courier, Message, Worker
from pgcourier import links as pglinks
from pgcourier.keeper import LinkKeeper
from pgcourier.migrations import migrate_url
from pgcourier.relay import Relay

PREFIX = "pgcourier_linkbench_"
RECEIVER = "lb_recv"
REFERENCE = "in-database"
# node name of each path's sending database, and the receiver's queue it sends to
SENDERS = {"in-database": None, "replication": "lb_repl", "relay": "lb_relay"}
QUEUES = {"in-database": "bench_local", "replication": "bench_repl", "relay": "bench_relay"}
TARGET_P50_MS = 2.0
TARGET_RATE = 10_000.0
KEEPER_INTERVAL_S = 1.0


@dataclass
class LinkPath:
    name: str
    sender_url: str
    receiver_url: str
    queue: str

    @property
    def linked(self) -> bool:
        return self.sender_url != self.receiver_url

    def system(self) -> System:
        sender = Target(self.sender_url, self.queue)

        def reset(target: Target) -> None:
            self.settle()
            queue_reset(target)

        return System(
            self.name,
            Target(self.receiver_url, self.queue),
            consumer,
            lambda _target: Producer(sender),
            reset=reset,
            pending=queue_rows,
        )

    def settle(self, timeout_s: float = 30) -> None:
        """Every run starts alike: the sender's outbox emptied of this link's rows (the
        keeper prunes what the receiver confirmed, the relay deletes what it carried),
        then the outboxes and the receiver's record of delivered rows vacuumed."""
        if not self.linked:
            return
        with psycopg.connect(self.sender_url, autocommit=True) as conn:
            deadline = time.monotonic() + timeout_s
            while True:
                row = conn.execute(
                    "SELECT count(*) FROM pgcourier.outbox WHERE forget_below IS NULL"
                ).fetchone()
                if not row or row[0] == 0:
                    break
                if time.monotonic() > deadline:
                    log(f"{self.name}: {row[0]} outbox rows still kept after {timeout_s:.0f}s")
                    break
                time.sleep(0.1)
            conn.execute("VACUUM ANALYZE pgcourier.outbox")
        with psycopg.connect(self.receiver_url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE pgcourier.outbox, pgcourier.link_received")


# -- the databases and the links ---------------------------------------------------------


@dataclass
class Databases:
    server_url: str
    names: dict[str, str]  # role -> database name
    urls: dict[str, str]  # role -> url
    skipped: dict[str, str]  # path -> why it cannot run here


@contextlib.contextmanager
def linked_databases(server_url: str) -> Iterator[Databases]:
    """The receiver and the two senders, migrated and linked; dropped at the end."""
    sweep_stale_databases(server_url, PREFIX)
    roles = ("recv", "repl", "relay")
    names = {role: f"{PREFIX}{os.getpid()}_{role}" for role in roles}
    dbs = Databases(server_url, names, {}, {})
    try:
        for role in roles:
            dbs.urls[role] = create_database(server_url, names[role])
        asyncio.run(_prepare(dbs))
        log(f"created, migrated and linked databases {', '.join(names.values())}")
        yield dbs
    finally:
        drop_databases(server_url, list(names.values()))
        log(f"dropped the subscription, the slot and databases {', '.join(names.values())}")


async def _prepare(dbs: Databases) -> None:
    nodes = {"recv": RECEIVER, "repl": SENDERS["replication"], "relay": SENDERS["relay"]}
    for role, url in dbs.urls.items():
        await migrate_url(url)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            node = nodes[role]
            assert node is not None  # the in-database path has no node of its own
            await pglinks.set_node_name(conn, node)
    async with Courier(dbs.urls["recv"]) as courier:
        for queue in QUEUES.values():
            await courier.queue_create(queue, visibility_timeout=VT_S)
    paths: tuple[tuple[pglinks.Mode, str], ...] = (("replication", "repl"), ("relay", "relay"))
    for path, role in paths:
        try:
            await pglinks.link(dbs.urls[role], dbs.urls["recv"], queues=[QUEUES[path]], mode=path)
        except pglinks.LinkError as exc:
            dbs.skipped[path] = str(exc)
            log(f"{path}: skipped ({exc})")


def paths(dbs: Databases) -> list[LinkPath]:
    found = [LinkPath(REFERENCE, dbs.urls["recv"], dbs.urls["recv"], QUEUES[REFERENCE])]
    for path, role in (("replication", "repl"), ("relay", "relay")):
        if path not in dbs.skipped:
            found.append(LinkPath(path, dbs.urls[role], dbs.urls["recv"], QUEUES[path]))
    return found


def exit_with_parent() -> None:
    """In a spawned process: exits at once if the benchmark is killed. Waiting for its
    events is no way to notice, as a killed parent may hold their lock forever; the
    databases are dropped by the next run (sweep_stale_databases)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def consumer(link: Link, idx: int) -> None:  # pragma: no cover - runs in a spawned process
    exit_with_parent()
    asyncio.run(_consume(link, idx))


async def _consume(link: Link, idx: int) -> None:
    """pgcourier_system's consumer (the same Worker settings), recording for each timed
    message (total seconds, sent -> queued at the receiver, queued -> handler): the
    message's enqueued_at is the start of the transaction that put it in the receiver's
    queue (the apply worker's, the relay's, or the producer's own)."""
    samples: list[tuple[float, float, float]] = []
    async with Courier(link.target.url) as courier:
        worker = Worker(courier, concurrency=2 * BATCH, batch_size=BATCH, poll_interval=1.0)

        async def handler(message: Message, ctx: Any) -> None:
            if link.record_latency:
                now, wall = time.monotonic(), time.time()
                queued = message.enqueued_at.timestamp()
                p = message.payload
                samples.append((now - p["t"], queued - p["w"], wall - queued))
            link.counts[idx] += 1

        worker.handle(link.target.queue, handler)
        link.ready[idx] = 1
        while not await asyncio.to_thread(link.go.wait, 0.2):
            if link.stop.is_set():
                return
        async with worker.running():
            link.running[idx] = 1
            # Until told to stop, or a loop of the worker ended (it failed: leaving
            # the block raises its error).
            while worker.status()[2] and not await asyncio.to_thread(link.stop.wait, 0.2):
                pass
    link.results.put((idx, samples))


def stamped_payload(i: int) -> dict[str, Any]:
    """timed_payload, with the wall-clock send time too (the server's clock is that)."""
    return {**timed_payload(i), "w": time.time()}


class Producer(pgcourier_system.Producer):
    """pgcourier_system's producer; paced sends also record how long each call took."""

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        self.send_s: list[float] = []

    async def _send_paced(self, total: int, rate: float, payload: Any) -> None:
        async for i in paced_async(total, rate):
            t0 = time.perf_counter()
            await self.courier.send(self.queue, payload(i))
            self.send_s.append(time.perf_counter() - t0)


def run_links(
    keep: list[str], relay: tuple[str, str] | None, ready: Any, stop: Any
) -> None:  # pragma: no cover - runs in a spawned process
    """The links process: the keeper for every database, and the relay for its link."""
    exit_with_parent()

    async def main() -> None:
        stopping = asyncio.Event()
        tasks = [asyncio.create_task(LinkKeeper(keep, interval=KEEPER_INTERVAL_S).run(stopping))]
        if relay is not None:
            tasks.append(asyncio.create_task(Relay(*relay).run(stopping)))
        ready.set()
        await asyncio.to_thread(stop.wait)
        stopping.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)

    asyncio.run(main())


@contextlib.contextmanager
def links_process(dbs: Databases) -> Iterator[BaseProcess]:
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    relay = None if "relay" in dbs.skipped else (dbs.urls["relay"], dbs.urls["recv"])
    proc = ctx.Process(
        target=run_links,
        args=(list(dbs.urls.values()), relay, ready, stop),
        name="links-keeper-and-relay",
        daemon=True,
    )
    proc.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the links process did not start")
        yield proc
    finally:
        stop.set()
        proc.join(timeout=40)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)


def replication_pids(dbs: Databases) -> dict[str, set[int]]:
    """The server's processes that carry replicated rows: the walsender decoding the
    sender's WAL, and the receiver's apply worker."""
    with psycopg.connect(dbs.server_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid, backend_type FROM pg_stat_activity WHERE datname = ANY(%s)"
            " AND (backend_type = 'walsender' OR backend_type LIKE 'logical replication%%')",
            [list(dbs.names.values())],
        ).fetchall()
    return {
        "walsender": {pid for pid, kind in rows if kind == "walsender"},
        "apply": {pid for pid, kind in rows if kind != "walsender"},
    }


def postmaster_pid(server_url: str) -> int | None:
    """The server's postmaster (the parent of a backend), when it runs on this machine."""
    with psycopg.connect(server_url) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    try:
        stat = Path(f"/proc/{row[0]}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


# -- scenarios --------------------------------------------------------------------------


@dataclass
class Context:
    dbs: Databases
    links_pid: int
    server_pid: int | None


def sampler(ctx: Context, group: Consumers) -> CpuSampler:
    """CPU by kind of process: the consumer, the links process, the replication link's
    walsender and apply worker, and this server's other processes."""
    groups = {**replication_pids(ctx.dbs), "links": {ctx.links_pid}}
    consumer_pids = {p.pid for p in group.procs if p.pid}
    return CpuSampler(consumer_pids, groups, server_pid=ctx.server_pid)


def add_cpu(
    results: Results, scenario: str, name: str, cpu: CpuSampler, n: int, seconds: float
) -> None:
    if not cpu.available:
        return
    spent = cpu.seconds()
    spent["bg"] = spent.pop("background", 0.0)
    for kind, used in spent.items():
        results.add_cpu(scenario, name, kind, used / n * 1e6)
    results.add_cpu(scenario, name, "cores", sum(spent.values()) / seconds)


def throughput(path: LinkPath, results: Results, n: int, ctx: Context) -> None:
    system = path.system()
    batches = batches_of([order_payload(i) for i in range(n)], BATCH)
    system.reset(system.target)
    with system.producer() as producer, Consumers(system, 1) as group:
        group.start()
        group.wait_running()
        with sampler(ctx, group) as cpu:
            t0 = time.perf_counter()
            producer.send_batches(batches)
            sent_s = time.perf_counter() - t0
            group.wait_handled(n, timeout=max(120, n / 200))
            system.wait_drained()
            total_s = time.perf_counter() - t0
    scenario = f"throughput, batches of {BATCH}"
    results.add(scenario, path.name, rate(n, total_s), "msg/s")
    add_cpu(results, f"throughput, {BATCH} a transaction", path.name, cpu, n, total_s)
    log(
        f"{path.name:<11} throughput: {n:,} in {total_s:.2f}s, {rate(n, total_s):,.0f} msg/s "
        f"(producer done after {sent_s:.2f}s)"
    )


def latency(
    path: LinkPath,
    results: Results,
    legs: Legs,
    seconds: float,
    per_s: float,
    ctx: Context,
) -> None:
    system = path.system()
    total = int(seconds * per_s)
    system.reset(system.target)
    with (
        system.producer() as producer,
        Consumers(system, 1, record_latency=True) as group,
    ):
        group.start()
        group.wait_running()
        with sampler(ctx, group) as cpu:
            t0 = time.perf_counter()
            assert isinstance(producer, Producer)  # links' own, which times each send
            producer.send_paced(total, per_s, stamped_payload)
            sent_s = time.perf_counter() - t0
            group.wait_handled(total, timeout=60)
            system.wait_drained()
            total_s = time.perf_counter() - t0
    add_cpu(results, f"{per_s:.0f} msg/s, 1 a transaction", path.name, cpu, total, total_s)
    found = group.latencies[LATENCY_WARMUP:] if len(group.latencies) > 100 else group.latencies
    if len(found) < 2:
        raise RuntimeError(f"{path.name}: only {len(found)} latency samples")
    totals = [s[0] for s in found]
    p50, p99 = _p50_p99(totals)
    label = f"hop latency at {per_s:.0f} msg/s"
    results.add(f"{label}, p50", path.name, p50 * 1000, "ms")
    results.add(f"{label}, p99", path.name, p99 * 1000, "ms")
    legs[path.name] = {
        "send call (insert, commit)": _p50_p99(producer.send_s[LATENCY_WARMUP:]),
        "sent -> queued at the receiver": _p50_p99([s[1] for s in found]),
        "queued -> handler": _p50_p99([s[2] for s in found]),
        "total": (p50, p99),
    }
    log(
        f"{path.name:<11} {label}: {total} sent in {sent_s:.2f}s "
        f"({rate(total, sent_s):.0f}/s), p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, "
        f"max {max(totals) * 1000:.2f} ms"
    )


Legs = dict[str, dict[str, tuple[float, float]]]


def _p50_p99(values: Sequence[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[98]


def receiving_probe(dbs: Databases, n: int = 10_000) -> list[tuple[str, float]]:
    """The receiving end's own work, without decoding, transport or a consumer: rows
    arriving in the receiver's outbox, 100 per transaction (its trigger delivers each to
    the queue, as for a replicated or relayed row), against the same rows inserted
    into the queue directly, as a send within the database does. Microseconds of
    statement-and-commit time per row, one connection; the rows are deleted after."""
    queue = QUEUES[REFERENCE]
    statements = [
        (
            "into the outbox, its trigger delivering",
            sql.SQL(
                "INSERT INTO pgcourier.outbox (id, origin, target, queue_name, message, headers)"
                " SELECT i, 'lb_probe', {}, {}, '{{\"n\": 1}}', '{{}}'"
                " FROM generate_series(%s::bigint, %s::bigint) i"
            ).format(sql.Literal(RECEIVER), sql.Literal(queue)),
        ),
        (
            "into the queue (a send within the database)",
            sql.SQL(
                "INSERT INTO pgmq.{} (vt, message, headers)"
                " SELECT clock_timestamp(), '{{\"n\": 1}}', '{{}}'"
                " FROM generate_series(%s::bigint, %s::bigint)"
            ).format(sql.Identifier(f"q_{queue}")),
        ),
    ]
    found = []
    with psycopg.connect(dbs.urls["recv"], autocommit=True) as conn:
        for what, statement in statements:
            t0 = time.perf_counter()
            for first in range(1, n + 1, BATCH):
                conn.execute(statement, [first, first + BATCH - 1])
            found.append((what, (time.perf_counter() - t0) / n * 1e6))
            conn.execute("DELETE FROM pgcourier.link_received WHERE origin = 'lb_probe'")
            queue_reset(Target(dbs.urls["recv"], queue))
    return found


# -- report -----------------------------------------------------------------------------


def facts(dbs: Databases, where: str) -> list[tuple[str, str]]:
    url = dbs.urls["recv"]
    found = [
        *machine_facts(url, where),
        ("wal_level", setting(url, "wal_level")),
        (
            "payload",
            f"{json_size(order_payload(12345))} bytes JSON (throughput), "
            f"{json_size(timed_payload(12345))} bytes (latency)",
        ),
        (
            "consumer",
            f"1 Worker in a spawned process on the receiving database, batch_size={BATCH}, "
            f"concurrency={2 * BATCH}, LISTEN/NOTIFY, poll_interval=1s",
        ),
        ("producer", "this process, one Courier on the sending database"),
        (
            "replication",
            "publication of pgcourier.outbox (inserts for the receiver), slot pgoutput, "
            f"subscription with copy_data=false, streaming={_sub_option(dbs, 'substream')}, "
            f"binary={_sub_option(dbs, 'subbinary')}, "
            f"synchronous_commit={_sub_option(dbs, 'subsynccommit')}",
        ),
        ("relay", "pgcourier.relay.Relay with its defaults (batch_size=500, poll_interval=1s)"),
        ("keeper", f"pgcourier.keeper.LinkKeeper every {KEEPER_INTERVAL_S:g}s, all databases"),
    ]
    return found + [(p, f"skipped: {why}") for p, why in dbs.skipped.items()]


def _sub_option(dbs: Databases, column: str) -> str:
    with psycopg.connect(dbs.urls["recv"]) as conn:
        row = conn.execute(
            sql.SQL("SELECT {}::text FROM pg_subscription WHERE subname LIKE 'pgcourier%%'").format(
                sql.Identifier(column)
            )
        ).fetchone()
    return str(row[0]) if row else "-"


def _target(scenario: str, name: str, value: float) -> str:
    if name == REFERENCE:
        return ""
    if scenario.endswith("p50"):
        return f"< {TARGET_P50_MS:g} ms: {'yes' if value < TARGET_P50_MS else 'NO'}"
    if scenario.startswith("throughput"):
        ok = value >= TARGET_RATE
        return f">= {TARGET_RATE:,.0f} msg/s: {'yes' if ok else 'NO'}"
    return ""


def print_report(
    results: Results, machine: list[tuple[str, str]], names: list[str], rounds: int, n: int
) -> None:
    print()
    width = max(len(k) for k, _ in machine)
    for key, value in machine:
        print(f"{key:<{width}}  {value}")
    print()
    name_w = max(len(s) for s in results.order)
    path_w = max(len(p) for p in names)
    header = (
        f"{'scenario':<{name_w}}  {'path':<{path_w}}  {'result':>14}  "
        f"{'vs in-database':>14}  {'(range)':<11}  target"
    )
    print(header)
    print("-" * len(header))
    for scenario in results.order:
        unit = results.units[scenario]
        for k, name in enumerate(names):
            figure = results.value(scenario, name)
            shown = "-" if figure is None else _fmt(figure, unit)
            ratio = spread = ""
            ratios = results.ratios(scenario, name, REFERENCE)
            if ratios:
                ratio = f"{statistics.median(ratios):.2f}x"
                if len(ratios) > 1 and name != REFERENCE:
                    spread = f"({min(ratios):.2f}-{max(ratios):.2f})"
            target = "" if figure is None else _target(scenario, name, figure)
            label = scenario if k == 0 else ""
            line = (
                f"{label:<{name_w}}  {name:<{path_w}}  {shown:>14}  {ratio:>14}  "
                f"{spread:<11}  {target}"
            )
            print(line.rstrip())
    print_cpu(results, names)
    print()
    print("msg/s: higher is better; ms: lower is better. 'vs in-database': the path's result")
    print(
        f"over the send within one database, median (and range) over the {rounds} round(s) of"
        f" {n:,} messages, each round running every path back to back; latency: one run each."
    )


def print_cpu(results: Results, names: list[str]) -> None:
    if not results.cpu:
        return
    print()
    print("CPU per message (us): server = Postgres's backends (the producer's, consumer's,")
    print("relay's and keeper's), walsender = the replication link's (decoding the WAL: all")
    print("of the server's), apply = the receiver's apply worker, bg = Postgres's background")
    print("processes (autovacuum, checkpointer, WAL writer), links = the keeper and relay")
    print("process, producer = this process, other = anything else on the machine (other")
    print("work shares it); cores = CPU used / wall time")
    kinds = ("server", "walsender", "apply", "bg", "consumers", "producer", "links", "other")
    scenarios = list(dict.fromkeys(scenario for scenario, _, _ in results.cpu))
    scenario_w = max(len(s) for s in scenarios)
    path_w = max(len(p) for p in names)
    header = "".join(f"{k:>10}" for k in (*kinds, "total"))
    print(f"{'scenario':<{scenario_w}}  {'path':<{path_w}}{header}{'cores':>7}")
    for scenario in scenarios:
        for k, name in enumerate(names):
            per_kind = {c: results.cpu_value(scenario, name, c) for c in (*kinds, "cores")}
            if per_kind["server"] is None:
                continue
            total = sum(per_kind[c] or 0 for c in kinds)
            cells = "".join(f"{per_kind[c] or 0:>10.1f}" for c in kinds)
            label = scenario if k == 0 else ""
            print(
                f"{label:<{scenario_w}}  {name:<{path_w}}{cells}{total:>10.1f}"
                f"{per_kind['cores'] or 0:>7.2f}"
            )


def print_legs(legs: Legs, per_s: float) -> None:
    names = list(legs)
    steps = list(next(iter(legs.values())))
    print()
    print(f"hop latency at {per_s:.0f} msg/s, step by step: p50 / p99 (ms)")
    step_w = max(len(s) for s in steps)
    print(f"{'step':<{step_w}}" + "".join(f"{n:>20}" for n in names))
    for step in steps:
        cells = "".join(
            f"{f'{legs[n][step][0] * 1000:.2f} / {legs[n][step][1] * 1000:.2f}':>20}" for n in names
        )
        print(f"{step:<{step_w}}{cells}")
    print("queued: the start of the transaction that put the message in the receiver's queue")
    print("(pgmq's enqueued_at: the apply worker's, the relay's, or the producer's own);")
    print("the send's wall-clock time and the server's clock are the same machine's.")


def print_probe(probe: list[tuple[str, float]]) -> None:
    print()
    print(f"the receiving end alone: rows in transactions of {BATCH}, one connection")
    what_w = max(len(w) for w, _ in probe)
    for what, us in probe:
        print(f"  {what:<{what_w}}  {us:7.1f} us a row")
    if len(probe) == 2 and probe[1][1] > 0:
        print(f"  ratio {probe[0][1] / probe[1][1]:.1f}x")


def _fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.2f} ms"
    return f"{value:,.0f} msg/s"


# -- main -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=None, help="messages per throughput run")
    parser.add_argument(
        "--quick", action="store_true", help="10,000 messages, 1 round, 3 s of latency"
    )
    parser.add_argument("--rounds", type=int, default=None, help="throughput rounds (medians)")
    parser.add_argument("--rate", type=float, default=200.0, help="latency run: msg/s")
    parser.add_argument("--latency-seconds", type=float, default=None, help="latency run length")
    args = parser.parse_args(argv)
    if args.messages is None:
        args.messages = 10_000 if args.quick else 50_000
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.latency_seconds is None:
        args.latency_seconds = 3.0 if args.quick else 8.0
    if min(args.messages, args.rounds, args.rate, args.latency_seconds) <= 0:
        parser.error("--messages, --rounds, --rate and --latency-seconds must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM cleans up as Ctrl-C does: what was created on the server is dropped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    n = args.messages
    results = Results()
    with bench_server() as (server_url, where), linked_databases(server_url) as dbs:
        found = paths(dbs)
        machine = facts(dbs, where)
        with links_process(dbs) as proc:
            assert proc.pid is not None
            ctx = Context(dbs, proc.pid, postmaster_pid(server_url))
            log(f"== hop latency, {args.rate:.0f} msg/s for {args.latency_seconds:g}s")
            legs: Legs = {}
            for path in found:
                latency(path, results, legs, args.latency_seconds, args.rate, ctx)
            for r in range(args.rounds):
                log(f"== round {r + 1}/{args.rounds}: throughput, {n:,} messages")
                # Rotate which path goes first, so drift favours none.
                for path in found[r % len(found) :] + found[: r % len(found)]:
                    throughput(path, results, n, ctx)
            log("== the receiving end alone")
            probe = receiving_probe(dbs)
    print_report(results, machine, [p.name for p in found], args.rounds, n)
    print_legs(legs, args.rate)
    print_probe(probe)
    return 0


if __name__ == "__main__":
    sys.exit(main())
