"""A randomised run: other pgmq clients and two pgcourier workers share one queue.

For RUN_SECONDS (PGCOURIER_INTEROP_SECONDS, 8 by default; a minute or more for a
thorough run) two other clients send (with ordinary, odd and malformed headers), read,
set_vt, archive and delete at random, while two pgcourier workers (tiny poll interval,
1 s leases) consume the queue with a transactional handler that sometimes fails and
sometimes outlives its lease. Afterwards: every message that no other client deleted
or archived was handled with its effect applied exactly once, or dead-lettered with a
reason; no worker loop died; no other client's call was refused.

PGCOURIER_INTEROP_SEED replays a run's choices (not its timing).
"""

import asyncio
import contextlib
import os
import random
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from pgcourier import Context, Courier, Message, Worker
from tests.helpers import queue_empty, wait_until
from tests.interop.foreign import NO_HEADERS, ForeignClient, RawJson

RUN_SECONDS = float(os.environ.get("PGCOURIER_INTEROP_SECONDS", "8"))
DRAIN_SECONDS = 60.0
SEED = int(os.environ.get("PGCOURIER_INTEROP_SEED", str(random.randrange(1 << 30))))
QUEUE = "shared"
HANDLER_FAILURE_RATE = 0.15
MAX_ATTEMPTS = 3


def header_kinds() -> list[tuple[str, Callable[[random.Random], Any]]]:
    """What other clients put in the headers column, the ordinary and the odd."""
    return [
        ("none", lambda rng: NO_HEADERS),
        ("json-null", lambda rng: None),
        ("empty", lambda rng: {}),
        ("typed", lambda rng: {"type": "job"}),
        (
            "envelope",
            lambda rng: {
                "message_id": str(uuid.uuid4()),
                "type": "job",
                "correlation_id": str(uuid.uuid4()),
            },
        ),
        ("array", lambda rng: ["a"]),
        ("string", lambda rng: "str"),
        ("number", lambda rng: rng.randint(0, 9)),
        ("repeated-idempotency-key", lambda rng: {"idempotency_key": "same-every-time"}),
        ("group", lambda rng: {"x-pgmq-group": rng.choice(["g1", "g2", "g3"])}),
        ("null-group", lambda rng: {"x-pgmq-group": None}),
        ("numeric-message-id", lambda rng: {"message_id": rng.randint(1, 1 << 40)}),
        ("non-string-type", lambda rng: {"type": ["job"]}),
        ("old-errors-header", lambda rng: {"pgcourier_errors": "not a list"}),
        ("errors-header", lambda rng: {"x-pgcourier-errors": rng.choice(["x", [], [1, "a"]])}),
        ("unicode", lambda rng: {"note": "\u00e9\u4e2d\U0001f600", "type": "job"}),
    ]


def payload_kinds() -> list[tuple[str, Callable[[int], Any]]]:
    """Payloads other clients may legally send, each carrying its number n."""
    return [
        ("plain", lambda n: {"n": n}),
        ("huge-number", lambda n: RawJson(f'{{"n": {n}, "huge": 1e400}}')),
        ("big-integer", lambda n: {"n": n, "big": 2**80}),
        ("deep", lambda n: RawJson(f'{{"n": {n}, "deep": {"[" * 300}{"]" * 300}}}')),
    ]


@dataclass
class Ledger:
    """What the other clients did, for the checks at the end."""

    sent: dict[int, int] = field(default_factory=dict)  # n -> msg_id
    n_of: dict[int, int] = field(default_factory=dict)  # msg_id -> n
    taken: set[int] = field(default_factory=set)  # n deleted or archived by another client
    actions: Counter[str] = field(default_factory=Counter)
    refused: list[str] = field(default_factory=list)
    next_n: int = 0

    def new_n(self) -> int:
        self.next_n += 1
        return self.next_n

    def record_send(self, n: int, msg_id: int | None) -> None:
        if msg_id is not None:
            self.sent[n] = msg_id
            self.n_of[msg_id] = n


async def other_client(
    database_url: str, courier: Courier, ledger: Ledger, rng: random.Random
) -> None:
    kinds = header_kinds()
    deadline = asyncio.get_running_loop().time() + RUN_SECONDS
    async with ForeignClient.connect(database_url) as client:
        while asyncio.get_running_loop().time() < deadline:
            action = rng.choices(
                ["send", "pgcourier-send", "read", "set_vt", "archive", "delete"],
                weights=[8, 2, 3, 2, 1, 1],
            )[0]
            kind = ""
            try:
                if action == "send":
                    kind, make = rng.choice(kinds)
                    shape, body = rng.choices(payload_kinds(), weights=[12, 1, 1, 1])[0]
                    kind = f"{kind}/{shape}" if shape != "plain" else kind
                    n = ledger.new_n()
                    delay = 1 if rng.random() < 0.1 else 0
                    msg_id = await client.send(QUEUE, body(n), make(rng), delay=delay)
                    ledger.record_send(n, msg_id)
                elif action == "pgcourier-send":
                    n = ledger.new_n()
                    msg_id = await courier.send(
                        QUEUE,
                        {"n": n},
                        type="job",
                        ordering_key=rng.choice([None, "g1", "g4"]),
                        headers={"idempotency_key": "a foreign-looking header"},
                    )
                    ledger.record_send(n, msg_id)
                elif action == "read":
                    await client.read(QUEUE, vt=rng.choice([0, 1, 2]), qty=rng.randint(1, 3))
                elif ledger.n_of:
                    msg_id = rng.choice(list(ledger.n_of))
                    if action == "set_vt":
                        await client.set_vt(QUEUE, msg_id, rng.choice([0, 1, 2]))
                    elif await getattr(client, action)(QUEUE, msg_id):
                        ledger.taken.add(ledger.n_of[msg_id])
                ledger.actions[f"{action}:{kind}" if kind else action] += 1
            except Exception as exc:
                ledger.refused.append(f"{action} {kind}: {type(exc).__name__}: {exc}".strip())
            await asyncio.sleep(rng.uniform(0, 0.02))


