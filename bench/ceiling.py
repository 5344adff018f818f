"""Postgres's own ceiling for queue work: pgbench custom scripts on a pgmq-shaped table.

    .venv/bin/python bench/ceiling.py [--seconds S] [--clients 1,4,16] [--scripts a,b,...]

Not a test: it prints what Postgres itself sustains for the statements a queue runs,
with no client library, no Python and no handler in the way, as a ceiling to hold
pgcourier and its peers against (bench/throughput.py). The machine is shared and
noisy: read the figures as an order of magnitude and as ratios between rows.

Database: as throughput.py (harness.bench_database): DATABASE_URL's server when set,
otherwise the embedded Postgres in .pgdata-bench. pgbench: $PGBENCH when set; else
the embedded server's own (pgserver's bin dir) when DATABASE_URL is unset; else
`pgbench` on PATH (or the newest /usr/lib/postgresql/*/bin/pgbench).

A table shaped like a pgmq queue table (ceiling.q, bench/sql/ceiling/schema.sql) and
the pgbench scripts in bench/sql/ceiling/, each run for --seconds at 1, 4 and 16
clients (-n -M prepared, -j up to the core count):
  * insert_one    one ~100-byte message per transaction;
  * claim_one     DELETE ... WHERE msg_id = (SELECT ... WHERE vt <= clock_timestamp()
                  ORDER BY msg_id FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING the
                  message, per transaction (pgmq.pop's statement);
  * insert_batch  100 messages per transaction, one INSERT ... SELECT generate_series;
  * claim_batch   the claim-and-delete of 100 per transaction;
  * cycle         insert 100 then claim+delete 100, each statement committed on its
                  own (a producer's and a consumer's commit): the end-to-end ceiling.
Before every run the table is truncated, prefilled for the claiming scripts, then
VACUUM ANALYZEd and checkpointed, so every run starts alike. The prefill is 1.5 x the
expected rate x the seconds (expected: this script at fewer clients, scaled up; else
1.5 x the same-shaped insert script at the same client count). A claiming run that ends
with fewer rows left than its clients could claim at once (it may have found the
queue empty) is run again with twice the prefill. msg/s = tps x messages per
transaction.

ceiling_rates(url) gives the same figures to another script, keyed (script, clients).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
from harness import DATA_DIR, bench_database, json_size, log, machine_facts, order_payload

SQL_DIR = Path(__file__).resolve().parent / "sql" / "ceiling"
CLIENTS = (1, 4, 16)
SECONDS = 5.0
MARGIN = 1.5  # prefill = MARGIN x the expected msg/s x seconds (see expected_rate)
MAX_RETRIES = 2  # reruns of a claiming run that ran dry, each with twice the prefill


@dataclass(frozen=True)
class Script:
    name: str
    per_txn: int  # messages moved per pgbench transaction
    claims: int  # messages claimed per transaction (0: the script only inserts)
    net_claims: int  # claims minus inserts: what the prefill must cover
    min_prefill: int  # rows at least, before a run gives a rate
    like: str = ""  # the inserting script of the same shape, whose rate is a first guess


SCRIPTS = {
    s.name: s
    for s in (
        Script("insert_one", 1, 0, 0, 0),
        Script("claim_one", 1, 1, 1, 60_000, like="insert_one"),
        Script("insert_batch", 100, 0, 0, 0),
        Script("claim_batch", 100, 100, 100, 150_000, like="insert_batch"),
        # Net zero, but a backlog keeps every claim finding a full batch of 100.
        Script("cycle", 100, 100, 0, 20_000),
    )
}
BATCHED = ("insert_batch", "claim_batch", "cycle")


@dataclass
class Run:
    script: str
    clients: int
    seconds: float
    tps: float
    msg_per_s: float
    latency_ms: float
    transactions: int
    failed: int
    prefill: int
    left: int  # rows in the table after the run
    attempts: int  # 1, or more when a claiming run ran dry and was rerun
    dry: bool  # still ran dry after the reruns: msg/s overstates


# -- pgbench ------------------------------------------------------------------------


def pgbench_binary() -> str:
    """The pgbench to use, following bench_database's choice of server."""
    if os.environ.get("PGBENCH"):
        return os.environ["PGBENCH"]
    if not os.environ.get("DATABASE_URL"):
        from pgcourier.embedded import EmbeddedPostgres

        # In the process running bench_database(), this is the same (running) server.
        return str(EmbeddedPostgres(DATA_DIR).bin_dir / "pgbench")
    found = shutil.which("pgbench")
    if found:
        return found
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pgbench"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if versions:
        return str(versions[-1])
    raise FileNotFoundError("no pgbench found: set PGBENCH or put pgbench on PATH")


