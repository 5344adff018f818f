"""What metrics and tracing cost a worker: its CPU per message, off versus on.

    .venv/bin/python bench/observing.py [--messages N] [--rounds R]

throughput.py compares end-to-end throughput with them on and off, but on a shared
2-core machine those rates swing by tens of percent from run to run. The CPU time a
worker spends per message is steadier: this sends N messages (in batches of 100,
inside a span, so that they carry trace context), then times (process CPU, not wall
clock) one Worker in this process handling them with a no-op handler, for each mode
in turn, round after round with the order rotated, and reports the medians.

Modes (bench/pgcourier_system.py's observe): off; observed = metrics on and trace
context carried through the OpenTelemetry API, no SDK; recorded = the same with an
SDK provider recording a span per send and per message (batch processor, exporter
dropping them). Postgres's CPU and the producer's are not in these figures.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence

import pgcourier_system
from harness import BATCH, bench_database, log, order_payload

from pgcourier import Context, Courier, Message, Worker, tracing

MODES = ("off", "observed", "recorded")


async def worker_cpu_per_message(url: str, mode: str, n: int) -> float:
    """Microseconds of this process's CPU per message handled, in the given mode."""
    pgcourier_system.observe(mode)
    async with Courier(url) as courier:
        await courier.queue_create("bench_observing")
        with tracing.tracer("bench").start_as_current_span("producer"):
            for start in range(0, n, BATCH):
                batch = [order_payload(i) for i in range(start, min(n, start + BATCH))]
                await courier.send_batch("bench_observing", batch)
        handled = 0
        all_handled = asyncio.Event()

        async def handle(message: Message, ctx: Context) -> None:
            nonlocal handled
            handled += 1
            if handled == n:
                all_handled.set()

        worker = Worker(courier, concurrency=2 * BATCH, batch_size=BATCH)
        worker.handle("bench_observing", handle)
        cpu_before = time.process_time()
        running = asyncio.create_task(worker.run())
        await all_handled.wait()
        cpu_s = time.process_time() - cpu_before
        worker.stop()
        await running
    return cpu_s / n * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    samples: dict[str, list[float]] = {mode: [] for mode in MODES}
    with bench_database() as (url, _where, _applied):
        for r in range(args.rounds):
            for mode in MODES[r % len(MODES) :] + MODES[: r % len(MODES)]:
                us = asyncio.run(worker_cpu_per_message(url, mode, args.messages))
                samples[mode].append(us)
                log(f"round {r + 1}: {mode:<9} {us:5.1f} us of worker CPU per message")
    off = statistics.median(samples["off"])
    print()
    print(f"worker CPU per message, median of {args.rounds} rounds of {args.messages:,} messages:")
    for mode in MODES:
        value = statistics.median(samples[mode])
        extra = "" if mode == "off" else f"   +{value - off:.1f} us ({value / off - 1:+.0%})"
        print(f"  {mode:<9} {value:5.1f} us{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
