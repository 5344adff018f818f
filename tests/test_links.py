"""Links: queues of another database, reached through pgcourier.outbox by logical
replication or a relay. Every test has two databases of the test server, a sender
and a receiver, each a named node (tests/links_fixtures.py cleans up their
subscriptions and replication slots whatever happens)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgcourier import (
    Context,
    Courier,
    DatabaseError,
    Message,
    QueueNotFoundError,
    Worker,
    cli,
    links,
)
from pgcourier.keeper import LinkKeeper
from pgcourier.links import LinkError
from pgcourier.relay import Relay
from tests.helpers import wait_until
from tests.links_fixtures import (
    Node,
    disable_subscription,
    link_jobs,
    link_slot,
    new_node_name,
    nudge_at,
    rows_at,
    scalar_at,
    two_nodes,
)


@pytest.fixture
async def nodes(server_url: str, template_url: str) -> AsyncIterator[tuple[Node, Node]]:
    async with two_nodes(server_url, template_url) as pair:
        yield pair


def _count_jobs(receiver: Node, n: int) -> Awaitable[object]:
    """Whether the receiver's queue holds n messages."""
    return scalar_at(receiver.url, "SELECT count(*) = %s FROM pgmq.q_jobs", [n])


async def _payloads(receiver: Node) -> list[int]:
    rows = await rows_at(receiver.url, "SELECT (message->>'n')::int FROM pgmq.q_jobs ORDER BY 1")
    return [row[0] for row in rows]


APPLY_WORKER = (
    "SELECT pid FROM pg_stat_subscription WHERE subname = %s AND relid IS NULL AND pid IS NOT NULL"
)


# pg_subscription is the cluster's: other tests' subscriptions are in it too.
SUBSCRIPTIONS_HERE = (
    "SELECT count(*) FROM pg_subscription"
    " WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
LISTENING = (
    "SELECT count(*) > 0 FROM pg_stat_activity"
    " WHERE datname = %s AND query = 'LISTEN pgcourier_outbox'"
)


async def test_replication_delivers_sends_batches_and_publishes_in_order_stamped_with_origin(
    nodes: tuple[Node, Node],
) -> None:
    sender, receiver = nodes
    await link_jobs(sender, receiver)
    got: list[tuple[object, str | None]] = []

    async def handle(message: Message, ctx: Context) -> None:
        got.append((message.payload, message.sender))

    async with Courier(sender.url) as out, Courier(receiver.url) as into:
        await out.subscribe("order.*", "jobs")
        await out.send("jobs", {"n": 1})
        async with await psycopg.AsyncConnection.connect(sender.url) as conn:
            # The conn's transaction, rolled back: never delivered.
            await out.send("jobs", {"n": "rolled back"}, conn=conn)
            await conn.rollback()
        await out.send_batch("jobs", [{"n": 2}, {"n": 3}])
        assert await out.publish("order.placed", {"n": 4}) == ["jobs"]
        await out.send("jobs", {"n": 5})
        worker = Worker(into, concurrency=1, poll_interval=0.05)
        worker.handle("jobs", handle)
        async with worker.running():
            await wait_until(lambda: len(got) >= 5)
        role = await scalar_at(sender.url, "SELECT current_user")
    assert [payload for payload, _ in got] == [{"n": n} for n in range(1, 6)]
    assert {stamp for _, stamp in got} == {f"{role}@{sender.name}"}


@dataclass(frozen=True)
class Role:
    name: str
    url: str


def _as(role: Role, statement: Any, params: object = None) -> None:
    with psycopg.connect(role.url, autocommit=True) as conn:
        conn.execute(statement, params)


@pytest.fixture
def roles(nodes: tuple[Node, Node], server_url: str) -> Iterator[dict[str, Role]]:
    """Login roles of the sending database: `granted` may send to jobs, `other` to
    another remote queue only, `outsider` to none."""
    sender = nodes[0]
    suffix = uuid.uuid4().hex[:8]
    made: dict[str, Role] = {}
    with psycopg.connect(server_url, autocommit=True) as conn:
        for kind in ("granted", "other", "outsider"):
            name, password = f"{kind}_{suffix}", secrets.token_urlsafe(16)
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(password)
                )
            )
            made[kind] = Role(name, make_conninfo(sender.url, user=name, password=password))
    yield made
    with psycopg.connect(server_url, autocommit=True) as conn:
        for role in made.values():
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                [role.name],
            )
    with psycopg.connect(sender.url, autocommit=True) as conn:
        for role in made.values():
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role.name)))
    with psycopg.connect(server_url, autocommit=True) as conn:
        for role in made.values():
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role.name)))


