"""The shop end to end, through HTTP: orders placed by concurrent clients, until confirmed.

    .venv/bin/python bench/shop.py [--topology both|databases|one] [--link-mode M]
                                   [--clients N] [--seconds S] [--replicas R]
                                   [--step-timeout S] [--drain-seconds S]
                                   [--transaction-per-message]

Not a test: it prints figures. The real service processes are started as runner.py
and tests/shop/test_e2e.py start them (services.topology.processes / process_env,
services.supervisor.Supervisor, free ports), each as its own database role, on
fresh databases migrated with shop_migrate and dropped at the end (DATABASE_URL's
server, or the embedded Postgres in .pgdata-bench):

  * --topology databases: a database per service, `pgcourier_shopbench_<pid>_<service>`,
    linked by logical replication (or relays, --link-mode relay), with the links
    keeper process, as runner.py starts the shop by default; dropped subscriptions
    first, then replication slots, then databases;
  * --topology one: one database for all, `pgcourier_shopbench_<pid>`;
  * --topology both (the default, what `make bench` runs): the two, one after the
    other in the same run (one database first), each reported, then confirmed
    orders/s side by side with the ratio databases / one.

As the admin it creates one product with plenty of stock, registers --clients
customers, then each client (one customer each) places one-line orders for that
product with card tok_visa back to back, each as soon as the previous POST returned
202, for --seconds. The saga of each order runs through the services' workers:
order.placed -> products reserves the stock -> orders asks payments to charge ->
payments captures -> orders confirms. After the placing stops, it waits (up to
--drain-seconds) for every order to be confirmed or cancelled.

Latency is measured in the database, with the admin connection: an order's first
`confirmed` event (orders.order_event.at, clock_timestamp() in the transaction that
confirms it) minus its created_at (now() of the transaction that placed it, which
commits just before the POST's 202). Both are the server's clock; neither the
client's HTTP round trips nor any polling are in it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import psycopg
from harness import (
    ROOT,
    bench_server,
    create_database,
    drop_databases,
    free_port,
    log,
    rate,
    setting,
    sweep_stale_databases,
)
from psycopg.conninfo import conninfo_to_dict, make_conninfo

sys.path.insert(0, str(ROOT))  # the services package lives at the repository root

from runner import kept_keys
from services.shared.database import new_role_passwords, shop_migrate
from services.shared.settings import SERVICES
from services.shared.topology_db import (
    LINK_MODES,
    TOPOLOGIES,
    ShopDatabases,
    link_pairs,
    shop_databases,
)
from services.supervisor import Supervisor
from services.topology import process_env, processes

PREFIX = "pgcourier_shopbench_"
SHOP_DB = f"{PREFIX}{os.getpid()}"
# Confirmed orders/s with a database per service, at least this share of one database's.
TARGET_RATIO = 0.8
ADMIN_EMAIL = "admin@shop.bench"
ADMIN_PASSWORD = "admin-password-1"
CUSTOMER_PASSWORD = "password-123"
STOCK = 100_000_000
PRICE_CENTS = 1500
# The service roles' passwords for this run (each process gets its own role's).
ROLE_PASSWORDS = new_role_passwords()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- database and services ----------------------------------------------------------


@contextlib.contextmanager
def shop_database(server_url: str, topology: str, link_mode: str) -> Iterator[ShopDatabases]:
    """Fresh databases of the shop in a topology, migrated with shop_migrate as runner.py
    migrates them; dropped at the end and on any error (subscriptions, then replication
    slots, then databases)."""
    admin_url = make_conninfo(server_url, dbname=SHOP_DB)
    databases = shop_databases(admin_url, topology=topology, link_mode=link_mode)
    names = [str(conninfo_to_dict(u)["dbname"]) for u in databases.distinct_urls()]
    try:
        if topology == "one":
            create_database(server_url, SHOP_DB)
        applied = asyncio.run(shop_migrate(databases, role_passwords=ROLE_PASSWORDS))
        log(f"created and migrated {', '.join(names)}: {len(applied)} steps")
        yield databases
    finally:
        drop_databases(server_url, names)
        log(f"dropped {', '.join(names)}")


@dataclass
class RunningShop:
    databases: ShopDatabases
    urls: dict[str, str]
    supervisor: Supervisor
    log_dir: Path

    @property
    def orders_url(self) -> str:
        """The orders service's database, as its owner: orders and their events."""
        return self.databases.url("orders")

    def database_names(self) -> list[str]:
        return [str(conninfo_to_dict(u)["dbname"]) for u in self.databases.distinct_urls()]


