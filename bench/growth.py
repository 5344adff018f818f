"""pgcourier under a standing backlog, and over a long steady run.

    .venv/bin/python bench/growth.py [--quick] [--messages N] [--prefill N] [--rounds R]
                                     [--soak-seconds S] [--sample-seconds S] [--only PART]

Not a test: it prints figures and ratios. Two parts, on one fresh bench database
(harness.bench_database: DATABASE_URL's server, or the embedded Postgres):

  prefill  end-to-end throughput (throughput.end_to_end: consumers already running,
           one producer sending batches of 100, timed to the last acknowledgement),
           1 and 4 consumers, on an empty queue and on a queue holding 1,000,000
           messages that are queued but not claimable. Both queues are made by
           pgcourier's queue_create and run by the same pgcourier system; the runs
           alternate between them, round after round, and the ratio
           prefilled / empty is taken within each round (target: within 20%).

           The standing messages get vt = now() + 100 years, not 'infinity': the
           claim computes `min(vt) - now` for its next-due answer, and Postgres 16
           and older refuse to subtract an infinite timestamp ("cannot subtract
           infinite timestamps"), so 'infinity' would make every empty claim fail.
           They carry no headers (unordered), so each claim has to pass over them
           to find the ready ones: that is what is measured.

  soak     one consumer, one producer paced at half of pgcourier's peak end-to-end
           rate (measured first, 1 consumer), for --soak-seconds; every
           --sample-seconds the queue table's total size (pg_total_relation_size),
           n_live_tup / n_dead_tup / autovacuum and vacuum counts from
           pg_stat_user_tables, and the backlog (rows in the queue table). The verdict
           compares the last third of the samples with the middle third (median
           sizes), and checks that the size is not still rising across the last third
           (a robust trend: one momentary backlog's spike does not make one).

--quick: a 30 s soak, a 100,000-message prefill, one round.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pgcourier_system
import psycopg
from harness import (
    BATCH,
    VT_S,
    Consumers,
    Results,
    System,
    Target,
    batches_of,
    bench_database,
    log,
    order_payload,
    rate,
)
from psycopg import sql
from psycopg.types.json import Jsonb
from throughput import end_to_end, facts, print_cpu

from pgcourier import Courier
from pgcourier.naming import queue_table
from pgcourier.queries import queue_query

PREFILLED_QUEUE = "bench_pgcourier_prefilled"
# Standing messages become visible in 100 years; anything due before 50 years from
# now is a message of the run (ready, or in flight with a 30 s lease).
FAR_FUTURE = "100 years"
RUN_HORIZON = "50 years"
TARGET_RATIO = 0.80
TICK_S = 0.02  # soak producer: sends what is due every 20 ms


# -- part 1: an empty queue versus one with a standing backlog -----------------------------


def prefill(url: str, queue: str, n: int) -> None:
    """n messages that stay queued: not claimable for 100 years, never touched by a claim."""
    # One statement, rows made by generate_series: ~100-byte payloads like the run's own,
    # no headers (so they count as unordered messages), read_ct 0, visible in 100 years.
    insert = sql.SQL(
        "INSERT INTO {} (vt, message) "
        "SELECT now() + {}::interval, jsonb_build_object('order_id', i, 'customer', "
        "'cust-' || lpad((i %% 99991)::text, 5, '0'), 'amount_cents', 1999 + i %% 5000, "
        "'currency', 'EUR', 'note', 'gift wrap') "
        "FROM generate_series(1, %s) AS i"
    ).format(queue_table(queue), sql.Literal(FAR_FUTURE))
    with psycopg.connect(url, autocommit=True) as conn:
        t0 = time.perf_counter()
        conn.execute(insert, [n])
        insert_s = time.perf_counter() - t0
        # Settle the table (visibility map, statistics) before anything is timed, as
        # autovacuum would soon after such an insert (the queue's insert threshold is 10k).
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(queue_table(queue)))
        total_s = time.perf_counter() - t0
    log(
        f"prefilled {queue} with {n:,} messages in {insert_s:.1f}s "
        f"(+ VACUUM ANALYZE: {total_s:.1f}s), {rate(n, insert_s):,.0f} rows/s"
    )


def _reset_run_messages(target: Target) -> None:
    """Deletes the run's messages, keeps the standing ones, vacuums."""
    with psycopg.connect(target.url, autocommit=True) as conn:
        # The run's messages are due within 50 years; the standing ones in 100.
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE vt < now() + {}::interval").format(
                queue_table(target.queue), sql.Literal(RUN_HORIZON)
            )
        )
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(queue_table(target.queue)))


