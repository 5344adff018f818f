"""What the suite breaks, and when: worker SIGKILLs, Postgres crashes, dropped LISTENs.

Each fault runs on its own clock. The intervals are those of a long run (10 s, 2 min,
30 s), shrunk for a short one so that even a one-minute run crashes Postgres once.
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

from .postgres import RestartablePostgres
from .shop import RunningShop

log = logging.getLogger("chaos")
SQL = Path(__file__).parent / "sql"


@dataclass(frozen=True)
class Schedule:
    kill_every_s: float
    restart_every_s: float
    drop_listen_every_s: float

    @classmethod
    def for_run(cls, seconds: float) -> Schedule:
        """The long-run intervals, shrunk so that each fault happens at least once (a
        restart at least once, in the middle of the load, so its effects are seen)."""
        return cls(
            kill_every_s=min(10.0, seconds / 6),
            restart_every_s=min(120.0, seconds / 2),
            drop_listen_every_s=min(30.0, seconds / 4),
        )


@dataclass
class FaultStats:
    kills: list[tuple[float, str, int]] = field(default_factory=list)  # (at, instance, pid)
    restarts_s: list[float] = field(default_factory=list)  # how long each restart took
    listen_drops: int = 0  # times listeners were dropped
    listeners_terminated: int = 0  # backends terminated in all
    errors: list[str] = field(default_factory=list)  # a fault that could not be injected


async def _every(interval_s: float, until: float, phase: float, action) -> None:
    """Runs action at phase*interval, then every interval, while before `until`."""
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


async def restart_postgres(pg: RestartablePostgres, stats: FaultStats) -> None:
    try:
        took = await pg.restart()
    except RuntimeError as exc:
        stats.errors.append(str(exc))
        return
    stats.restarts_s.append(took)
    log.info("postgres restarted with -m immediate (%.1fs)", took)


def drop_listeners(admin_url: str, stats: FaultStats) -> None:
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute((SQL / "listeners_terminate.sql").read_text()).fetchone()  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:  # the database is restarting: next time
        stats.errors.append(f"LISTEN drop skipped: {exc}".strip())
        return
    stats.listen_drops += 1
    stats.listeners_terminated += int(row[0]) if row else 0
    log.info("terminated %s LISTEN connection(s)", row[0] if row else 0)


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
        await restart_postgres(pg, stats)

    async def drop() -> None:
        await asyncio.to_thread(drop_listeners, shop.admin_url, stats)

    await asyncio.gather(
        _every(schedule.kill_every_s, until, 0.5, kill),
        _every(schedule.restart_every_s, until, 1.0, restart),
        _every(schedule.drop_listen_every_s, until, 0.7, drop),
    )