def flaky_handler(rng: random.Random) -> Callable[[Message, Context], Any]:
    async def handle(message: Message, ctx: Context) -> None:
        assert ctx.conn is not None
        await ctx.conn.execute(
            "INSERT INTO effects (message_id, n) VALUES (%s, %s)",
            [message.id, message.payload["n"]],
        )
        roll = rng.random()
        if roll < 0.03:
            await asyncio.sleep(1.3)  # outlives its 1 s lease: renewals must keep it
        elif roll < 0.3:
            await asyncio.sleep(rng.uniform(0, 0.03))
        if rng.random() < HANDLER_FAILURE_RATE:
            raise RuntimeError("the handler fails (its effect is rolled back)")

    return handle


@pytest.mark.timeout(RUN_SECONDS + DRAIN_SECONDS + 90)
async def test_other_pgmq_clients_and_pgcourier_workers_share_a_queue_nothing_lost_or_doubled(
    database_url: str,
) -> None:
    print(f"seed {SEED} (PGCOURIER_INTEROP_SEED), {RUN_SECONDS}s (PGCOURIER_INTEROP_SECONDS)")
    ledger = Ledger()
    problems: list[str] = []
    async with contextlib.AsyncExitStack() as stack:
        couriers = [
            await stack.enter_async_context(Courier(database_url, pool_max_size=6))
            for _ in range(3)
        ]
        await couriers[0].queue_create(
            QUEUE,
            visibility_timeout=1,
            max_attempts=MAX_ATTEMPTS,
            backoff_base=0.05,
            backoff_max=0.5,
        )
        async with couriers[0].pool.connection() as conn:
            await conn.execute("CREATE TABLE effects (message_id text NOT NULL, n int NOT NULL)")

        workers = []
        for i in range(2):
            worker = Worker(
                couriers[i],
                concurrency=8,
                batch_size=4,
                poll_interval=0.05,
                shutdown_timeout=10,
            )
            worker.handle(QUEUE, flaky_handler(random.Random(SEED + 1 + i)), transactional=True)
            workers.append(worker)
        runs = [asyncio.create_task(w.run()) for w in workers]
        await wait_until(
            lambda: all(w.started.is_set() or r.done() for w, r in zip(workers, runs, strict=True))
        )

        ended_early: list[str] = []

        async def watch() -> None:
            while True:
                for i, run in enumerate(runs):
                    if run.done() and f"worker {i}" not in " ".join(ended_early):
                        ended_early.append(f"worker {i} run() ended before stop(): {run!r}")
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        try:
            await asyncio.gather(
                *(
                    other_client(database_url, couriers[2], ledger, random.Random(SEED - i))
                    for i in range(2)
                )
            )
            try:
                await wait_until(lambda: queue_empty(couriers[2], QUEUE), within=DRAIN_SECONDS)
            except AssertionError:
                problems.append(f"the queue was not drained within {DRAIN_SECONDS}s")
        finally:
            watcher.cancel()
            for worker in workers:
                worker.stop()
            for i, run in enumerate(runs):
                try:
                    await asyncio.wait_for(run, 30)
                except Exception as exc:
                    problems.append(f"worker {i} run() failed: {type(exc).__name__}: {exc}")
        problems.extend(ended_early)

        async with couriers[2].pool.connection() as conn:
            cur = await conn.execute(
                "SELECT msg_id, read_ct, vt, headers, message FROM pgmq.q_shared ORDER BY msg_id"
            )
            left = await cur.fetchall()
            cur = await conn.execute("SELECT n, count(*) FROM effects GROUP BY n")
            effects = dict(await cur.fetchall())
            cur = await conn.execute(
                "SELECT (message ->> 'n')::int, errors FROM pgcourier.dead_letter"
                " WHERE queue_name = %s",
                [QUEUE],
            )
            dead: dict[int, list[Any]] = {}
            for n, errors in await cur.fetchall():
                if n in dead:
                    problems.append(f"n={n} dead-lettered twice")
                dead[n] = errors or []
    if left:
        problems.append(f"{len(left)} messages left in the queue, e.g. {left[:5]}")
    for n in ledger.sent:
        applied = effects.get(n, 0)
        if n in ledger.taken:
            if applied > 1:
                problems.append(f"n={n} (taken by another client) applied {applied} times")
            continue
        if n in dead:
            if applied:
                problems.append(f"n={n} both applied ({applied}x) and dead-lettered")
            elif not any(dead[n]):
                problems.append(f"n={n} dead-lettered without a reason")
        elif applied != 1:
            problems.append(f"n={n} (msg {ledger.sent[n]}) applied {applied} times")
    refusals = Counter(r.splitlines()[0] for r in ledger.refused)
    problems[:0] = [f"{count} calls refused: {r}" for r, count in refusals.most_common(10)]
    summary = (
        f"seed {SEED}: {len(ledger.sent)} sent, {len(ledger.taken)} taken by other clients, "
        f"{sum(1 for n in ledger.sent if effects.get(n))} applied, {len(dead)} dead-lettered, "
        f"{len(ledger.refused)} calls refused; actions {dict(sorted(ledger.actions.items()))}"
    )
    print(summary)
    assert not problems, summary + "\n" + "\n".join(problems[:60])