async def test_only_a_role_granted_a_remote_queue_sends_to_it_and_cannot_forge_its_stamp(
    nodes: tuple[Node, Node], roles: dict[str, Role]
) -> None:
    sender, receiver = nodes
    await link_jobs(sender, receiver, queues=("jobs", "audit"))
    async with await psycopg.AsyncConnection.connect(sender.url, autocommit=True) as owner:
        await owner.execute("SELECT pgcourier.grant_send('jobs', %s)", [roles["granted"].name])
        await owner.execute("SELECT pgcourier.grant_send('audit', %s)", [roles["other"].name])
    async with Courier(roles["granted"].url) as as_granted:
        assert len(await as_granted.send_batch("jobs", [{"n": 1}, {"n": 2}])) == 2
    for kind in ("other", "outsider"):
        async with Courier(roles[kind].url) as as_them:
            with pytest.raises(DatabaseError) as raised:
                await as_them.send("jobs", {"n": kind})
            assert isinstance(raised.value.__cause__, psycopg.errors.InsufficientPrivilege)
    for column, value in (("sender", "someone"), ("origin", "n_forged"), ("target", receiver.name)):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            await asyncio.to_thread(
                _as,
                roles["granted"],
                sql.SQL(
                    "INSERT INTO pgcourier.outbox (queue_name, message, {})"
                    " VALUES ('jobs', '{{}}', %s)"
                ).format(sql.Identifier(column)),
                [value],
            )
    got: list[tuple[object, str | None]] = []

    async def handle(message: Message, ctx: Context) -> None:
        got.append((message.payload, message.sender))

    async with Courier(receiver.url) as into:
        worker = Worker(into, concurrency=1, poll_interval=0.05)
        worker.handle("jobs", handle)
        async with worker.running():
            await wait_until(lambda: len(got) >= 2)
    stamp = f"{roles['granted'].name}@{sender.name}"
    assert got == [({"n": 1}, stamp), ({"n": 2}, stamp)]
    assert await scalar_at(receiver.url, "SELECT count(*) FROM pgmq.q_jobs") == 0


async def test_an_undeliverable_row_becomes_a_dead_letter_and_the_stream_goes_on(
    nodes: tuple[Node, Node],
) -> None:
    sender, receiver = nodes
    await link_jobs(sender, receiver)
    async with await psycopg.AsyncConnection.connect(sender.url, autocommit=True) as owner:
        # A queue the sender believes the receiver has, and it has not.
        await owner.execute("SELECT pgcourier.remote_queue_declare('ghost', %s)", [receiver.name])
        await owner.execute(
            "INSERT INTO pgcourier.outbox (queue_name, message) VALUES ('ghost', '{\"n\": 0}')"
        )
    async with Courier(sender.url) as out:
        await out.send("jobs", {"n": 1})
    await wait_until(lambda: _count_jobs(receiver, 1))
    dead = await rows_at(
        receiver.url,
        "SELECT queue_name, message, sender, errors -> -1 ->> 'error' FROM pgcourier.dead_letter",
    )
    role = await scalar_at(sender.url, "SELECT current_user")
    assert len(dead) == 1
    queue, message, stamp, error = dead[0]
    assert (queue, message, stamp) == ("ghost", {"n": 0}, f"{role}@{sender.name}")
    assert error.startswith("undeliverable") and "ghost" in error


