"""Links between two servers through their failures: the receiving server down while
the sender goes on, and the sending server crashing (restarted -m immediate). Every
message arrives exactly once, and the link catches up within seconds."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgcourier import Courier, links
from pgcourier.keeper import LinkKeeper
from pgcourier.migrations import migrate_url
from tests.chaos.postgres import RestartablePostgres
from tests.helpers import wait_until
from tests.links_fixtures import drop_slots, drop_subscriptions

QUEUE = "far_inbox"
pytestmark = pytest.mark.timeout(180)


@dataclass
class Pair:
    sender: str
    receiver: str


def _drop_database(url: str) -> None:
    """Its slots (its subscriptions went first), then the database."""
    name = str(psycopg.conninfo.conninfo_to_dict(url)["dbname"])
    server = make_conninfo(url, dbname="postgres")
    drop_slots(server, [name])
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _create(server_url: str, node: str) -> str:
    name = f"far_{node}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(server_url, dbname=name)
    asyncio.run(migrate_url(url))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO pgcourier.node (name) VALUES (%s)", [node])
    return url


@contextlib.contextmanager
def linked(sender_server: str, receiver_server: str) -> Iterator[Pair]:
    """A sender database on one server and a receiver on another, linked by logical
    replication; dropped afterwards (subscriptions, slots, databases)."""
    pair = Pair(_create(sender_server, "near"), _create(receiver_server, "far"))
    try:
        with psycopg.connect(pair.receiver, autocommit=True) as conn:
            conn.execute("SELECT pgcourier.queue_create(%s)", [QUEUE])
        asyncio.run(links.link(pair.sender, pair.receiver, queues=[QUEUE]))
        yield pair
    finally:
        for url in (pair.receiver, pair.sender):
            drop_subscriptions(url)
        for url in (pair.receiver, pair.sender):
            _drop_database(url)


@pytest.fixture
def to_second(server_url: str, second_server: RestartablePostgres) -> Iterator[Pair]:
    with linked(server_url, second_server.url) as pair:
        yield pair


@pytest.fixture
def from_second(server_url: str, second_server: RestartablePostgres) -> Iterator[Pair]:
    with linked(second_server.url, server_url) as pair:
        yield pair


async def _count(url: str) -> tuple[int, int]:
    """(messages in the receiver's queue, distinct payload numbers among them)."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            sql.SQL("SELECT count(*), count(DISTINCT message->>'n') FROM {}").format(
                sql.Identifier("pgmq", f"q_{QUEUE}")
            )
        )
        row = await cur.fetchone()
    assert row is not None
    return row[0], row[1]


async def _send(url: str, start: int, count: int) -> None:
    async with Courier(url) as courier:
        for first in range(start, start + count, 100):
            await courier.send_batch(
                QUEUE, [{"n": n} for n in range(first, min(first + 100, start + count))]
            )


def _pg_ctl(server: RestartablePostgres, *args: str) -> None:
    subprocess.run(server._command(*args), user=server.run_as, check=True, capture_output=True)


async def test_a_receiver_down_for_a_while_catches_up_with_everything_exactly_once(
    to_second: Pair, second_server: RestartablePostgres
) -> None:
    across = to_second
    await _send(across.sender, 0, 500)
    await wait_until(lambda: _count(across.receiver), within=30)
    _pg_ctl(second_server, "stop", "-m", "immediate", "-w")
    try:
        # The receiver is gone: the sender goes on sending; its outbox keeps all.
        await _send(across.sender, 500, 2000)
        async with await psycopg.AsyncConnection.connect(across.sender, autocommit=True) as conn:
            await links.prune(conn)
            [state] = [link for link in await links.links(conn) if link.direction == "out"]
        assert state.retained is not None and state.retained >= 2000
        assert state.state == "receiver disconnected"
    finally:
        # A stopped server's restart starts it with its earlier options.
        _pg_ctl(second_server, "restart", "-w", "-l", str(second_server.log_file))
    back = time.monotonic()
    await wait_until(lambda: _count_is(across.receiver, 2500), within=60, interval=0.1)
    caught_up_s = time.monotonic() - back
    assert await _count(across.receiver) == (2500, 2500)
    print(f"receiver back: 2,000 messages sent meanwhile arrived {caught_up_s:.1f}s later")


async def _count_is(url: str, n: int) -> bool:
    try:
        return (await _count(url))[0] >= n
    except psycopg.OperationalError:
        return False  # still starting


async def test_a_crashed_sender_is_caught_up_within_seconds_and_nothing_doubles(
    from_second: Pair, second_server: RestartablePostgres
) -> None:
    across = from_second
    stop = asyncio.Event()
    keeper = LinkKeeper([across.receiver], interval=0.2, stalled_s=1.0)
    keeping = asyncio.create_task(keeper.run(stop))
    try:
        await _send(across.sender, 0, 500)
        await second_server.restart()  # -m immediate: a crash, as far as anyone can tell
        restarted = time.monotonic()
        await _send(across.sender, 500, 500)
        await wait_until(lambda: _count_is(across.receiver, 1000), within=60, interval=0.1)
        caught_up_s = time.monotonic() - restarted
    finally:
        stop.set()
        await keeping
    assert await _count(across.receiver) == (1000, 1000)
    # Without the keeper's nudge Postgres's launcher may wait up to 180 s.
    assert caught_up_s < 30, caught_up_s
    print(f"sender crashed: caught up {caught_up_s:.1f}s after its restart, nudged {keeper.nudged}")
