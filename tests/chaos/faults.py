"""What the suite breaks, and when: worker SIGKILLs, Postgres crashes, dropped LISTENs;
with a database per service also the links: their apply workers terminated, and the
links keeper SIGKILLed.

Each fault runs on its own clock. The intervals are those of a long run (10 s, 2 min,
30 s, 20 s, 1 min), shrunk for a short one so that even a one-minute run crashes
Postgres once. After each Postgres restart the links are watched until they have
caught up (see watch_catch_up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from services.shared.topology_db import ShopDatabases

from .postgres import RestartablePostgres
from .shop import RunningShop

log = logging.getLogger("chaos")
SQL = Path(__file__).parent / "sql"

# How long the links are watched after a restart before they count as not caught up.
CATCH_UP_WATCH_S = 60.0
CATCH_UP_POLL_S = 0.2


@dataclass(frozen=True)
class Schedule:
    kill_every_s: float
    restart_every_s: float
    drop_listen_every_s: float
    # None: the topology has nothing of the kind (one database: no links, no keeper;
    # relays: no apply workers).
    terminate_apply_every_s: float | None = None
    kill_keeper_every_s: float | None = None

    @classmethod
    def for_run(
        cls, seconds: float, *, topology: str = "one", link_mode: str = "replication"
    ) -> Schedule:
        """The long-run intervals, shrunk so that each fault happens at least once (a
        restart at least once, in the middle of the load, so its effects are seen)."""
        links = topology == "databases"
        return cls(
            kill_every_s=min(10.0, seconds / 6),
            restart_every_s=min(120.0, seconds / 2),
            drop_listen_every_s=min(30.0, seconds / 4),
            terminate_apply_every_s=(
                min(20.0, seconds / 4) if links and link_mode == "replication" else None
            ),
            kill_keeper_every_s=min(60.0, seconds / 3) if links else None,
        )


@dataclass
class FaultStats:
    kills: list[tuple[float, str, int]] = field(default_factory=list)  # (at, instance, pid)
    restarts_s: list[float] = field(default_factory=list)  # how long each restart took
    listen_drops: int = 0  # times listeners were dropped
    listeners_terminated: int = 0  # backends terminated in all
    apply_terminations: int = 0  # times the apply workers were terminated
    apply_workers_terminated: int = 0  # apply workers terminated in all
    keeper_kills: list[tuple[float, str, int]] = field(default_factory=list)
    # Per restart: seconds from Postgres accepting connections again until every link
    # had caught up (CATCH_UP_WATCH_S when it had not by then), and the slowest link.
    catch_ups: list[tuple[float, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # a fault that could not be injected

    @property
    def longest_catch_up(self) -> tuple[float, str] | None:
        return max(self.catch_ups, default=None)


async def _every(interval_s: float | None, until: float, phase: float, action) -> None:
    """Runs action at phase*interval, then every interval, while before `until`."""
    if interval_s is None:
        return
    next_at = time.monotonic() + interval_s * phase
    while next_at < until:
        await asyncio.sleep(max(next_at - time.monotonic(), 0))
        await action()
        next_at += interval_s


# The supervisor gives up on a child that crashed 5 times in 60 s; the suite's own kills
# are spread so that they alone never make a crash loop.
KILL_SPREAD_S = 60.0


def kill_random_worker(shop: RunningShop, rng: random.Random, stats: FaultStats) -> None:
    """SIGKILLs a live worker, one of those killed least in the last minute."""
    alive = [(name, pid) for name in shop.workers if (pid := shop.pid(name)) is not None]
    if not alive:
        stats.errors.append("no live worker to kill")
        return
    recent = time.monotonic() - KILL_SPREAD_S
    killed = {name: 0 for name, _ in alive}
    for at, name, _ in stats.kills:
        if at >= recent and name in killed:
            killed[name] += 1
    fewest = min(killed.values())
    name, pid = rng.choice([(n, p) for n, p in alive if killed[n] == fewest])
    with contextlib.suppress(ProcessLookupError):  # it died on its own just now
        os.kill(pid, signal.SIGKILL)
        stats.kills.append((time.monotonic(), name, pid))
        log.info("killed %s (pid %s)", name, pid)


def kill_keeper(shop: RunningShop, stats: FaultStats) -> None:
    """SIGKILLs the links keeper: no pruning, no nudging (and no relaying, with relays)
    until the supervisor has started it again."""
    name = shop.keeper
    pid = shop.pid(name) if name else None
    if name is None or pid is None:
        stats.errors.append("the links keeper was not running (waiting for its restart)")
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
        stats.keeper_kills.append((time.monotonic(), name, pid))
        log.info("killed %s (pid %s)", name, pid)


def _each_database(shop: RunningShop, file: str, what: str, stats: FaultStats) -> int | None:
    """Runs sql/<file>.sql (returning a count) in every database; the total, or None
    when the server was away (the fault is skipped, and said so)."""
    total = 0
    for url in shop.databases.distinct_urls():
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                row = conn.execute((SQL / f"{file}.sql").read_text()).fetchone()  # type: ignore[arg-type]
        except psycopg.OperationalError as exc:  # the server is restarting: next time
            stats.errors.append(f"{what} skipped: {exc}".strip())
            return None
        total += int(row[0]) if row else 0
    return total


async def restart_postgres(shop: RunningShop, pg: RestartablePostgres, stats: FaultStats) -> None:
    try:
        took = await pg.restart()
    except RuntimeError as exc:
        stats.errors.append(str(exc))
        return
    back_at = time.monotonic()
    stats.restarts_s.append(took)
    log.info("postgres restarted with -m immediate (%.1fs)", took)
    if shop.databases.topology == "databases":
        seconds, slowest, first = await watch_catch_up(shop.databases, back_at)
        stats.catch_ups.append((seconds, slowest))
        log.info(
            "links caught up %.1f s after the restart (the last: %s; behind at first: %s)",
            seconds,
            slowest,
            first or "none",
        )


async def _links_out(url: str) -> list[tuple] | None:
    try:
        async with await psycopg.AsyncConnection.connect(
            url, autocommit=True, connect_timeout=5
        ) as conn:
            cur = await conn.execute((SQL / "links_out.sql").read_text())  # type: ignore[arg-type]
            return await cur.fetchall()
    except psycopg.OperationalError:
        return None


async def watch_catch_up(
    databases: ShopDatabases, back_at: float, *, within_s: float = CATCH_UP_WATCH_S
) -> tuple[float, str, str]:
    """Seconds from back_at (Postgres accepting connections again) until every link
    has caught up, which link was the last (within_s, and those behind, if one had not
    by then), and the links behind when first seen.

    Under load a link's outbox is never empty, so "lag above zero" is read as: a row
    sent before the crash is still retained (the oldest row, lag_s, is older than the
    time since the restart), or the link is not streaming (its subscription has no
    apply worker on the slot, so nothing sent now would arrive either). A link has
    caught up once its receiver has confirmed every row sent before the crash (the
    keeper then prunes them) while streaming. The server was down between the crash
    and back_at: no row was sent then.
    """
    caught: dict[str, float] = {}
    pending: dict[str, str] = {}
    first = None
    while True:
        # Taken before asking: a row younger than this was surely sent after back_at.
        elapsed = time.monotonic() - back_at
        found = await asyncio.gather(*(_links_out(u) for u in databases.distinct_urls()))
        for url, rows in zip(databases.distinct_urls(), found, strict=True):
            sender = next(s for s in databases.urls if databases.url(s) == url)
            for node, state, lag_s, retained in rows or []:
                link = f"{sender}->{node}"
                if link in caught:
                    continue
                if state in ("streaming", "relay") and (not retained or lag_s < elapsed):
                    caught[link] = elapsed
                    pending.pop(link, None)
                else:
                    pending[link] = f"{link} {state}, {retained} retained"
        if first is None and (caught or pending):
            first = "; ".join(sorted(pending.values()))
        if caught and not pending:
            slowest = max(caught, key=caught.__getitem__)
            return caught[slowest], slowest, first or ""
        if elapsed > within_s:
            behind = "; ".join(sorted(pending.values())) or "no link answered"
            return within_s, behind, first or ""
        await asyncio.sleep(CATCH_UP_POLL_S)


def drop_listeners(shop: RunningShop, stats: FaultStats) -> None:
    """Drops every LISTEN connection of every database."""
    terminated = _each_database(shop, "listeners_terminate", "LISTEN drop", stats)
    if terminated is None:
        return
    stats.listen_drops += 1
    stats.listeners_terminated += terminated
    log.info("terminated %s LISTEN connection(s)", terminated)


def terminate_apply_workers(shop: RunningShop, stats: FaultStats) -> None:
    """Terminates the apply worker of every link's subscription (pg_terminate_backend
    on pg_stat_subscription's pids), in each service's database."""
    terminated = _each_database(shop, "apply_workers_terminate", "apply-worker terminate", stats)
    if terminated is None:
        return
    stats.apply_terminations += 1
    stats.apply_workers_terminated += terminated
    log.info("terminated %s apply worker(s)", terminated)


async def inject(
    shop: RunningShop,
    pg: RestartablePostgres,
    schedule: Schedule,
    stats: FaultStats,
    *,
    seconds: float,
    seed: int,
) -> None:
    """Every fault on its clock for `seconds`; phases keep them from always coinciding."""
    rng = random.Random(seed)
    until = time.monotonic() + seconds

    async def kill() -> None:
        kill_random_worker(shop, rng, stats)

    async def restart() -> None:
        await restart_postgres(shop, pg, stats)

    async def drop() -> None:
        await asyncio.to_thread(drop_listeners, shop, stats)

    async def terminate_apply() -> None:
        await asyncio.to_thread(terminate_apply_workers, shop, stats)

    async def kill_links_keeper() -> None:
        kill_keeper(shop, stats)

    await asyncio.gather(
        _every(schedule.kill_every_s, until, 0.5, kill),
        _every(schedule.restart_every_s, until, 1.0, restart),
        _every(schedule.drop_listen_every_s, until, 0.7, drop),
        _every(schedule.terminate_apply_every_s, until, 0.3, terminate_apply),
        _every(schedule.kill_keeper_every_s, until, 0.85, kill_links_keeper),
    )
