"""End-to-end throughput and latency of pgcourier and its peers, side by side.

    .venv/bin/python bench/throughput.py [--systems a,b,...] [--messages N] [--quick]
                                         [--rounds R] [--rate MSG_PER_S] [--latency-seconds S]

Not a test: it prints figures and each system's ratio to pgcourier. The machine is
shared and noisy, so every system runs in the same run, on the same fresh database,
round after round with the order rotated, and the ratios are what to compare.

Database: DATABASE_URL's server when set, otherwise an embedded Postgres in
.pgdata-bench at the repository root. A database `pgcourier_bench_<pid>` is created,
migrated with pgcourier's migrations (which install pgmq's SQL) and dropped at the end.

Scenarios, each run for every system, ~100-byte JSON payloads:
  * enqueue only: one producer, batches of 100, nobody consuming;
  * drain only: the queue prefilled, then 1 or 4 consumer processes (already
    connected) are let go, claim, run a no-op handler and acknowledge until it is
    empty; timed from "go", so a consumer's start-up counts;
  * end to end: consumers already running, one producer sends the messages in
    batches of 100; timed from the first send to the last acknowledgement;
  * latency: one producer sends single messages at a steady rate with a timestamp
    in the payload; the consumer measures send-to-handler-start.

Each system lives in bench/<name>_system.py; one that cannot run here (a package or
a server missing) is skipped with the reason. pgcourier runs with its metrics and
tracing off; pgcourier_observed with metrics on and trace context in every message
(OpenTelemetry API, no SDK), pgcourier_recorded with an SDK recording every span too:
the report ends with them side by side, the cost of observing (target: within 5%).
"""

from __future__ import annotations

import argparse
import importlib
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata

from cpu import CpuSampler
from harness import (
    BATCH,
    LATENCY_WARMUP,
    Consumers,
    Results,
    System,
    Unavailable,
    batches_of,
    bench_database,
    json_size,
    log,
    machine_facts,
    order_payload,
    rate,
    timed_payload,
)

SYSTEMS = (
    "pgcourier",
    "pgcourier_observed",
    "pgcourier_recorded",
    "pgmq",
    "pgqueuer",
    "procrastinate",
    "rabbitmq",
)
# pgcourier with its metrics and trace context on (bench/pgcourier_observed_system.py),
# and with spans recorded by an SDK too; the reference runs with both off, so their
# ratios are what observing costs.
OBSERVED = ("pgcourier_observed", "pgcourier_recorded")
REFERENCE = "pgcourier"


def load_systems(names: Sequence[str], url: str) -> tuple[list[System], list[str]]:
    systems, skipped = [], []
    for name in names:
        try:
            module = importlib.import_module(f"{name}_system")
            systems.append(module.system(url))
        except (ImportError, Unavailable, OSError) as exc:
            skipped.append(f"{name}: skipped ({exc})")
            log(f"{name}: skipped ({exc})")
    return systems, skipped


# -- scenarios --------------------------------------------------------------------------


def drain(system: System, results: Results, n: int, consumers: int) -> None:
    n = system.messages(n)
    payloads = [order_payload(i) for i in range(n)]
    batches = batches_of(payloads, BATCH)
    system.reset(system.target)
    with system.producer() as producer:
        t0 = time.perf_counter()
        producer.send_batches(batches)
        enqueue_s = time.perf_counter() - t0
    results.add("enqueue only, 1 producer", system.name, rate(n, enqueue_s), "msg/s")
    log(f"{system.name:<9} enqueue {n:,}: {enqueue_s:.2f}s, {rate(n, enqueue_s):,.0f} msg/s")
    with Consumers(system, consumers) as group:
        t0 = time.perf_counter()
        group.start()
        group.wait_running()
        startup_s = time.perf_counter() - t0
        group.wait_handled(n, timeout=max(60, n / 200))
        system.wait_drained()
        drain_s = time.perf_counter() - t0
    scenario = f"drain only, {consumers} consumer{'s' if consumers > 1 else ''}"
    results.add(scenario, system.name, rate(n, drain_s), "msg/s")
    log(
        f"{system.name:<9} {scenario}: {drain_s:.2f}s, {rate(n, drain_s):,.0f} msg/s "
        f"(all consumers running after {startup_s * 1000:.0f} ms)"
    )