def _pending_run_messages(target: Target) -> int:
    with psycopg.connect(target.url) as conn:
        # Ready or in flight (vt within 50 years), by the queue's vt index.
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE vt < now() + {}::interval").format(
                queue_table(target.queue), sql.Literal(RUN_HORIZON)
            )
        ).fetchone()
    return int(row[0]) if row else 0


def _standing(url: str, queue: str) -> tuple[int, int]:
    """(standing messages, the highest read_ct among them): a claim must never touch one."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            sql.SQL(
                "SELECT count(*), coalesce(max(read_ct), 0) FROM {} "
                "WHERE vt >= now() + {}::interval"
            ).format(queue_table(queue), sql.Literal(RUN_HORIZON))
        ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def prefilled_system(url: str, base: System, n: int) -> System:
    """The same pgcourier system (consumer, producer), on a second queue holding n messages."""

    async def create() -> None:
        async with Courier(url) as courier:
            await courier.queue_create(PREFILLED_QUEUE, visibility_timeout=VT_S)

    asyncio.run(create())
    prefill(url, PREFILLED_QUEUE, n)
    return dataclasses.replace(
        base,
        name="pgcourier+prefill",
        target=Target(url, PREFILLED_QUEUE),
        reset=_reset_run_messages,
        pending=_pending_run_messages,
        describe=f"{base.describe}; queue holding {n:,} messages visible in {FAR_FUTURE}",
    )


@dataclasses.dataclass
class ClaimCost:
    queue: str
    ms: float  # EXPLAIN ANALYZE's execution time
    buffers: int  # shared buffers hit or read
    scan: str  # how the claim found its unordered messages
    rows_read: int  # rows that scan went through
    plan: str  # the whole plan, as text


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


def claim_cost(url: str, queue: str, ready: int = BATCH) -> ClaimCost:
    """One claim of `ready` ready messages by pgcourier's own claim query, explained.

    EXPLAIN ANALYZE, each in a transaction that is rolled back: the messages sent for
    it and the claim leave no trace.
    """
    claim = queue_query("message_claim", queue)
    params = {"now": None, "limit": ready, "vt_s": VT_S, "horizon_s": 1.0}
    payloads = [Jsonb(order_payload(i)) for i in range(ready)]
    found: dict[str, Any] = {}
    with psycopg.connect(url) as conn:
        for fmt in ("JSON", "TEXT"):
            with conn.transaction(force_rollback=True):
                conn.execute("SELECT pgmq.send_batch(%s, %s)", [queue, payloads])
                explain = sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT {}) ").format(sql.SQL(fmt))
                found[fmt] = conn.execute(explain + claim, params, prepare=False).fetchall()
    plan = found["JSON"][0][0][0]
    top = plan["Plan"]
    scan, rows_read = "?", 0
    for node in _nodes(top):
        if node.get("Subplan Name") == "CTE unordered":
            for n in _nodes(node):
                if n.get("Relation Name") == f"q_{queue}":
                    scan = n["Node Type"] + (
                        f" using {n['Index Name']}" if "Index Name" in n else ""
                    )
                    rows_read = int(n["Actual Rows"] * n["Actual Loops"]) + int(
                        n.get("Rows Removed by Filter", 0)
                    )
    return ClaimCost(
        queue,
        float(plan.get("Execution Time", 0.0)),
        int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0)),
        scan,
        rows_read,
        "\n".join(r[0] for r in found["TEXT"]),
    )


def part_prefill(
    url: str, base: System, prefilled: System, args: argparse.Namespace, results: Results
) -> list[ClaimCost]:
    n = args.messages
    for r in range(args.rounds):
        for consumers in (1, 4):
            order = [base, prefilled] if (r + consumers) % 2 else [prefilled, base]
            log(f"== round {r + 1}/{args.rounds}: end to end, {consumers} consumer(s), {n:,}")
            for system in order:
                # A claim that crawls under a standing backlog must still give a figure.
                end_to_end(system, results, n, consumers, min_rate=20)
    standing, max_read = _standing(url, PREFILLED_QUEUE)
    log(f"standing messages after the runs: {standing:,}, highest read_ct {max_read}")
    if standing != args.prefill or max_read != 0:
        raise RuntimeError(f"standing messages touched: {standing:,} left, read_ct {max_read}")
    costs = []
    for system in (base, prefilled):
        cost = claim_cost(url, system.target.queue)
        costs.append(cost)
        log(
            f"{system.name}: one claim of {BATCH} ready messages: {cost.ms:.2f} ms, "
            f"{cost.buffers} buffers, {cost.scan} read {cost.rows_read:,} rows"
        )
        if args.plans:
            print(cost.plan, flush=True)
    return costs


def print_prefill(results: Results, costs: list[ClaimCost], n_prefill: int, rounds: int) -> None:
    print()
    print(f"end to end, pgcourier: empty queue versus {n_prefill:,} messages standing")
    header = (
        f"{'scenario':<24}  {'queue':<22}  {'result':>13}  {'vs empty':>8}  "
        f"{'(range)':<11}  {'within 20%':<10}"
    )
    print(header)
    print("-" * len(header))
    for scenario in results.order:
        for k, (name, label) in enumerate(
            (("pgcourier", "empty"), ("pgcourier+prefill", f"{n_prefill:,} standing"))
        ):
            value = results.value(scenario, name)
            shown = "-" if value is None else f"{value:,.0f} msg/s"
            ratio = spread = verdict = ""
            ratios = results.ratios(scenario, name, "pgcourier")
            if ratios and k == 1:
                med = statistics.median(ratios)
                ratio = f"{med:.2f}x"
                if len(ratios) > 1:
                    spread = f"({min(ratios):.2f}-{max(ratios):.2f})"
                verdict = "yes" if med >= TARGET_RATIO else "NO"
            line = (
                f"{scenario if k == 0 else '':<24}  {label:<22}  {shown:>13}  {ratio:>8}  "
                f"{spread:<11}  {verdict:<10}"
            )
            print(line.rstrip())
    print()
    print(
        f"median over {rounds} round(s); 'vs empty' is prefilled / empty within each round "
        "(the two run back to back, order alternating)."
    )
    print(
        f"one claim of {BATCH} ready messages by pgcourier's claim query "
        "(EXPLAIN ANALYZE, rolled back):"
    )
    for cost in costs:
        print(
            f"  {cost.queue:<26} {cost.ms:8.2f} ms  {cost.buffers:>7,} buffers  "
            f"unordered messages found by {cost.scan}, reading {cost.rows_read:,} rows"
        )


# -- part 2: a steady soak --------------------------------------------------------------


@dataclasses.dataclass
class Sample:
    t: float
    sent: int
    handled: int
    backlog: int  # rows in the queue table: ready or in flight
    size: int  # pg_total_relation_size: table, indexes, TOAST
    live: int
    dead: int
    autovacuums: int
    vacuums: int  # explicit VACUUMs: the reset's, and pgcourier workers' own


def _sample(conn: psycopg.Connection, queue: str, t: float, sent: int, handled: int) -> Sample:
    # The queue table's total size and the statistics system's counts of it (these
    # lag by up to a second or so), and its rows right now.
    row = conn.execute(
        sql.SQL(
            "SELECT pg_total_relation_size(s.relid), s.n_live_tup, s.n_dead_tup, "
            "s.autovacuum_count, s.vacuum_count, (SELECT count(*) FROM {}) "
            "FROM pg_stat_user_tables s WHERE s.relid = %s::regclass"
        ).format(queue_table(queue)),
        [f"pgmq.q_{queue}"],
    ).fetchone()
    assert row is not None
    size, live, dead, autovacuums, vacuums, backlog = row
    return Sample(
        t, sent, handled, int(backlog), int(size), int(live), int(dead), autovacuums, vacuums
    )


def soak(system: System, seconds: float, every_s: float, peak_n: int) -> tuple[float, list[Sample]]:
    log(f"== soak: measuring the peak first (end to end, 1 consumer, {peak_n:,} messages)")
    peak_results = Results()
    end_to_end(system, peak_results, peak_n, 1)
    peak = peak_results.value("end to end, 1 consumer", system.name) or 0.0
    per_s = peak / 2
    log(f"== soak: {per_s:,.0f} msg/s (half of {peak:,.0f}) for {seconds:.0f}s, 1 consumer")
    system.reset(system.target)
    samples: list[Sample] = []
    sent = 0
    with (
        psycopg.connect(system.target.url, autocommit=True) as conn,
        system.producer() as producer,
        Consumers(system, 1) as group,
    ):
        group.start()
        group.wait_running()
        samples.append(_sample(conn, system.target.queue, 0.0, 0, group.handled()))
        t0 = time.monotonic()
        next_sample = every_s
        while True:
            now = time.monotonic() - t0
            if now >= next_sample - 1e-9:
                s = _sample(conn, system.target.queue, now, sent, group.handled())
                samples.append(s)
                log(
                    f"soak t={now:5.0f}s sent {sent:,} handled {s.handled:,} "
                    f"backlog {s.backlog:,} size {s.size / 1024:,.0f} kB "
                    f"live {s.live:,} dead {s.dead:,} "
                    f"autovacuums {s.autovacuums} vacuums {s.vacuums}"
                )
                next_sample += every_s
            if now >= seconds:
                break
            due = min(int(now * per_s), int(seconds * per_s)) - sent
            if due > 0:
                payloads = [order_payload(sent + i) for i in range(due)]
                producer.send_batches(batches_of(payloads, BATCH))
                sent += due
            time.sleep(TICK_S)
        log(f"soak: {sent:,} sent in {seconds:.0f}s ({rate(sent, seconds):,.0f}/s); draining")
        group.wait_handled(sent, timeout=120)
        system.wait_drained(timeout=60)
    return peak, samples


def _thirds(samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """The middle and last thirds of the samples taken during the run (t > 0)."""
    during = [s for s in samples if s.t > 0]
    n = len(during)
    return during[n // 3 : 2 * n // 3], during[2 * n // 3 :]


def vacuum_facts(url: str, queue: str) -> str:
    """The server's autovacuum settings and the queue table's own (set by queue_create)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT current_setting('autovacuum'), current_setting('autovacuum_naptime'), "
            "(SELECT reloptions FROM pg_class WHERE oid = %s::regclass)",
            [f"pgmq.q_{queue}"],
        ).fetchone()
    assert row is not None
    on, naptime, options = row
    return f"autovacuum={on}, autovacuum_naptime={naptime}; table: {', '.join(options or [])}"