@contextlib.contextmanager
def running_shop(
    databases: ShopDatabases,
    replicas: int,
    step_timeout_s: float,
    *,
    transaction_per_batch: bool = True,
) -> Iterator[RunningShop]:
    ports = {s: free_port() for s in SERVICES}
    with tempfile.TemporaryDirectory(prefix="shop-bench-") as tmp:
        shop = RunningShop(
            databases,
            {s: f"http://127.0.0.1:{p}" for s, p in ports.items()},
            Supervisor(log_dir=Path(tmp) / "logs"),
            Path(tmp) / "logs",
        )
        keys = kept_keys(Path(tmp) / "keys")
        started = processes(replicas=replicas, topology=databases.topology)
        try:
            for process in started:
                env = process_env(
                    process,
                    databases,
                    **keys.settings(),
                    saga_step_timeout_s=step_timeout_s,
                    admin_email=ADMIN_EMAIL,
                    admin_password=ADMIN_PASSWORD,
                    role_passwords=ROLE_PASSWORDS,
                    ports=ports,
                    transaction_per_batch=transaction_per_batch,
                    # The bench measures throughput: its few customers place orders
                    # back to back, far past the per-customer cap on open orders (an
                    # abuse limit).
                    max_open_orders=1_000_000,
                )
                shop.supervisor.start(process, env)
            shop.supervisor.wait_healthy(shop.urls)
            log(f"services healthy: {', '.join(p.instance for p in started)}")
            yield shop
        finally:
            shop.supervisor.stop_all()
            warnings = _log_warnings(shop.log_dir)
            if warnings:
                log(f"service logs: {len(warnings)} warning/error lines, the last ones:")
                for line in warnings[-5:]:
                    print(f"    {line}", flush=True)


