"""One run of the suite, in order: shop up, load and faults together, drain, checks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from .clients import ClientStats, Mix, run_customers
from .faults import FaultStats, Schedule, inject
from .invariants import Check, check_all, query
from .postgres import RestartablePostgres
from .report import Outcome, render
from .shop import (
    DEFAULT_STEP_TIMEOUT_S,
    RunningShop,
    create_products,
    fresh_database,
    register_customers,
    running_shop,
)

log = logging.getLogger("chaos")

PLENTIFUL = [(1_000_000, 1999), (1_000_000, 2500), (1_000_000, 999), (1_000_000, 4321)]
PROGRESS_EVERY_S = 10.0


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


def _open_work(admin_url: str) -> tuple[int, int] | None:
    """(orders not final, messages ready or in flight); None while Postgres is away."""
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
            row = conn.execute(query("open_work")).fetchone()  # type: ignore[arg-type]
    except psycopg.OperationalError:
        return None
    assert row is not None
    return int(row[0]), int(row[1])


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
        work = await asyncio.to_thread(_open_work, shop.admin_url)
        log.info(
            "%4.0fs: %d accepted, %s in progress, %s messages waiting; %d kills, "
            "%d restarts, %d LISTEN drops, %d retries",
            time.monotonic() - started,
            len(clients.accepted),
            work[0] if work else "?",
            work[1] if work else "?",
            len(faults.kills),
            len(faults.restarts_s),
            faults.listen_drops,
            clients.retries,
        )


async def _drain(shop: RunningShop, within_s: float) -> float:
    """Waits for every order to be final and every queue empty; returns the seconds."""
    started = time.monotonic()
    last_said = started
    while time.monotonic() - started < within_s:
        work = await asyncio.to_thread(_open_work, shop.admin_url)
        if work == (0, 0):
            break
        if time.monotonic() - last_said >= 5:
            last_said = time.monotonic()
            log.info("draining: %s orders not final, %s messages waiting", *(work or ("?", "?")))
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
    schedule = Schedule.for_run(options.seconds)
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
        log.info("load and faults over; waiting for every order to be final")
        return await _drain(shop, options.drain_s)
    finally:
        for task in (supervisor, progress):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _outcome(admin_url: str) -> Outcome:
    with psycopg.connect(admin_url) as conn:
        row = conn.execute(query("figures")).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return Outcome(*(int(v) for v in row))


def run(pg: RestartablePostgres, options: Options) -> Result:
    with (
        fresh_database(pg.url, keep=options.keep_database) as url,
        running_shop(url, options.log_dir, step_timeout_s=options.step_timeout_s) as shop,
    ):
        log.info("shop up: %s", ", ".join(shop.supervisor.running))
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
        checks = check_all(url, initial, clients, postgres_restarts=len(faults.restarts_s))
        checks.append(
            Check("supervisor kept children up", len(supervision), 0, "; ".join(supervision))
        )
        table = render(
            seconds=options.seconds,
            clients_n=options.clients,
            schedule=Schedule.for_run(options.seconds),
            faults=faults,
            exits=shop.exits,
            clients=clients,
            outcome=_outcome(url),
            drained_s=drained_s,
            checks=checks,
        )
        result = Result(checks, table)
        if not result.ok and options.keep_database:
            log.info("database kept for inspection: %s", url)
        return result