def print_soak(peak: float, samples: list[Sample], seconds: float, vacuum: str) -> None:
    print()
    print(
        f"soak: pgcourier, 1 consumer, producer at {peak / 2:,.0f} msg/s "
        f"(half of the {peak:,.0f} msg/s peak), {seconds:.0f}s"
    )
    print(vacuum)
    header = (
        f"{'t (s)':>6}  {'sent':>9}  {'handled':>9}  {'backlog':>8}  {'size (kB)':>10}  "
        f"{'live':>8}  {'dead':>8}  {'autovacuums':>11}  {'vacuums':>7}"
    )
    print(header)
    print("-" * len(header))
    for s in samples:
        print(
            f"{s.t:6.0f}  {s.sent:9,}  {s.handled:9,}  {s.backlog:8,}  {s.size / 1024:10,.0f}  "
            f"{s.live:8,}  {s.dead:8,}  {s.autovacuums:11}  {s.vacuums:7}"
        )
    middle, last = _thirds(samples)
    if not middle or not last:
        print("verdict: too few samples to compare thirds (lengthen --soak-seconds)")
        return

    def median(values: list[int]) -> float:
        return statistics.median(values)

    size_m, size_l = median([s.size for s in middle]), median([s.size for s in last])
    dead_m, dead_l = median([s.dead for s in middle]), median([s.dead for s in last])
    back_m, back_l = median([s.backlog for s in middle]), median([s.backlog for s in last])
    growth = size_l / size_m - 1 if size_m else 0.0
    # Still rising at the end? The last third's trend (Theil-Sen: the median of the slopes
    # between every two samples, so one spike does not make a trend), over its length.
    slopes = [(y.size - x.size) / (y.t - x.t) for i, x in enumerate(last) for y in last[i + 1 :]]
    span = last[-1].t - last[0].t
    trend = statistics.median(slopes) * span / size_l if slopes and size_l else 0.0
    print()
    print(
        f"middle third ({len(middle)} samples) -> last third ({len(last)} samples): "
        f"median size {size_m / 1024:,.0f} -> {size_l / 1024:,.0f} kB ({growth:+.1%}); "
        f"sizes in the last third {min(x.size for x in last) / 1024:,.0f}-"
        f"{max(x.size for x in last) / 1024:,.0f} kB, trend across it {trend:+.1%}; "
        f"median dead tuples {dead_m:,.0f} -> {dead_l:,.0f}, "
        f"median backlog {back_m:,.0f} -> {back_l:,.0f}"
    )
    if growth <= 0.10 and trend <= 0.10:
        verdict = (
            "bounded: the last third's median size is at most 10% above the middle "
            "third's, and it is not rising by more than 10% across the last third"
        )
    elif back_l > 2 * max(back_m, BATCH):
        verdict = (
            "growing, with the backlog: the consumer is falling behind the producer "
            "(not bloat alone)"
        )
    else:
        verdict = (
            "GROWING: the size rose more than 10% (third to third, or across the last "
            "third) while the backlog did not: dead space is not being reused"
        )
    if len(last) < 3:
        verdict += f" (only {len(last)} sample(s) per third: a short soak proves little)"
    print(f"verdict: {verdict}")