def _log_warnings(log_dir: Path) -> list[str]:
    found = []
    for path in sorted(log_dir.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if " WARNING " in line or " ERROR " in line or "Traceback" in line:
                found.append(f"{path.stem}: {line[:200]}")
    return found


def _expect(r: httpx.Response, status: int) -> dict:
    if r.status_code != status:
        raise RuntimeError(f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text[:300]}")
    return r.json()


def setup_shop(shop: RunningShop, customers: int) -> tuple[str, list[str]]:
    """(product id, one token per customer)."""
    with httpx.Client(timeout=30) as http:
        login = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        admin = _expect(http.post(f"{shop.urls['users']}/users/login", json=login), 200)["token"]
        product = {"name": "Bench thing", "category": "things", "price_cents": PRICE_CENTS}
        r = http.post(
            f"{shop.urls['products']}/products",
            headers=auth(admin),
            json={**product, "stock": STOCK},
        )
        product_id = _expect(r, 201)["product_id"]
        tokens = []
        for _ in range(customers):
            body = {"email": f"c-{uuid.uuid4().hex[:10]}@shop.bench", "password": CUSTOMER_PASSWORD}
            _expect(http.post(f"{shop.urls['users']}/users/register", json=body), 201)
            token = _expect(http.post(f"{shop.urls['users']}/users/login", json=body), 200)
            tokens.append(token["token"])
    # The orders service learns of products from product events.
    with psycopg.connect(shop.orders_url) as conn:
        deadline = time.monotonic() + 30
        while (
            conn.execute(
                "SELECT 1 FROM orders.product WHERE product_id = %s", [product_id]
            ).fetchone()
            is None
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the orders service never heard of the product")
            time.sleep(0.05)
    log(f"product {product_id} (stock {STOCK:,}) known to orders; {customers} customers")
    return product_id, tokens


def commit_ms(admin_url: str, n: int = 50) -> float:
    """Median round trip of a one-row INSERT committed on its own (a WAL flush each)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        # A scratch table in the bench database, dropped right after.
        conn.execute("CREATE TABLE bench_commit_probe (i int)")
        try:
            times = []
            for i in range(n):
                t0 = time.perf_counter()
                conn.execute("INSERT INTO bench_commit_probe VALUES (%s)", [i])
                times.append(time.perf_counter() - t0)
        finally:
            conn.execute("DROP TABLE bench_commit_probe")
    return statistics.median(times) * 1000


# -- where the CPU goes -------------------------------------------------------------------

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process so far, from /proc (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


CLIENT = "bench client (this process)"
WALSENDERS = "postgres walsenders"
APPLY = "postgres apply workers"


def server_counts(shop: RunningShop, conn: psycopg.Connection) -> tuple[int, int]:
    """(transactions committed in the shop's databases, WAL flushes of the server) so
    far, as the cumulative statistics have them (each process reports within a second;
    the server's flushes are the whole server's, the bench's own included)."""
    row = conn.execute(
        "SELECT (SELECT sum(xact_commit) FROM pg_stat_database WHERE datname = ANY(%s)),"
        " (SELECT wal_sync FROM pg_stat_wal)",
        [shop.database_names()],
    ).fetchone()
    assert row is not None
    return int(row[0] or 0), int(row[1] or 0)


def cpu_snapshot(shop: RunningShop, conn: psycopg.Connection) -> dict[str, dict[int, float]]:
    """CPU so far of every service process, this process, and the shop databases'
    server processes: backends, and apart the links' walsenders (each decoding the
    server's WAL for its slot) and subscriptions' apply workers."""
    found: dict[str, dict[int, float]] = {}
    for name, (_, popen) in shop.supervisor.running.items():
        found[name] = {popen.pid: cpu_seconds(popen.pid) or 0.0}
    found[CLIENT] = {os.getpid(): time.process_time()}
    rows = conn.execute(
        "SELECT pid, CASE WHEN backend_type = 'walsender' THEN %s"
        " WHEN backend_type LIKE 'logical replication%%' THEN %s"
        " ELSE 'postgres backends' END"
        " FROM pg_stat_activity WHERE datname = ANY(%s)",
        [WALSENDERS, APPLY, shop.database_names()],
    ).fetchall()
    kinds = ["postgres backends"]
    if shop.databases.topology == "databases":
        kinds += [WALSENDERS, APPLY]
    for kind in kinds:
        found[kind] = {pid: cpu_seconds(pid) or 0.0 for pid, k in rows if k == kind}
    return found


def cpu_used(
    before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]
) -> list[tuple[str, float]]:
    used = []
    for name, pids in after.items():
        earlier = before.get(name, {})
        used.append((name, sum(t - earlier.get(pid, 0.0) for pid, t in pids.items())))
    return used


# -- the load -----------------------------------------------------------------------


@dataclass
class Placing:
    seconds: float = 0.0
    post_s: list[float] = field(default_factory=list)  # POST /orders round trips (202s)
    order_ids: list[str] = field(default_factory=list)
    refused: dict[int, int] = field(default_factory=dict)  # status -> count of non-202s


def outbox_sent(shop: RunningShop) -> int:
    """Rows written to the outboxes so far: messages sent to other databases (and the
    keeper's few control rows). An outbox's ids are its own sequence's; rows arriving
    from other databases bring theirs."""
    if shop.databases.topology != "databases":
        return 0
    total = 0
    for url in shop.databases.distinct_urls():
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT coalesce(last_value, 0) FROM pgcourier.outbox_id_seq"
            ).fetchone()
            total += int(row[0]) if row else 0
    return total


def _order_counts(conn: psycopg.Connection) -> tuple[int, int, int]:
    # (orders, confirmed, cancelled) right now.
    row = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE status = 'confirmed'), "
        "count(*) FILTER (WHERE status = 'cancelled') FROM orders.\"order\""
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


async def place_orders(
    shop: RunningShop, tokens: list[str], product_id: str, seconds: float
) -> Placing:
    placing = Placing()
    body = {"lines": [{"product_id": product_id, "quantity": 1}], "card_token": "tok_visa"}
    url = f"{shop.urls['orders']}/orders"
    limits = httpx.Limits(max_connections=len(tokens), max_keepalive_connections=len(tokens))
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        t0 = time.monotonic()
        end = t0 + seconds

        async def client(token: str) -> None:
            headers = auth(token)
            while time.monotonic() < end:
                sent = time.monotonic()
                r = await http.post(url, headers=headers, json=body)
                if r.status_code == 202:
                    placing.post_s.append(time.monotonic() - sent)
                    placing.order_ids.append(r.json()["order_id"])
                else:
                    placing.refused[r.status_code] = placing.refused.get(r.status_code, 0) + 1

        async def progress() -> None:
            with psycopg.connect(shop.orders_url, autocommit=True) as conn:
                while time.monotonic() < end:
                    await asyncio.sleep(min(5.0, max(end - time.monotonic(), 0.01)))
                    # In a thread: the clients' event loop is not held up.
                    total, confirmed, cancelled = await asyncio.to_thread(_order_counts, conn)
                    log(
                        f"placing: {len(placing.order_ids):,} accepted, "
                        f"{confirmed:,} confirmed, {cancelled:,} cancelled, "
                        f"{total - confirmed - cancelled:,} in progress"
                    )

        watcher = asyncio.create_task(progress())
        await asyncio.gather(*(client(t) for t in tokens))
        placing.seconds = time.monotonic() - t0
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return placing


def wait_final(shop: RunningShop, within_s: float) -> tuple[float, int]:
    """Waits for every order to be confirmed or cancelled: (seconds waited, left unfinished)."""
    t0 = time.monotonic()
    with psycopg.connect(shop.orders_url, autocommit=True) as conn:
        last_log = t0
        while True:
            total, confirmed, cancelled = _order_counts(conn)
            left = total - confirmed - cancelled
            if left == 0 or time.monotonic() - t0 > within_s:
                return time.monotonic() - t0, left
            if time.monotonic() - last_log >= 5:
                last_log = time.monotonic()
                log(f"draining: {left:,} orders still in progress")
            shop.supervisor.check_alive()
            time.sleep(0.1)


@dataclass
class Outcome:
    created: list[datetime]
    confirmed: list[tuple[datetime, datetime]]  # (created_at, first confirmed event)
    cancelled: dict[str, int]  # reason -> count
    unfinished: int


def outcome(orders_url: str) -> Outcome:
    with psycopg.connect(orders_url) as conn:
        # Each order's creation, status, reason, and the time of its first 'confirmed'
        # event (the event rows carry the status the order moved to).
        rows = conn.execute(
            "SELECT o.created_at, o.status, o.reason, "
            "min(e.at) FILTER (WHERE e.status = 'confirmed') "
            'FROM orders."order" o LEFT JOIN orders.order_event e USING (order_id) '
            "GROUP BY o.order_id"
        ).fetchall()
    result = Outcome([], [], {}, 0)
    for created_at, status, reason, confirmed_at in rows:
        result.created.append(created_at)
        if status == "confirmed" and confirmed_at is not None:
            result.confirmed.append((created_at, confirmed_at))
        elif status == "cancelled":
            result.cancelled[reason] = result.cancelled.get(reason, 0) + 1
        else:
            result.unfinished += 1
    return result


# -- report -----------------------------------------------------------------------------


def _percentiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        v = values[0] if values else float("nan")
        return v, v, v
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[89], cuts[98]


@dataclass
class Run:
    """One topology's run: what was placed, confirmed and spent."""

    topology: str  # as shown: "one database", "a database per service (replication)"
    placing: Placing
    confirmed_in_window: int
    drained_s: float
    result: Outcome
    cpu: list[tuple[str, float]]
    commit_ms: float
    crossed: int = 0  # messages sent to another service's database (placing and drain)
    # While placing: transactions committed in the shop's databases, the server's WAL
    # flushes.
    commits: int = 0
    flushes: int = 0

    @property
    def latencies(self) -> list[float]:
        return [(c - p).total_seconds() for p, c in self.result.confirmed]

    @property
    def span_s(self) -> float:
        """From the first order placed to the last confirmed."""
        first = min(self.result.created) if self.result.created else None
        last = max((c for _, c in self.result.confirmed), default=None)
        return (last - first).total_seconds() if first and last else 0.0

    @property
    def confirmed_rate(self) -> float:
        return rate(len(self.result.confirmed), self.span_s)

    @property
    def cpu_per_order_ms(self) -> float:
        """CPU of the shop (its processes and the server's processes serving it, not
        the load generator) per order placed, while placing."""
        spent = sum(seconds for name, seconds in self.cpu if name != CLIENT)
        return spent / max(len(self.placing.order_ids), 1) * 1000


def topology_label(databases: ShopDatabases) -> str:
    if databases.topology == "one":
        return "one database"
    return f"a database per service ({len(link_pairs())} links, {databases.link_mode})"


def print_report(args: argparse.Namespace, where: str, url: str, run: Run) -> None:
    placing, result = run.placing, run.result
    print()
    print(f"== the shop, {run.topology}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    facts = [
        ("cores", f"{os.cpu_count()}, load avg {load}"),
        ("server", where),
        ("postgres", setting(url, "server_version")),
        (
            "settings",
            f"synchronous_commit={setting(url, 'synchronous_commit')}, "
            f"fsync={setting(url, 'fsync')}, shared_buffers={setting(url, 'shared_buffers')}, "
            f"wal_level={setting(url, 'wal_level')}",
        ),
        (
            "commit",
            f"{run.commit_ms:.2f} ms: one-row INSERT, autocommit, median of 50 (before the load)",
        ),
        ("python", platform.python_version()),
        (
            "shop",
            f"4 HTTP services + {args.replicas} worker process(es) each for products, orders, "
            f"payments; saga step timeout {args.step_timeout:g}s; {run.topology}",
        ),
        (
            "load",
            f"{args.clients} HTTP clients (one customer each, one httpx.AsyncClient), "
            f"one-line orders of 1 unit of one product, tok_visa, back to back "
            f"for {args.seconds:g}s",
        ),
    ]
    width = max(len(k) for k, _ in facts)
    for key, value in facts:
        print(f"{key:<{width}}  {value}")
    print()

    accepted = len(placing.order_ids)
    latencies = run.latencies
    p50, p90, p99 = _percentiles(latencies)
    post50, _, post99 = _percentiles(placing.post_s)
    cancelled = sum(result.cancelled.values())
    rows = [
        ("orders placed (POST 202)", f"{accepted:,}", f"{rate(accepted, placing.seconds):,.1f}/s"),
        (
            "  refused (not 202)",
            f"{sum(placing.refused.values()):,}",
            ", ".join(f"{k}: {v}" for k, v in sorted(placing.refused.items())) or "",
        ),
        (
            "confirmed while placing",
            f"{run.confirmed_in_window:,}",
            f"{rate(run.confirmed_in_window, placing.seconds):,.1f}/s",
        ),
        (
            "confirmed end to end",
            f"{len(latencies):,}",
            f"{run.confirmed_rate:,.1f}/s over {run.span_s:.1f}s, first placed to last confirmed",
        ),
        (
            "cancelled",
            f"{cancelled:,}",
            "; ".join(f"{k}: {v}" for k, v in result.cancelled.items()),
        ),
        ("unfinished after the drain", f"{result.unfinished:,}", f"waited {run.drained_s:.1f}s"),
        ("placed -> confirmed, p50", f"{p50 * 1000:,.0f} ms", ""),
        ("placed -> confirmed, p90", f"{p90 * 1000:,.0f} ms", ""),
        ("placed -> confirmed, p99", f"{p99 * 1000:,.0f} ms", ""),
        ("placed -> confirmed, max", f"{max(latencies, default=0) * 1000:,.0f} ms", ""),
        ("POST /orders, p50", f"{post50 * 1000:,.1f} ms", "client side, request to 202"),
        ("POST /orders, p99", f"{post99 * 1000:,.1f} ms", ""),
        (
            "commits per order placed",
            f"{run.commits / max(len(placing.order_ids), 1):.1f}",
            "while placing, in the shop's databases (claims included)",
        ),
        (
            "WAL flushes per order placed",
            f"{run.flushes / max(len(placing.order_ids), 1):.1f}",
            "while placing, the server's (group commit shares them)",
        ),
    ]
    name_w = max(len(r[0]) for r in rows)
    value_w = max(len(r[1]) for r in rows)
    header = f"{'measure':<{name_w}}  {'value':>{value_w}}  note"
    print(header)
    print("-" * max(len(header), 72))
    for name, value, note in rows:
        print(f"{name:<{name_w}}  {value:>{value_w}}  {note}".rstrip())
    print()
    print(f"CPU used while placing ({placing.seconds:.1f}s; {os.cpu_count()} cores in all):")
    for name, seconds in sorted(run.cpu, key=lambda x: -x[1]):
        print(f"  {name:<28} {seconds:6.1f}s  {seconds / placing.seconds:6.0%} of a core")
    links = {name: seconds for name, seconds in run.cpu if name in (WALSENDERS, APPLY)}
    if links:
        orders = max(len(placing.order_ids), 1)
        per_order = sum(links.values()) / orders * 1000
        print(
            f"  (the links' walsenders, one per slot, and apply workers, one per subscription:"
            f" {per_order:.1f} ms of CPU per order placed; {run.crossed / orders:.1f} messages"
            " crossed databases per order)"
        )
    print()
    print("placed -> confirmed: the order's first 'confirmed' event (orders.order_event.at) minus")
    print("its created_at, both from the server's clock, read in the orders service's database.")


def print_comparison(runs: list[Run]) -> None:
    """Confirmed orders/s of each topology side by side, and databases / one; and the
    same by CPU: on a shared machine each run gets what share of the cores it can, so
    orders per CPU-second of the shop is the steadier comparison."""
    one = next((r for r in runs if r.topology == "one database"), None)
    print()
    print("== the shop in both topologies (this run, one after the other)")
    label_w = max(len(r.topology) for r in runs)
    header = (
        f"{'topology':<{label_w}}  {'confirmed/s':>11}  {'while placing':>13}  "
        f"{'placed/s':>8}  {'p50 placed->confirmed':>21}  {'vs one':>6}  {'CPU/order':>9}  "
        f"{'vs one':>6}  target"
    )
    print(header)
    print("-" * len(header))
    for r in runs:
        ratio = by_cpu = target = ""
        if one is not None and one.confirmed_rate > 0 and r.cpu_per_order_ms > 0:
            x = r.confirmed_rate / one.confirmed_rate
            y = one.cpu_per_order_ms / r.cpu_per_order_ms
            ratio, by_cpu = f"{x:.2f}x", f"{y:.2f}x"
            if r is not one:
                target = (
                    f">= {TARGET_RATIO:g}x: {'yes' if x >= TARGET_RATIO else 'NO'} ({x:.3f};"
                    f" by CPU {y:.3f}: {'yes' if y >= TARGET_RATIO else 'NO'})"
                )
        p50 = _percentiles(r.latencies)[0]
        placed = rate(len(r.placing.order_ids), r.placing.seconds)
        window = rate(r.confirmed_in_window, r.placing.seconds)
        print(
            f"{r.topology:<{label_w}}  {r.confirmed_rate:>11,.1f}  {window:>13,.1f}  "
            f"{placed:>8,.1f}  {p50 * 1000:>18,.0f} ms  {ratio:>6}  "
            f"{r.cpu_per_order_ms:>6.1f} ms  {by_cpu:>6}  {target}".rstrip()
        )
    print()
    print("confirmed/s: orders confirmed end to end over first placed to last confirmed;")
    print("while placing: confirmed during the placing window over its length; CPU/order:")
    print("CPU of the services and of the server's processes serving them (the load generator")
    print("left out) while placing, per order placed; its 'vs one' is one's CPU/order over")
    print("this one's, the throughput ratio if both had the same CPU.")


# -- main -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--topology",
        choices=(*TOPOLOGIES, "both"),
        default="both",
        help="a database per service, one for all, or both one after the other (default)",
    )
    parser.add_argument(
        "--link-mode",
        choices=LINK_MODES,
        default="replication",
        help="how messages cross databases with --topology databases (or both)",
    )
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long orders are placed")
    parser.add_argument("--replicas", type=int, default=1, help="worker processes per service")
    parser.add_argument(
        "--step-timeout", type=float, default=15.0, help="SHOP_SAGA_STEP_TIMEOUT (s)"
    )
    parser.add_argument("--drain-seconds", type=float, default=120.0)
    parser.add_argument(
        "--transaction-per-message",
        action="store_true",
        help="workers handle each message in its own transaction"
        " (SHOP_TRANSACTION_PER_BATCH=0), as before the transaction per claim",
    )
    args = parser.parse_args(argv)
    if min(args.clients, args.seconds, args.replicas, args.step_timeout, args.drain_seconds) <= 0:
        parser.error("every number must be positive")
    args.topologies = ["one", "databases"] if args.topology == "both" else [args.topology]
    return args


