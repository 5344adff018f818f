"""The table a run ends with: what was done to the shop, what became of the orders, and
every check with its verdict."""

from __future__ import annotations

from dataclasses import dataclass

from services.shared.topology_db import ShopDatabases

from .clients import ClientStats
from .faults import FaultStats, Schedule
from .invariants import Check
from .shop import Exit


@dataclass(frozen=True)
class Outcome:
    orders: int
    confirmed: int
    out_of_stock: int
    declined: int
    silent_card_timeouts: int
    fault_timeouts: int
    unfinished: int
    captured_cents: int
    refunded_cents: int


def _rows(title: str, rows: list[tuple[str, str, str]]) -> list[str]:
    lines = [title]
    for name, value, note in rows:
        lines.append(f"  {name:<30} {value:>10}  {note}".rstrip())
    return lines


def render(
    *,
    seconds: float,
    clients_n: int,
    databases: ShopDatabases,
    schedule: Schedule,
    faults: FaultStats,
    exits: list[Exit],
    clients: ClientStats,
    outcome: Outcome,
    drained_s: float,
    checks: list[Check],
) -> str:
    restarts = faults.restarts_s
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(clients.statuses.items()))
    killed = {pid for _, _, pid in faults.kills + faults.keeper_kills}
    unexpected = [e for e in exits if e.pid not in killed]
    topology = (
        "one database"
        if databases.topology == "one"
        else f"a database per service, linked by {databases.link_mode}"
    )
    link_rows = []
    if schedule.terminate_apply_every_s is not None:
        link_rows.append(
            (
                "apply workers terminated",
                f"{faults.apply_terminations}",
                f"every {schedule.terminate_apply_every_s:g} s; "
                f"{faults.apply_workers_terminated} workers terminated",
            )
        )
    if schedule.kill_keeper_every_s is not None:
        link_rows.append(
            (
                "links keeper SIGKILLs",
                f"{len(faults.keeper_kills)}",
                f"every {schedule.kill_keeper_every_s:g} s",
            )
        )
    if databases.topology == "databases":
        longest = faults.longest_catch_up
        link_rows.append(
            (
                "link catch-up after restart",
                f"{longest[0]:.1f}s" if longest else "-",
                (f"longest ({longest[1]}); each: " if longest else "no restart")
                + ", ".join(f"{s:.1f}s" for s, _ in faults.catch_ups),
            )
        )
    lines = _rows(
        f"faults injected ({seconds:.0f} s of load, {clients_n} clients, {topology})",
        [
            ("worker SIGKILLs", f"{len(faults.kills)}", f"every {schedule.kill_every_s:g} s"),
            (
                "Postgres restarts (immediate)",
                f"{len(restarts)}",
                f"every {schedule.restart_every_s:g} s; took "
                + ", ".join(f"{s:.1f}s" for s in restarts),
            ),
            (
                "LISTEN drops",
                f"{faults.listen_drops}",
                f"every {schedule.drop_listen_every_s:g} s; "
                f"{faults.listeners_terminated} connections terminated",
            ),
            *link_rows,
            (
                "children that died",
                f"{len(exits)}",
                f"{len(unexpected)} not killed by the suite"
                + "".join(f"; {e.instance} {e.reason}" for e in unexpected[:3]),
            ),
            ("faults not injected", f"{len(faults.errors)}", "; ".join(faults.errors[:2])),
        ],
    )
    lines += _rows(
        "clients",
        [
            ("orders accepted (202)", f"{len(clients.accepted)}", ""),
            ("requests retried", f"{clients.retries}", "same Idempotency-Key"),
            ("  answered from the key", f"{clients.replayed}", "Idempotent-Replayed: true"),
            ("  lost connections", f"{clients.lost_connections}", ""),
            ("  answers by status", f"{sum(clients.statuses.values())}", statuses),
        ],
    )
    lines += _rows(
        f"orders (final after {drained_s:.1f} s of draining)",
        [
            ("orders in the database", f"{outcome.orders}", ""),
            ("confirmed", f"{outcome.confirmed}", ""),
            ("cancelled: out of stock", f"{outcome.out_of_stock}", ""),
            ("cancelled: card declined", f"{outcome.declined}", ""),
            ("cancelled: provider silent", f"{outcome.silent_card_timeouts}", "tok_timeout"),
            ("cancelled: timed out (fault)", f"{outcome.fault_timeouts}", ""),
            ("not final", f"{outcome.unfinished}", ""),
            (
                "money held (cents)",
                f"{outcome.captured_cents - outcome.refunded_cents}",
                f"captured {outcome.captured_cents}, refunded {outcome.refunded_cents}",
            ),
        ],
    )
    lines.append("checks")
    for c in checks:
        verdict = "ok" if c.ok else "FAIL"
        bound = f" (allowed {c.allowed})" if c.allowed else ""
        lines.append(f"  {c.name:<30} {c.value:>10}  {verdict}{bound}  {c.detail}".rstrip())
    failed = [c.name for c in checks if not c.ok]
    lines.append("")
    lines.append(f"FAILED: {', '.join(failed)}" if failed else "passed: every check holds")
    return "\n".join(lines)