async def test_rows_delivered_twice_arrive_once_and_the_receiver_forgets_pruned_ids(
    nodes: tuple[Node, Node],
) -> None:
    sender, receiver = nodes
    await link_jobs(sender, receiver)
    # More than link_prune's step (1,000 ids) between two "forget below" rows.
    n = 1_100
    async with Courier(sender.url) as out:
        ids = await out.send_batch("jobs", [{"n": i} for i in range(n)])
    await wait_until(lambda: _count_jobs(receiver, n))
    received = "SELECT count(*) FROM pgcourier.link_received"
    assert await scalar_at(receiver.url, received) == n
    async with (
        await psycopg.AsyncConnection.connect(sender.url, autocommit=True) as from_conn,
        await psycopg.AsyncConnection.connect(receiver.url, autocommit=True) as to_conn,
    ):
        rows = await links.fetch_outbox(from_conn, receiver.name, limit=n)
        assert [row[0] for row in rows] == ids
        await links.deliver_rows(to_conn, rows)
        await links.deliver_rows(to_conn, rows[n // 2 :])
        assert await scalar_at(receiver.url, "SELECT count(*) FROM pgmq.q_jobs") == n

        # The receiver forgets the ids of transactions over when the "forget below" row
        # was made. A transaction running then anywhere on the server (another test's,
        # in another database) holds the snapshot's xmin back and the ids after it are
        # kept until a later row, by design: wait until none older than ours runs.
        ours = await scalar_at(
            receiver.url, "SELECT max(xid::text::bigint) FROM pgcourier.link_received"
        )
        xmin = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"

        async def older_ones_over() -> bool:
            return await scalar_at(sender.url, xmin) > ours

        await wait_until(older_ones_over, within=60)

        async def forgotten() -> bool:
            await links.prune(from_conn)
            return await scalar_at(receiver.url, received) == 0

        await wait_until(forgotten)
        assert await scalar_at(sender.url, "SELECT forgotten_below FROM pgcourier.link") > ids[-1]
    assert await scalar_at(receiver.url, "SELECT count(*) FROM pgcourier.outbox") == 0
    assert await scalar_at(receiver.url, "SELECT count(*) FROM pgmq.q_jobs") == n


@dataclass
class _Running:
    running: psycopg.AsyncConnection  # its transaction holds one outbox row, uncommitted
    keeper: psycopg.AsyncConnection  # autocommit, on the sender
    xid: str  # the running transaction's


@contextlib.asynccontextmanager
async def _batch_then_one_row_running(sender: Node, receiver: Node) -> AsyncIterator[_Running]:
    """Links the two, delivers a batch of 1,100, leaves one more outbox row
    uncommitted (an id, invisible to a prune's snapshot) and prunes until a "forget
    below" row is made meanwhile."""
    await link_jobs(sender, receiver)
    async with Courier(sender.url) as out:
        await out.send_batch("jobs", [{"n": i} for i in range(1_100)])
    await wait_until(lambda: _count_jobs(receiver, 1_100))
    async with (
        await psycopg.AsyncConnection.connect(sender.url) as running,
        await psycopg.AsyncConnection.connect(sender.url, autocommit=True) as keeper,
    ):
        await running.execute(
            "INSERT INTO pgcourier.outbox (queue_name, message, headers)"
            " VALUES ('jobs', '{\"n\": 1100}', '{}')"
        )
        cur = await running.execute("SELECT pg_current_xact_id()::text")
        row = await cur.fetchone()
        assert row is not None
        await wait_until(lambda: _control_rows(keeper, receiver))
        yield _Running(running, keeper, str(row[0]))


async def _control_rows(keeper: psycopg.AsyncConnection, receiver: Node) -> list[tuple]:
    """Prunes once, then the "forget below" rows the sender keeps for the receiver."""
    await links.prune(keeper)
    rows = await links.fetch_outbox(keeper, receiver.name, limit=10_000)
    return [r for r in rows if r[10] is not None]  # forget_below set


async def test_the_receiver_remembers_rows_of_transactions_running_when_told_to_forget(
    nodes: tuple[Node, Node],
) -> None:
    # A sending transaction that runs while link_prune makes its "forget below" row may
    # hold a lower id and be delivered before that row: it must not be forgotten, or a
    # re-sync after a lost slot would deliver it twice.
    sender, receiver = nodes
    async with (
        _batch_then_one_row_running(sender, receiver) as held,
        await psycopg.AsyncConnection.connect(receiver.url, autocommit=True) as to_conn,
    ):
        running_xid = held.xid
        [control] = await _control_rows(held.keeper, receiver)
        assert int(control[11]) <= int(running_xid)  # forget_xmin
        await held.running.commit()
        await wait_until(lambda: _count_jobs(receiver, 1_101))
        # As if the running row had arrived just before the control row: the control
        # row, delivered again now, leaves its record alone.
        await links.deliver_rows(to_conn, [control])
    remembered = await rows_at(
        receiver.url, "SELECT outbox_id, xid::text FROM pgcourier.link_received"
    )
    assert running_xid in [xid for _, xid in remembered]
    # Everything else the control row could forget is gone. (Alone on the server, that
    # is all 1,100; with other transactions running elsewhere on it, its xmin is lower.)
    forget_below, forget_xmin = int(control[10]), int(control[11])
    kept = [(i, x) for i, x in remembered if x != running_xid]
    assert all(i >= forget_below or int(x) >= forget_xmin for i, x in kept), kept


async def test_ids_a_forget_row_kept_for_a_running_transaction_are_forgotten_once_it_ends(
    nodes: tuple[Node, Node],
) -> None:
    # A quiet link: after the batch and the one row sent while the forget row was made,
    # nothing more is sent, yet the receiver must not remember that row for ever.
    sender, receiver = nodes
    async with _batch_then_one_row_running(sender, receiver) as held:
        await held.running.commit()
        await wait_until(lambda: _count_jobs(receiver, 1_101))

        async def all_forgotten() -> bool:
            await links.prune(held.keeper)
            return (
                await scalar_at(receiver.url, "SELECT count(*) FROM pgcourier.link_received") == 0
            )

        # Other transactions on the server (other tests') may hold the xmin back a while.
        await wait_until(all_forgotten, within=60)


async def test_prune_deletes_confirmed_rows_and_keeps_those_a_disabled_subscription_has_not(
    nodes: tuple[Node, Node],
) -> None:
    sender, receiver = nodes
    await link_jobs(sender, receiver)
    async with (
        Courier(sender.url) as out,
        await psycopg.AsyncConnection.connect(sender.url, autocommit=True) as from_conn,
    ):

        async def retained() -> int:
            await links.prune(from_conn)
            (out_link,) = [i for i in await links.links(from_conn) if i.direction == "out"]
            return out_link.retained

        await out.send_batch("jobs", [{"n": n} for n in range(5)])
        await wait_until(lambda: _count_jobs(receiver, 5))

        async def none_retained() -> bool:
            return await retained() == 0

        await wait_until(none_retained)
        await disable_subscription(sender, receiver)
        await out.send_batch("jobs", [{"n": n} for n in range(5, 8)])
        for _ in range(3):
            assert await retained() == 3
        assert await scalar_at(receiver.url, "SELECT count(*) FROM pgmq.q_jobs") == 5


async def test_a_lost_slot_is_made_again_and_every_kept_row_arrives_once(
    nodes: tuple[Node, Node],
) -> None:
    sender, receiver = nodes
    await link_jobs(sender, receiver)
    async with Courier(sender.url) as out:
        await out.send_batch("jobs", [{"n": n} for n in range(2)])
        await wait_until(lambda: _count_jobs(receiver, 2))
        # The slot is lost: nothing streams, and what is sent now waits in the outbox.
        await disable_subscription(sender, receiver)
        slot = await link_slot(sender, receiver)
        await scalar_at(sender.url, "SELECT pg_drop_replication_slot(%s)", [slot])
        await out.send_batch("jobs", [{"n": n} for n in range(2, 7)])
        report = await links.link(sender.url, receiver.url, queues=["jobs"])
        assert f"replication slot {slot}" in report.created
        assert f"subscription {links.subscription_name(sender.name)}" in report.created
        # The two delivered before are still kept (unpruned): sent again, and skipped.
        assert report.resent == 7
        assert await _payloads(receiver) == list(range(7))
        await out.send("jobs", {"n": 7})
        await wait_until(lambda: _count_jobs(receiver, 8))
    assert await _payloads(receiver) == list(range(8))
    again = await links.link(sender.url, receiver.url, queues=["jobs"])
    assert (again.created, again.resent) == ((), 0)


async def test_every_message_arrives_once_when_the_apply_worker_is_killed_mid_stream(
    nodes: tuple[Node, Node],
) -> None:
    sender, receiver = nodes
    await link_jobs(sender, receiver)
    subscription = links.subscription_name(sender.name)
    await wait_until(lambda: scalar_at(receiver.url, APPLY_WORKER, [subscription]))
    killed: list[int] = []
    async with Courier(sender.url) as out:
        for batch in range(20):
            await out.send_batch("jobs", [{"n": batch * 100 + i} for i in range(100)])
            if batch in (5, 12):
                pid = await scalar_at(receiver.url, APPLY_WORKER, [subscription])
                if pid is not None:
                    await scalar_at(receiver.url, "SELECT pg_terminate_backend(%s)", [pid])
                    killed.append(pid)
    assert killed, "no apply worker was found to kill"

    async def all_arrived() -> bool:
        # What a LinkKeeper does every second on the receiver.
        await nudge_at(receiver.url)
        return await _count_jobs(receiver, 2_000)

    await wait_until(all_arrived, within=30, interval=0.1)
    assert await _payloads(receiver) == list(range(2_000))
    assert await scalar_at(receiver.url, APPLY_WORKER, [subscription]) not in killed


async def test_nudge_restarts_a_subscription_without_an_apply_worker_for_longer_than_stalled_s(
    nodes: tuple[Node, Node],
) -> None:
    sender, receiver = nodes
    await link_jobs(sender, receiver)
    subscription = links.subscription_name(sender.name)
    async with await psycopg.AsyncConnection.connect(receiver.url, autocommit=True) as conn:
        await wait_until(lambda: scalar_at(receiver.url, APPLY_WORKER, [subscription]))
        assert await links.nudge(conn, stalled_s=0) == []
        # Enabled, without an apply worker, and the launcher not told: it starts one
        # at its next wake-up, up to three minutes later (as after a sender crash).
        await disable_subscription(sender, receiver)
        await conn.execute(
            "UPDATE pg_subscription SET subenabled = true WHERE subname = %s", [subscription]
        )
        (incoming,) = await links.links(conn)
        assert (incoming.direction, incoming.state) == ("in", "no apply worker")
        # First seen without a worker: remembered, not nudged yet.
        assert await links.nudge(conn, stalled_s=60) == []
        stalls = await scalar_at(receiver.url, "SELECT count(*) FROM pgcourier.link_stall")
        nudged = await links.nudge(conn, stalled_s=0)
        if nudged == [subscription]:
            assert stalls == 1
        else:
            # Another test's subscription change on this server woke the launcher,
            # which started the worker itself first: nothing was left to nudge.
            assert nudged == []
            assert await scalar_at(receiver.url, APPLY_WORKER, [subscription])
        await wait_until(lambda: scalar_at(receiver.url, APPLY_WORKER, [subscription]), within=3)
        async with Courier(sender.url) as out:
            await out.send("jobs", {"n": 1})
        await wait_until(lambda: _count_jobs(receiver, 1))
        assert await links.nudge(conn, stalled_s=0) == []
        assert await scalar_at(receiver.url, "SELECT count(*) FROM pgcourier.link_stall") == 0


async def test_a_relay_carries_rows_once_even_after_a_crash_between_its_two_commits(
    nodes: tuple[Node, Node],
) -> None:
    sender, receiver = nodes
    report = await link_jobs(sender, receiver, mode="relay")
    assert report.mode == "relay" and not any("slot" in what for what in report.created)
    kept = "SELECT count(*) FROM pgcourier.outbox"
    relay = Relay(sender.url, receiver.url, batch_size=2)
    try:
        async with Courier(sender.url) as out:
            await out.send_batch("jobs", [{"n": n} for n in range(3)])
            assert [await relay.run_once() for _ in range(3)] == [2, 1, 0]
            assert await _payloads(receiver) == [0, 1, 2]
            assert await scalar_at(sender.url, kept) == 0
            # The receiver committed, the relay died before deleting from the sender.
            await out.send_batch("jobs", [{"n": n} for n in range(3, 5)])
            async with (
                await psycopg.AsyncConnection.connect(sender.url, autocommit=True) as from_conn,
                await psycopg.AsyncConnection.connect(receiver.url, autocommit=True) as to_conn,
            ):
                await links.deliver_rows(
                    to_conn, await links.fetch_outbox(from_conn, receiver.name)
                )
            assert await relay.run_once() == 2
            assert await scalar_at(sender.url, kept) == 0
            assert await _payloads(receiver) == list(range(5))
    finally:
        await relay.close()


async def test_a_running_relay_is_woken_by_a_send_and_stops_when_told(
    nodes: tuple[Node, Node],
) -> None:
    sender, receiver = nodes
    await link_jobs(sender, receiver, mode="relay")
    # Polling alone would take a minute: a prompt delivery is the notification's.
    relay = Relay(sender.url, receiver.url, poll_interval=60)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        async with Courier(sender.url) as out:
            await wait_until(lambda: scalar_at(sender.url, LISTENING, [sender.database]))
            await out.send("jobs", {"n": 0})
            await wait_until(lambda: _count_jobs(receiver, 1), within=5)
            # Sent while the relay waits (the first may have come with its start).
            await out.send("jobs", {"n": 1})
            await wait_until(lambda: _count_jobs(receiver, 2), within=5)
        stop.set()
        await asyncio.wait_for(task, 5)
    finally:
        stop.set()
        if not task.done():
            task.cancel()
    assert relay.relayed == 2
    assert await _payloads(receiver) == [0, 1]


async def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The CLI's main, in this process (it runs its own event loop: in a thread)."""
    code = await asyncio.to_thread(cli.main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_cli_names_a_node_links_it_idempotently_and_lists_links_on_both_sides(
    nodes: tuple[Node, Node], capsys: pytest.CaptureFixture[str]
) -> None:
    sender, receiver = nodes
    async with Courier(receiver.url) as into:
        await into.queue_create("jobs")
    renamed = new_node_name()
    named = (0, f"{renamed}\n", "")
    assert await _cli(capsys, "node", renamed, "--database-url", sender.url) == named
    assert await _cli(capsys, "node", "--database-url", sender.url) == named
    code, _, err = await _cli(capsys, "node", "Bad Name", "--database-url", sender.url)
    assert code == 1 and "invalid node name" in err
    link = ("link", "--to", receiver.url, "--queue", "jobs", "--database-url", sender.url)
    code, out, err = await _cli(capsys, *link)
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == f"{renamed} -> {receiver.name} (replication): jobs"
    assert "created subscription" in out and "created replication slot" in out
    code, out, err = await _cli(capsys, *link)
    assert (code, out, err) == (0, f"{renamed} -> {receiver.name} (replication): jobs\n", "")

    async def streaming() -> bool:
        code, out, _ = await _cli(capsys, "links", "--json", "--database-url", sender.url)
        return code == 0 and [(r["direction"], r["node"], r["state"]) for r in json.loads(out)] == [
            ("out", receiver.name, "streaming")
        ]

    await wait_until(streaming)
    code, out, _ = await _cli(capsys, "links", "--database-url", receiver.url)
    header, row = out.splitlines()
    assert code == 0 and header.split()[:4] == ["DIRECTION", "NODE", "MODE", "STATE"]
    assert row.split()[:4] == ["in", renamed, "replication", "streaming"]
    code, _, err = await _cli(
        capsys, "link", "--to", receiver.url, "--queue", "Bad", "--database-url", sender.url
    )
    assert code == 1 and "invalid queue name" in err


async def test_link_refuses_two_nodes_of_one_name_and_a_queue_the_receiver_lacks(
    nodes: tuple[Node, Node],
) -> None:
    sender, receiver = nodes
    async with Courier(receiver.url) as into:
        await into.queue_create("jobs")
    with pytest.raises(QueueNotFoundError, match="ghost"):
        await links.link(sender.url, receiver.url, queues=["jobs", "ghost"])
    async with await psycopg.AsyncConnection.connect(sender.url, autocommit=True) as conn:
        await links.set_node_name(conn, receiver.name)
    with pytest.raises(LinkError, match="both named"):
        await links.link(sender.url, receiver.url, queues=["jobs"])
    # Refused before anything was made.
    assert await scalar_at(sender.url, "SELECT count(*) FROM pgcourier.remote_queue") == 0
    assert await scalar_at(sender.url, "SELECT count(*) FROM pgcourier.link") == 0
    assert await scalar_at(sender.url, "SELECT count(*) FROM pg_publication") == 0
    assert await scalar_at(receiver.url, SUBSCRIPTIONS_HERE) == 0


async def test_a_link_keeper_prunes_the_sender_and_lets_the_receiver_forget(
    nodes: tuple[Node, Node],
) -> None:
    sender, receiver = nodes
    await link_jobs(sender, receiver)
    keeper = LinkKeeper([sender.url, receiver.url], interval=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(keeper.run(stop))
    try:
        async with Courier(sender.url) as out:
            await out.send_batch("jobs", [{"n": n} for n in range(1_100)])
        await wait_until(lambda: _count_jobs(receiver, 1_100))
        await wait_until(lambda: scalar_at(sender.url, "SELECT count(*) = 0 FROM pgcourier.outbox"))
        await wait_until(
            lambda: scalar_at(receiver.url, "SELECT count(*) = 0 FROM pgcourier.link_received")
        )
        stop.set()
        await asyncio.wait_for(task, 5)
    finally:
        stop.set()
        if not task.done():
            task.cancel()
    assert keeper.pruned >= 1_100 and keeper.nudged == 0
    # Markers are the sender's alone.
    assert await scalar_at(receiver.url, "SELECT count(*) FROM pgcourier.link_marker") == 0


async def test_a_link_turned_to_a_relay_keeps_no_subscription_slot_or_publication(
    nodes: tuple[Node, Node],
) -> None:
    sender, receiver = nodes
    await link_jobs(sender, receiver)
    report = await links.link(sender.url, receiver.url, queues=["jobs"], mode="relay")
    assert report.mode == "relay"
    subscriptions = "SELECT count(*) FROM pg_subscription WHERE subname = %s"
    name = links.subscription_name(sender.name)
    assert await scalar_at(receiver.url, subscriptions, [name]) == 0
    slots = "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"
    assert await scalar_at(sender.url, slots) == 0
    publications = "SELECT count(*) FROM pg_publication"
    assert await scalar_at(sender.url, publications) == 0
    # And the relay alone carries what is sent now.
    async with Courier(sender.url) as out:
        await out.send_batch("jobs", [{"n": i} for i in range(3)])
    relay = Relay(sender.url, receiver.url)
    try:
        assert await relay.run_once() == 3
    finally:
        await relay.close()
    assert await _payloads(receiver) == [0, 1, 2]


async def test_privileges_list_who_may_send_to_a_remote_queue(nodes: tuple[Node, Node]) -> None:
    sender, receiver = nodes
    await link_jobs(sender, receiver)
    role = f"r_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(sender.url, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
        try:
            await conn.execute("SELECT pgcourier.grant_send('jobs', %s)", [role])
            cur = await conn.execute(
                "SELECT queue, may_send, may_consume FROM pgcourier.queue_privileges"
                " WHERE role = %s",
                [role],
            )
            assert await cur.fetchall() == [("jobs", True, False)]
        finally:
            await conn.execute("SELECT pgcourier.revoke_queue('jobs', %s)", [role])
            await conn.execute(
                sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA pgcourier, pgmq FROM {}").format(
                    sql.Identifier(role)
                )
            )
            await conn.execute(
                sql.SQL("REVOKE ALL ON SCHEMA pgcourier, pgmq FROM {}").format(sql.Identifier(role))
            )
            await conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