def run_topology(args: argparse.Namespace, server_url: str, where: str, topology: str) -> Run:
    with (
        shop_database(server_url, topology, args.link_mode) as databases,
        running_shop(
            databases,
            args.replicas,
            args.step_timeout,
            transaction_per_batch=not args.transaction_per_message,
        ) as shop,
    ):
        label = topology_label(databases)
        log(f"== the shop, {label}")
        product_id, tokens = setup_shop(shop, args.clients)
        commit = commit_ms(shop.orders_url)
        log(f"a one-row commit takes {commit:.2f} ms (median of 50)")
        sent_before = outbox_sent(shop)
        with psycopg.connect(shop.orders_url, autocommit=True) as conn:
            _, confirmed_before, _ = _order_counts(conn)
            cpu_before = cpu_snapshot(shop, conn)
            counts_before = server_counts(shop, conn)
            log(f"== placing orders: {args.clients} clients for {args.seconds:g}s")
            placing = asyncio.run(place_orders(shop, tokens, product_id, args.seconds))
            cpu = cpu_used(cpu_before, cpu_snapshot(shop, conn))
            counts_after = server_counts(shop, conn)
            _, confirmed_after, _ = _order_counts(conn)
        log(
            f"placed {len(placing.order_ids):,} orders in {placing.seconds:.1f}s; "
            f"waiting for them to finish"
        )
        drained_s, left = wait_final(shop, args.drain_seconds)
        run = Run(
            label,
            placing,
            confirmed_after - confirmed_before,
            drained_s,
            outcome(shop.orders_url),
            cpu,
            commit,
            crossed=outbox_sent(shop) - sent_before,
            commits=counts_after[0] - counts_before[0],
            flushes=counts_after[1] - counts_before[1],
        )
        print_report(args, where, shop.orders_url, run)
        if left:
            log(f"{left} orders still unfinished after {args.drain_seconds:g}s")
    return run


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM cleans up as Ctrl-C does: what was created on the server is dropped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    runs = []
    with bench_server() as (server_url, where):
        sweep_stale_databases(server_url, PREFIX)
        for topology in args.topologies:
            runs.append(run_topology(args, server_url, where, topology))
    if len(runs) > 1:
        print_comparison(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