def end_to_end(
    system: System, results: Results, n: int, consumers: int, *, min_rate: float = 200
) -> None:
    """min_rate: messages/s below which the run gives up (after at least 60 s)."""
    n = system.messages(n)
    payloads = [order_payload(i) for i in range(n)]
    batches = batches_of(payloads, BATCH)
    system.reset(system.target)
    with system.producer() as producer, Consumers(system, consumers) as group:
        group.start()
        group.wait_running()
        with CpuSampler({p.pid for p in group.procs if p.pid}) as cpu:
            t0 = time.perf_counter()
            producer.send_batches(batches)
            sent_s = time.perf_counter() - t0
            group.wait_handled(n, timeout=max(60, n / min_rate))
            system.wait_drained()
            total_s = time.perf_counter() - t0
    scenario = f"end to end, {consumers} consumer{'s' if consumers > 1 else ''}"
    results.add(scenario, system.name, rate(n, total_s), "msg/s")
    if cpu.available:
        spent = cpu.seconds()
        for kind, seconds in spent.items():
            results.add_cpu(scenario, system.name, kind, seconds / n * 1e6)
        results.add_cpu(scenario, system.name, "cores", sum(spent.values()) / total_s)
    log(
        f"{system.name:<9} {scenario}: {total_s:.2f}s, {rate(n, total_s):,.0f} msg/s "
        f"(producer done after {sent_s:.2f}s)"
    )


def latency(system: System, results: Results, seconds: float, per_s: float) -> None:
    total = int(seconds * per_s)
    system.reset(system.target)
    with system.producer() as producer, Consumers(system, 1, record_latency=True) as group:
        group.start()
        group.wait_running()
        t0 = time.perf_counter()
        producer.send_paced(total, per_s, timed_payload)
        sent_s = time.perf_counter() - t0
        group.wait_handled(total, timeout=60)
        system.wait_drained()
    samples = group.latencies[LATENCY_WARMUP:] if len(group.latencies) > 100 else group.latencies
    if len(samples) < 2:
        raise RuntimeError(f"{system.name}: only {len(samples)} latency samples")
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    p50, p99 = cuts[49], cuts[98]
    label = f"latency at {per_s:.0f} msg/s"
    results.add(f"{label}, p50", system.name, p50 * 1000, "ms")
    results.add(f"{label}, p99", system.name, p99 * 1000, "ms")
    log(
        f"{system.name:<9} {label}: {total} sent in {sent_s:.2f}s "
        f"({rate(total, sent_s):.0f}/s), p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, "
        f"max {max(samples) * 1000:.2f} ms"
    )


# -- report -----------------------------------------------------------------------------


def facts(url: str, where: str, applied: list[str], systems: list[System]) -> list[tuple[str, str]]:
    pgmq_sql = [a.split("/", 1)[1] for a in applied if a.startswith("pgmq/")]
    found = [
        *machine_facts(url, where),
        ("pgmq SQL", f"{pgmq_sql[0]}, SQL-only install" if pgmq_sql else "already present"),
        (
            "clients",
            f"Python {platform.python_version()}, psycopg {metadata.version('psycopg')}, "
            f"pgcourier {metadata.version('pgcourier')}",
        ),
        (
            "payload",
            f"{json_size(order_payload(12345))} bytes JSON (throughput), "
            f"{json_size(timed_payload(12345))} bytes (latency)",
        ),
    ]
    return found + [(s.name, s.describe) for s in systems]


def print_report(
    results: Results,
    machine: list[tuple[str, str]],
    systems: list[System],
    rounds: int,
    skipped: list[str],
) -> None:
    print()
    width = max(len(k) for k, _ in machine)
    for key, value in machine:
        print(f"{key:<{width}}  {value}")
    for note in skipped:
        print(note)
    print()
    name_w = max(len(s) for s in results.order)
    sys_w = max(len(s.name) for s in systems)
    header = (
        f"{'scenario':<{name_w}}  {'system':<{sys_w}}  {'result':>14}  "
        f"{'vs pgcourier':>12}  {'(range)':<11}"
    )
    print(header.rstrip())
    print("-" * len(header))
    for scenario in results.order:
        unit = results.units[scenario]
        for k, system in enumerate(systems):
            figure = results.value(scenario, system.name)
            shown = "-" if figure is None else _fmt(figure, unit)
            ratio = spread = ""
            ratios = results.ratios(scenario, system.name, REFERENCE)
            if ratios:
                ratio = f"{statistics.median(ratios):.2f}x"
                if len(ratios) > 1 and system.name != REFERENCE:
                    spread = f"({min(ratios):.2f}-{max(ratios):.2f})"
            label = scenario if k == 0 else ""
            line = (
                f"{label:<{name_w}}  {system.name:<{sys_w}}  {shown:>14}  {ratio:>12}  {spread:<11}"
            )
            print(line.rstrip())
    print_cpu(results, systems)
    print_observing_cost(results, systems)
    print()
    print("msg/s: higher is better; ms: lower is better. 'vs pgcourier': the system's result")
    print(
        f"over pgcourier's, median (and range) over the {rounds} round(s), each round running"
        " every system back to back; enqueue only is measured by each drain run's prefill."
    )


