"""One run of the suite, in order: shop up, load and faults together, drain, checks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from services.shared.topology_db import ShopDatabases

from .clients import ClientStats, Mix, run_customers
from .faults import FaultStats, Schedule, inject
from .invariants import Check, check_all, connections, query
from .postgres import RestartablePostgres
from .report import Outcome, render
from .shop import (
    DEFAULT_STEP_TIMEOUT_S,
    RunningShop,
    create_products,
    drop_leftovers,
    fresh_shop,
    register_customers,
    running_shop,
)

log = logging.getLogger("chaos")

PLENTIFUL = [(1_000_000, 1999), (1_000_000, 2500), (1_000_000, 999), (1_000_000, 4321)]
PROGRESS_EVERY_S = 10.0
# After a Postgres restart every link must stream again and deliver what was sent before
# the crash within this (the keeper nudges a subscription left without an apply worker
# after 5 s; Postgres's launcher alone may wait three minutes).
LINK_CATCH_UP_ALLOWED_S = 30


def scarce(seconds: float) -> list[tuple[int, int]]:
    """Small stocks that sell out early in the run, one of them only after a while."""
    return [(5, 1500), (20, 3333), (int(20 + seconds / 3), 777)]


@dataclass(frozen=True, kw_only=True)
class Options:
    seconds: float
    log_dir: Path
    clients: int = 16
    drain_s: float = 180.0
    seed: int = 1
    step_timeout_s: float = DEFAULT_STEP_TIMEOUT_S
    keep_database: bool = False
    # As runner.py's --topology and --link-mode.
    topology: str = "databases"
    link_mode: str = "replication"
    # Drop what earlier runs left on the server first (the suite's own servers only).
    drop_leftovers: bool = False

    @property
    def schedule(self) -> Schedule:
        return Schedule.for_run(self.seconds, topology=self.topology, link_mode=self.link_mode)


@dataclass
class Result:
    checks: list[Check]
    table: str
    failed: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.failed = [c.name for c in self.checks if not c.ok]

    @property
    def ok(self) -> bool:
        return not self.failed


def _open_work(databases: ShopDatabases) -> tuple[int, int, int] | None:
    """(orders not final, messages on any queue, delayed included, rows the links still
    keep), in every database; None while Postgres is away."""
    try:
        with connections(databases, connect_timeout=3) as conns:
            orders = int(conns.rows("orders", "open_orders")[0][0])
            messages = retained = 0
            for _, conn in conns.every():
                row = conn.execute(query("open_messages")).fetchone()  # type: ignore[arg-type]
                assert row is not None
                messages, retained = messages + int(row[0]), retained + int(row[1])
    except psycopg.OperationalError:
        return None
    return orders, messages, retained


async def _supervise(shop: RunningShop, failures: list[str]) -> None:
    while True:
        try:
            shop.supervise()
        except Exception as exc:  # the supervisor gave up on a child: the run is over
            failures.append(f"{type(exc).__name__}: {exc}")
            log.error("supervision stopped: %s", exc)
            return
        await asyncio.sleep(0.2)


async def _progress(shop: RunningShop, clients: ClientStats, faults: FaultStats) -> None:
    started = time.monotonic()
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)
        work = await asyncio.to_thread(_open_work, shop.databases)
        log.info(
            "%4.0fs: %d accepted, %s in progress, %s messages waiting, %s in link outboxes; "
            "%d kills, %d restarts, %d LISTEN drops, %d apply-worker drops, %d keeper kills, "
            "%d retries",
            time.monotonic() - started,
            len(clients.accepted),
            *(work or ("?", "?", "?")),
            len(faults.kills),
            len(faults.restarts_s),
            faults.listen_drops,
            faults.apply_terminations,
            len(faults.keeper_kills),
            clients.retries,
        )


async def _drain(shop: RunningShop, within_s: float) -> float:
    """Waits for every order to be final, every queue empty and every link's outbox
    pruned (its receiver confirmed all); returns the seconds."""
    started = time.monotonic()
    last_said = started
    while time.monotonic() - started < within_s:
        work = await asyncio.to_thread(_open_work, shop.databases)
        if work == (0, 0, 0):
            break
        if time.monotonic() - last_said >= 5:
            last_said = time.monotonic()
            log.info(
                "draining: %s orders not final, %s messages waiting, %s in link outboxes",
                *(work or ("?", "?", "?")),
            )
        await asyncio.sleep(0.5)
    return time.monotonic() - started


async def _load_and_faults(
    shop: RunningShop,
    pg: RestartablePostgres,
    mix: Mix,
    tokens: list[str],
    options: Options,
    clients: ClientStats,
    faults: FaultStats,
    supervision: list[str],
) -> float:
    schedule = options.schedule
    supervisor = asyncio.create_task(_supervise(shop, supervision))
    progress = asyncio.create_task(_progress(shop, clients, faults))
    try:
        await asyncio.gather(
            run_customers(
                shop.urls["orders"],
                tokens,
                mix,
                clients,
                seconds=options.seconds,
                seed=options.seed,
            ),
            inject(shop, pg, schedule, faults, seconds=options.seconds, seed=options.seed),
        )
        log.info("load and faults over; waiting for every order to be final and every queue empty")
        return await _drain(shop, options.drain_s)
    finally:
        for task in (supervisor, progress):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _outcome(databases: ShopDatabases) -> Outcome:
    """What became of the orders (orders' database; chaos.placed, loaded by the checks)
    and the money (payments')."""
    with connections(databases) as conns:
        orders = conns.rows("orders", "figures_orders")[0]
        money = conns.rows("payments", "figures_payments")[0]
    return Outcome(*(int(v) for v in (*orders, *money)))


def run(pg: RestartablePostgres, options: Options) -> Result:
    if options.drop_leftovers:
        for name in drop_leftovers(pg.url):
            log.info("dropped %s, left by an earlier run", name)
    with (
        fresh_shop(
            pg.url,
            topology=options.topology,
            link_mode=options.link_mode,
            keep=options.keep_database,
        ) as databases,
        running_shop(databases, options.log_dir, step_timeout_s=options.step_timeout_s) as shop,
    ):
        log.info(
            "shop up (%s): %s",
            "one database"
            if databases.topology == "one"
            else f"a database per service, linked by {databases.link_mode}",
            ", ".join(shop.supervisor.running),
        )
        plentiful, few = PLENTIFUL, scarce(options.seconds)
        ids = create_products(shop, plentiful + few)
        initial = dict(zip(ids, [stock for stock, _ in plentiful + few], strict=True))
        mix = Mix(plentiful=ids[: len(plentiful)], scarce=ids[len(plentiful) :])
        tokens = [token for _, token in register_customers(shop, options.clients)]
        clients, faults, supervision = ClientStats(), FaultStats(), []
        log.info("placing orders with %d clients for %.0f s", options.clients, options.seconds)
        drained_s = asyncio.run(
            _load_and_faults(shop, pg, mix, tokens, options, clients, faults, supervision)
        )
        checks = check_all(databases, initial, clients, postgres_restarts=len(faults.restarts_s))
        checks.append(
            Check("supervisor kept children up", len(supervision), 0, "; ".join(supervision))
        )
        if databases.topology == "databases":
            checks.append(catch_up_check(faults))
        table = render(
            seconds=options.seconds,
            clients_n=options.clients,
            databases=databases,
            schedule=options.schedule,
            faults=faults,
            exits=shop.exits,
            clients=clients,
            outcome=_outcome(databases),
            drained_s=drained_s,
            checks=checks,
        )
        result = Result(checks, table)
        if options.keep_database:
            log.info("databases kept for inspection: %s", ", ".join(databases.distinct_urls()))
        return result


def catch_up_check(faults: FaultStats) -> Check:
    """Every link caught up within LINK_CATCH_UP_ALLOWED_S of each Postgres restart."""
    longest = faults.longest_catch_up
    if longest is None:
        return Check("link catch-up (s)", 0, LINK_CATCH_UP_ALLOWED_S, "")
    seconds, slowest = longest
    return Check(
        "link catch-up (s)",
        math.ceil(seconds),
        LINK_CATCH_UP_ALLOWED_S,
        f"longest {seconds:.1f} s ({slowest})",
    )