# -- main -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="30 s soak, 100,000 prefilled")
    parser.add_argument("--messages", type=int, default=20_000, help="per end-to-end run")
    parser.add_argument("--prefill", type=int, default=None, help="standing messages")
    parser.add_argument("--rounds", type=int, default=None, help="prefill part: rounds")
    parser.add_argument("--soak-seconds", type=float, default=None)
    parser.add_argument("--sample-seconds", type=float, default=10.0)
    parser.add_argument("--peak-messages", type=int, default=None, help="soak's peak run")
    parser.add_argument("--only", choices=("prefill", "soak"), default=None)
    parser.add_argument("--plans", action="store_true", help="print the claim plans")
    args = parser.parse_args(argv)
    if args.prefill is None:
        args.prefill = 100_000 if args.quick else 1_000_000
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.soak_seconds is None:
        args.soak_seconds = 30.0 if args.quick else 300.0
    if args.peak_messages is None:
        args.peak_messages = 5_000 if args.quick else 10_000
    numbers = (args.messages, args.prefill, args.rounds, args.soak_seconds, args.sample_seconds)
    if min(numbers) <= 0 or args.peak_messages <= 0:
        parser.error("counts and durations must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results = Results()
    costs: list[ClaimCost] = []
    peak, vacuum = 0.0, ""
    samples: list[Sample] = []
    with bench_database() as (url, where, applied):
        base = pgcourier_system.system(url)
        systems = [base]
        if args.only != "soak":
            prefilled = prefilled_system(url, base, args.prefill)
            systems.append(prefilled)
        machine = facts(url, where, applied, systems)
        if args.only != "soak":
            costs = part_prefill(url, base, prefilled, args, results)
        if args.only != "prefill":
            peak, samples = soak(base, args.soak_seconds, args.sample_seconds, args.peak_messages)
            vacuum = vacuum_facts(url, base.target.queue)
    print()
    width = max(len(k) for k, _ in machine)
    for key, value in machine:
        print(f"{key:<{width}}  {value}")
    if args.only != "soak":
        print_prefill(results, costs, args.prefill, args.rounds)
        print_cpu(results, systems)
    if args.only != "prefill":
        print_soak(peak, samples, args.soak_seconds, vacuum)
    return 0


if __name__ == "__main__":
    sys.exit(main())