def print_observing_cost(results: Results, systems: list[System]) -> None:
    """pgcourier with metrics and tracing on versus off, end to end, side by side."""
    shown = [name for name in OBSERVED if name in {s.name for s in systems}]
    if not shown:
        return
    print()
    print("metrics + tracing on vs off (pgcourier is off), end to end: medians of the rounds;")
    print("cost = 1 - the median of each round's on/off ratio (bench/observing.py: CPU)")
    for scenario in results.order:
        off = results.value(scenario, REFERENCE)
        if not scenario.startswith("end to end") or off is None:
            continue
        print(f"  {scenario:<24} {'off':<20} {off:>8,.0f} msg/s")
        for name in shown:
            on, ratios = results.value(scenario, name), results.ratios(scenario, name, REFERENCE)
            if on is None or not ratios:
                continue
            cost = 1 - statistics.median(ratios)
            over = "" if cost <= 0.05 else "   (over the 5% target)"
            print(f"  {'':<24} {name:<20} {on:>8,.0f} msg/s   cost {cost:+.1%}{over}")


def print_cpu(results: Results, systems: list[System]) -> None:
    """CPU per message by kind of process, medians over the rounds (Linux only)."""
    if not results.cpu:
        return
    print()
    print("CPU per message (us), end to end: server = Postgres (RabbitMQ's broker for")
    print("rabbitmq), producer = the benchmark's sending process; cores = CPU used / wall time")
    kinds = ("server", "consumers", "producer", "other")
    header = "".join(f"{k:>10}" for k in (*kinds, "total"))
    sys_w = max(len(s.name) for s in systems) + 2
    print(f"{'scenario':<24}  {'system':<{sys_w}}{header}{'cores':>7}")
    for scenario in results.order:
        for system in systems:
            per_kind = {k: results.cpu_value(scenario, system.name, k) for k in (*kinds, "cores")}
            if per_kind["server"] is None:
                continue
            total = sum(per_kind[k] or 0 for k in kinds)
            cells = "".join(f"{per_kind[k] or 0:>10.1f}" for k in kinds)
            cores = per_kind["cores"] or 0
            print(f"{scenario:<24}  {system.name:<{sys_w}}{cells}{total:>10.1f}{cores:>7.2f}")


def _fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.2f} ms"
    return f"{value:,.0f} msg/s"


# -- main -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated")
    parser.add_argument("--messages", type=int, default=None, help="messages per throughput run")
    parser.add_argument(
        "--quick", action="store_true", help="5,000 messages, 1 round, 3 s of latency"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="throughput rounds; medians are reported"
    )
    parser.add_argument("--rate", type=float, default=200.0, help="latency run: msg/s")
    parser.add_argument("--latency-seconds", type=float, default=None, help="latency run length")
    args = parser.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(args.systems) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    if REFERENCE not in args.systems:
        args.systems.insert(0, REFERENCE)
    if args.messages is None:
        args.messages = 5_000 if args.quick else 20_000
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.latency_seconds is None:
        args.latency_seconds = 3.0 if args.quick else 8.0
    if min(args.messages, args.rounds, args.rate, args.latency_seconds) <= 0:
        parser.error("--messages, --rounds, --rate and --latency-seconds must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    n = args.messages
    results = Results()
    with bench_database() as (url, where, applied):
        systems, skipped = load_systems(args.systems, url)
        machine = facts(url, where, applied, systems)
        steps: list[tuple[str, Callable[[System], None]]] = [
            ("enqueue + drain, 1 consumer", lambda s: drain(s, results, n, 1)),
            ("enqueue + drain, 4 consumers", lambda s: drain(s, results, n, 4)),
            ("end to end, 1 consumer", lambda s: end_to_end(s, results, n, 1)),
            ("end to end, 4 consumers", lambda s: end_to_end(s, results, n, 4)),
        ]
        k = 0
        for r in range(args.rounds):
            for title, step in steps:
                log(f"== round {r + 1}/{args.rounds}: {title}, {n:,} messages")
                # Rotate which system goes first, so drift favours none.
                for system in systems[k % len(systems) :] + systems[: k % len(systems)]:
                    step(system)
                k += 1
        log(f"== latency, {args.rate:.0f} msg/s for {args.latency_seconds:.0f}s")
        for system in systems:
            latency(system, results, args.latency_seconds, args.rate)
    print_report(results, machine, systems, args.rounds, skipped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
