"""Where a message's latency goes, step by step, at a steady rate.

    .venv/bin/python bench/latency_path.py [--rate 200] [--seconds 8]

Not a test. A producer process sends single messages at a steady rate, each stamped
with the time just before `send()`; a worker in this process handles them. The
worker's wake-up callback and claim are wrapped to timestamp each step, so the
total splits into:

  send call       the producer's `send()`: INSERT, commit (WAL flush), NOTIFY
  send->notify    from before `send()` until the worker's LISTEN connection hears it
  notify->claim   from the notification until the worker sends its claim
  claim           the claim's round trip
  claim->handler  from the claim's rows to the handler starting

Percentiles of each step are over all messages, so they do not add up exactly.
Database: DATABASE_URL's server when set, otherwise the embedded one (.pgdata-bench).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from harness import bench_database, log, paced_async

from pgcourier import Context, Courier, Message, Worker, store

QUEUE = "latency_path"
WARMUP = 50


def produce(url: str, total: int, rate: float, go: Any, done: Any) -> None:
    async def send_all() -> None:
        calls: list[float] = []
        async with Courier(url) as courier:
            go.wait()
            async for i in paced_async(total, rate):
                sent_at = time.monotonic()
                await courier.send(QUEUE, {"t": sent_at, "seq": i})
                calls.append(time.monotonic() - sent_at)
        done.put(calls)

    asyncio.run(send_all())


async def consume(url: str, total: int, go: Any) -> dict[str, list[float]]:
    marks: dict[str, float] = {}
    steps: dict[str, list[float]] = {
        k: [] for k in ("send->notify", "notify->claim", "claim", "claim->handler", "total")
    }
    handled = asyncio.Event()
    count = 0
    claim = store.claim

    async def timed_claim(*args: Any, **kwargs: Any) -> Any:
        marks["claim_sent"] = time.monotonic()
        result = await claim(*args, **kwargs)
        marks["claim_back"] = time.monotonic()
        return result

    store.claim = timed_claim  # consumers call it through the module
    async with Courier(url) as courier:
        await courier.queue_create(QUEUE)
        worker = Worker(courier, concurrency=100, batch_size=100)

        async def handle(message: Message, ctx: Context) -> None:
            nonlocal count
            now = time.monotonic()
            sent_at, heard = message.payload["t"], marks.get("notify", 0.0)
            steps["send->notify"].append(heard - sent_at)
            steps["notify->claim"].append(marks["claim_sent"] - heard)
            steps["claim"].append(marks["claim_back"] - marks["claim_sent"])
            steps["claim->handler"].append(now - marks["claim_back"])
            steps["total"].append(now - sent_at)
            count += 1
            if count >= total:
                handled.set()

        worker.handle(QUEUE, handle)
        notified = worker._notified

        def timed_notified(queue: str) -> None:
            marks["notify"] = time.monotonic()
            notified(queue)

        # Timing the NOTIFY's arrival from outside: the method the worker's listener
        # calls (taken when the worker builds its listener, in run()), wrapped.
        worker._notified = timed_notified  # type: ignore[method-assign]
        task = asyncio.create_task(worker.run())
        await worker.started.wait()
        go.set()
        await asyncio.wait_for(handled.wait(), timeout=total / 10 + 60)
        worker.stop()
        await task
        await courier.queue_drop(QUEUE)
    return steps


def report(steps: dict[str, list[float]]) -> None:
    print(f"{'step':<16}{'p50':>9}{'p90':>9}{'p99':>9}  (ms)")
    for name, values in steps.items():
        cuts = statistics.quantiles(values[WARMUP:], n=100, method="inclusive")
        print(f"{name:<16}" + "".join(f"{cuts[i] * 1000:>9.2f}" for i in (49, 89, 98)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=200.0, help="messages per second")
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    total = int(args.rate * args.seconds)
    if total <= WARMUP:
        parser.error("--rate x --seconds must be more than 50 messages")
    ctx = mp.get_context("spawn")
    with bench_database() as (url, where, _):
        log(f"{total} messages at {args.rate:.0f}/s, {where}")
        go, done = ctx.Event(), ctx.Queue()
        producer = ctx.Process(target=produce, args=(url, total, args.rate, go, done))
        producer.start()
        steps = asyncio.run(consume(url, total, go))
        calls = done.get(timeout=60)
        producer.join(timeout=30)
    report({"send call": calls, **steps})
    return 0


if __name__ == "__main__":
    sys.exit(main())
