"""Small helpers shared by the tests: waiting for a condition, reading a value."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pgcourier import Courier, queries
from pgcourier.naming import queue_table

ROOT = Path(__file__).resolve().parent.parent

# Where the tests' embedded servers keep their folders: in memory when the machine
# has room there. Each test clones a database (about 400 files) and drops it again;
# on ext4, creating files where many were just deleted made every CREATE DATABASE
# spend 0.5 s of CPU in the kernel's inode allocator (0.04 s in memory), a third of
# the suite's time. Nothing a test checks depends on the disk: a crash is a stopped
# postmaster, never a lost page cache. PGCOURIER_TEST_DATA=disk keeps them here.
_MEMORY = Path("/dev/shm")
_MEMORY_NEEDED = 2 * 1024**3


def server_folder(name: str) -> Path:
    """The data folder called `name` of an embedded server started by the tests."""
    if os.environ.get("PGCOURIER_TEST_DATA", "memory") != "disk" and _memory_has_room():
        # One set per checkout: two clones' tests must not share a server.
        checkout = hashlib.sha256(str(ROOT).encode()).hexdigest()[:10]
        return _MEMORY / f"pgcourier-test-{checkout}" / name
    return ROOT / name


def _memory_has_room() -> bool:
    try:
        return os.access(_MEMORY, os.W_OK) and shutil.disk_usage(_MEMORY).free >= _MEMORY_NEEDED
    except OSError:
        return False


async def wait_until(
    condition: Callable[[], Any], *, within: float = 10.0, interval: float = 0.01
) -> Any:
    """Waits for condition() (or the awaitable it returns) to be truthy; returns that
    value."""
    start = time.monotonic()
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() - start > within:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)


def wait_until_sync(
    condition: Callable[[], Any],
    *,
    within: float = 10.0,
    interval: float = 0.05,
    failing: Callable[[], str] | None = None,
) -> Any:
    """The blocking wait_until, for tests of processes: waits for condition() to be
    truthy and returns its value; failing() words the AssertionError."""
    start = time.monotonic()
    while not (result := condition()):
        if time.monotonic() - start > within:
            said = failing() if failing is not None else "condition not met"
            raise AssertionError(f"{said} within {within}s")
        time.sleep(interval)
    return result


async def scalar(courier: Courier, query: str, params: Any = None) -> Any:
    async with courier.pool.connection() as conn:
        cur = await conn.execute(query, params)
        row = await cur.fetchone()
    return row[0] if row else None


async def queue_length(courier: Courier, queue: str) -> int:
    return await scalar(courier, f"SELECT count(*) FROM pgmq.q_{queue}")


async def queue_empty(courier: Courier, queue: str) -> bool:
    return await queue_length(courier, queue) == 0


def skip_unless_logical_replication(url: str) -> None:
    """Skips (saying why) on a server that cannot carry links by logical replication:
    DATABASE_URL may name any server; the embedded one is always ready."""
    import psycopg
    import pytest

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version_num')::int, current_setting('wal_level')"
        ).fetchone()
    assert row is not None
    version, wal_level = row
    if version < 160000 or wal_level != "logical":
        pytest.skip(
            f"links by logical replication need PostgreSQL 16+ with wal_level=logical; "
            f"this server is {version} with wal_level={wal_level}"
        )


async def prepare_claim(conn: psycopg.AsyncConnection, name: str, queue: str) -> None:
    """PREPAREs message_claim.sql on conn as name(limit, vt_s, horizon_s, now): a test
    sets plan_cache_mode and EXECUTEs it, to see the plan a server may keep."""
    text = queries.query_text("message_claim")
    for i, param in enumerate(("limit", "vt_s", "horizon_s", "now"), 1):
        text = text.replace(f"%({param})s", f"${i}")
    await conn.execute(
        sql.SQL("PREPARE {}(integer, float8, float8, timestamptz) AS ").format(sql.Identifier(name))
        + sql.SQL(text).format(queue=queue_table(queue))
    )