def pgbench_version(pgbench: str) -> str:
    out = subprocess.run([pgbench, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _field(pattern: str, text: str, default: str | None = None) -> str:
    m = re.search(pattern, text)
    if m:
        return m.group(1)
    if default is not None:
        return default
    raise RuntimeError(f"pgbench output has no {pattern!r}:\n{text}")


def pgbench(pgbench_path: str, url: str, script: Script, clients: int, seconds: float) -> dict:
    jobs = max(1, min(clients, os.cpu_count() or 1))
    # The URL goes in as the database name: pgbench expands a conninfo string there.
    cmd = [
        pgbench_path,
        "-n",  # no vacuum of pgbench's own tables (there are none)
        "-M",
        "prepared",  # as psycopg does after a few runs of a statement
        "-T",
        f"{seconds:g}",
        "-c",
        str(clients),
        "-j",
        str(jobs),
        "-f",
        str(SQL_DIR / f"{script.name}.sql"),
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode != 0:
        raise RuntimeError(
            f"pgbench {script.name} -c {clients} exited with {out.returncode}:\n"
            f"{out.stdout}\n{out.stderr}"
        )
    text = out.stdout
    return {
        "tps": float(_field(r"tps = ([\d.]+) \(without initial connection time\)", text)),
        "transactions": int(_field(r"number of transactions actually processed: (\d+)", text)),
        "failed": int(_field(r"number of failed transactions: (\d+)", text, "0")),
        "latency_ms": float(_field(r"latency average = ([\d.]+) ms", text, "nan")),
    }


# -- the table ----------------------------------------------------------------------


def _sql(name: str) -> str:
    return (SQL_DIR / f"{name}.sql").read_text()


def create_table(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_sql("schema"))


def drop_table(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS ceiling CASCADE")  # the bench's own schema


def reset(url: str, prefill: int) -> None:
    """Empties the table, prefills it, vacuums and checkpoints: every run starts alike."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE ceiling.q")
        if prefill:
            conn.execute(_sql("prefill"), {"rows": prefill})
        conn.execute("VACUUM ANALYZE ceiling.q")
        # Needs superuser or pg_checkpoint; skipped without.
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            conn.execute("CHECKPOINT")


def rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM ceiling.q").fetchone()
    return int(row[0]) if row else 0


def message_size(url: str) -> float:
    """Mean size, as JSON text, of the messages the prefill (and the scripts) insert."""
    reset(url, 1000)
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT avg(octet_length(message::text)) FROM ceiling.q").fetchone()
    reset(url, 0)
    return float(row[0]) if row and row[0] is not None else 0.0


# -- runs -----------------------------------------------------------------------------


def measure(
    url: str,
    scripts: Sequence[str] = tuple(SCRIPTS),
    clients: Sequence[int] = CLIENTS,
    seconds: float = SECONDS,
    pgbench_path: str | None = None,
) -> list[Run]:
    """Runs every script at every client count on a fresh ceiling.q, dropped after."""
    pgbench_path = pgbench_path or pgbench_binary()
    runs: list[Run] = []
    create_table(url)
    try:
        seen: dict[tuple[str, int], float] = {}
        for name in scripts:
            script = SCRIPTS[name]
            for c in clients:
                run = _run(url, pgbench_path, script, c, seconds, expected_rate(script, c, seen))
                seen[(name, c)] = run.msg_per_s
                runs.append(run)
    finally:
        drop_table(url)
    return runs


def expected_rate(script: Script, clients: int, seen: dict[tuple[str, int], float]) -> float:
    """A guess at the msg/s a run will reach, to size its prefill: this script at fewer
    clients, scaled by the added clients up to the core count (at least x1.25 past it);
    before any such run, 1.5 x the inserting script of the same shape at the same count."""
    cores = os.cpu_count() or 1
    guesses = [
        rate * min(clients / c, max(cores / c, 1.25))
        for (name, c), rate in seen.items()
        if name == script.name and c < clients
    ]
    if guesses:
        return max(guesses)
    # A claim has outrun the same-shaped insert at one client (a delete builds no jsonb).
    return 1.5 * seen.get((script.like, clients), 0.0)


def _run(
    url: str, pgbench_path: str, script: Script, clients: int, seconds: float, expected: float
) -> Run:
    prefill = script.min_prefill if script.claims else 0
    if script.net_claims:
        # A claiming script's messages are all claims: that many rows go per second.
        prefill = max(prefill, -(-int(MARGIN * expected * seconds) // 10_000) * 10_000)
    attempt = 0
    while True:
        attempt += 1
        t0 = time.perf_counter()
        reset(url, prefill)
        reset_s = time.perf_counter() - t0
        log(
            f"{script.name:<12} {clients:>2} client{'s' if clients > 1 else ' '}: "
            f"{seconds:g}s run"
            + (f", prefilled {prefill:,} rows" if prefill else "")
            + f" (reset {reset_s:.1f}s)"
        )
        got = pgbench(pgbench_path, url, script, clients, seconds)
        left = rows(url)
        # A claim may have come back short once fewer rows were left than the clients
        # lock at once: then the run measured an empty queue, not a claim. A script
        # that only claims must also have deleted a full batch per transaction.
        dry = bool(script.claims) and left < clients * script.claims
        if script.claims and not script.claims - script.net_claims:
            dry = dry or prefill - left < got["transactions"] * script.claims
        run = Run(
            script=script.name,
            clients=clients,
            seconds=seconds,
            tps=got["tps"],
            msg_per_s=got["tps"] * script.per_txn,
            latency_ms=got["latency_ms"],
            transactions=got["transactions"],
            failed=got["failed"],
            prefill=prefill,
            left=left,
            attempts=attempt,
            dry=dry,
        )
        log(
            f"{script.name:<12} {clients:>2} client{'s' if clients > 1 else ' '}: "
            f"{run.tps:,.0f} tps, {run.msg_per_s:,.0f} msg/s, "
            f"latency avg {run.latency_ms:.2f} ms, {run.transactions:,} transactions"
            + (f", {run.failed} failed" if run.failed else "")
            + (f", expected ~{expected:,.0f} msg/s" if script.net_claims else "")
            + (f", {left:,} rows left" if script.claims else "")
            + (" -- RAN DRY" if dry else "")
        )
        if not dry or attempt > MAX_RETRIES:
            return run
        prefill *= 2
        log(f"{script.name:<12} ran dry: again with {prefill:,} rows")


def ceiling_rates(
    url: str,
    scripts: Sequence[str] = tuple(SCRIPTS),
    clients: Sequence[int] = CLIENTS,
    seconds: float = SECONDS,
) -> dict[tuple[str, int], float]:
    """msg/s Postgres sustains per (script, clients), e.g. ("claim_batch", 4).

    The batched scripts (BATCHED: insert_batch, claim_batch, cycle) are the ones to
    hold a batching client against at the same number of connections. Runs
    `len(scripts) x len(clients)` pgbench runs of `seconds` each on `url`'s database
    (in a schema `ceiling`, dropped after). A run that ran dry even with the reruns
    is left out.
    """
    return {
        (r.script, r.clients): r.msg_per_s
        for r in measure(url, scripts, clients, seconds)
        if not r.dry and not r.failed
    }


# -- report -----------------------------------------------------------------------------


def facts(url: str, where: str, pgbench_path: str, size: float) -> list[tuple[str, str]]:
    return [
        *machine_facts(url, where),
        ("pgbench", f"{pgbench_path} ({pgbench_version(pgbench_path)}), -n -M prepared"),
        (
            "payload",
            f"{size:.0f} bytes as JSON text on average (throughput.py's: "
            f"{json_size(order_payload(12345))} bytes compact JSON)",
        ),
    ]


def print_report(runs: list[Run], machine: list[tuple[str, str]]) -> None:
    print()
    width = max(len(k) for k, _ in machine)
    for key, value in machine:
        print(f"{key:<{width}}  {value}")
    print()
    header = (
        f"{'script':<12}  {'clients':>7}  {'msg/txn':>7}  {'tps':>9}  {'msg/s':>9}  "
        f"{'latency':>9}  {'prefill':>9}  note"
    )
    print(header)
    print("-" * len(header))
    previous = None
    for r in runs:
        notes = []
        if r.attempts > 1:
            notes.append(f"rerun x{r.attempts - 1} (ran dry)")
        if r.dry:
            notes.append("RAN DRY: msg/s overstates")
        if r.failed:
            notes.append(f"{r.failed} failed")
        label = r.script if r.script != previous else ""
        previous = r.script
        prefill = f"{r.prefill:,}" if r.prefill else "-"
        line = (
            f"{label:<12}  {r.clients:>7}  {SCRIPTS[r.script].per_txn:>7}  {r.tps:>9,.0f}  "
            f"{r.msg_per_s:>9,.0f}  {r.latency_ms:>6.2f} ms  {prefill:>9}  {'; '.join(notes)}"
        )
        print(line.rstrip())
    print()
    print("msg/s = tps x messages per transaction, higher is better; latency: pgbench's average")
    print("per transaction. prefill: rows in the queue when a claiming run began, sized so it")
    print("never ran dry (checked by the rows left after it). The batched ceiling to hold a")
    print(f"batching client against: {', '.join(BATCHED)}, at the same number")
    print("of connections.")


# -- main -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=SECONDS, help="per pgbench run")
    parser.add_argument("--clients", default=",".join(map(str, CLIENTS)), help="e.g. 1,4,16")
    parser.add_argument("--scripts", default=",".join(SCRIPTS), help="comma-separated")
    args = parser.parse_args(argv)
    args.scripts = [s.strip() for s in args.scripts.split(",") if s.strip()]
    unknown = sorted(set(args.scripts) - set(SCRIPTS))
    if unknown:
        parser.error(f"unknown scripts {unknown}; known: {', '.join(SCRIPTS)}")
    try:
        args.clients = [int(c) for c in args.clients.split(",") if c.strip()]
    except ValueError:
        parser.error("--clients takes comma-separated numbers")
    if not args.clients or min(args.clients) < 1 or args.seconds <= 0:
        parser.error("--clients and --seconds must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with bench_database() as (url, where, _applied):
        pgbench_path = pgbench_binary()
        log(f"pgbench: {pgbench_path}")
        create_table(url)
        machine = facts(url, where, pgbench_path, message_size(url))
        runs = measure(url, args.scripts, args.clients, args.seconds, pgbench_path)
    print_report(runs, machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
