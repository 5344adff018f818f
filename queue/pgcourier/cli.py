"""`python -m pgcourier` (or `pgcourier`): inspect and repair queues from a shell.

The database is --database-url, else PGCOURIER_DATABASE_URL or DATABASE_URL. Errors
print `error: ...` and exit 1; usage errors and a missing database exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from . import console_cli, link_cli, metrics
from .admin import Admin
from .courier import Courier
from .errors import DatabaseError, PgCourierError, QueueNotFoundError, wrap_driver_error
from .migrations import migrate
from .naming import check_queue_name
from .settings import Settings

EXIT_ERROR = 1
EXIT_USAGE = 2
NO_DATABASE = (
    "no database given: pass --database-url URL or set DATABASE_URL "
    "(or PGCOURIER_DATABASE_URL) to a postgresql:// URL or conninfo string"
)
_CELL_MAX = 60


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    # --database-url is accepted before or after the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="database to use (default: $PGCOURIER_DATABASE_URL or $DATABASE_URL)",
    )
    listing = argparse.ArgumentParser(add_help=False)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")

    parser = argparse.ArgumentParser(
        prog="pgcourier", description="Inspect and repair pgcourier queues.", parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("queues", parents=[common, listing], help="counts for every queue")
    for name, what, default in (("peek", "messages", 10), ("dead", "dead letters", 50)):
        p = sub.add_parser(name, parents=[common, listing], help=f"list a queue's {what}")
        p.add_argument("queue")
        p.add_argument(
            "-n",
            type=_positive_int,
            default=default,
            metavar="N",
            dest="limit",
            help=f"show at most N, oldest first (default {default})",
        )
    p = sub.add_parser("retry-dead", parents=[common], help="put dead letters back on the queue")
    p.add_argument("queue")
    p.add_argument(
        "--id", type=int, action="append", dest="ids", metavar="ID", help="only this dead letter"
    )
    p = sub.add_parser("purge", parents=[common], help="delete every message of a queue")
    p.add_argument("queue")
    p.add_argument("--yes", action="store_true", help="really delete")
    p = sub.add_parser(
        "create",
        parents=[common],
        help="create a queue or change its settings",
        description="Creates the queue, or updates it: settings not given keep their value "
        "(for a new queue: visibility timeout 30 s, 5 attempts, no archive).",
    )
    p.add_argument("queue")
    p.add_argument(
        "--visibility-timeout", type=_positive_float, metavar="S", help="claim lease, seconds"
    )
    p.add_argument("--max-attempts", type=_positive_int, metavar="N", help="before dead letter")
    p.add_argument(
        "--archive",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep acknowledged messages in the archive table",
    )
    sub.add_parser("workers", parents=[common, listing], help="worker processes and their liveness")
    for name, what in (
        ("grant-send", "let a database role send to a queue (insert only)"),
        ("grant-consume", "let a database role consume a queue"),
        ("revoke", "take back every right a role has on a queue"),
    ):
        p = sub.add_parser(name, parents=[common], help=what)
        p.add_argument("queue")
        p.add_argument("role")
    sub.add_parser(
        "privileges", parents=[common, listing], help="who may send to and consume each queue"
    )
    sub.add_parser("migrate", parents=[common], help="install or upgrade the schema")
    p = sub.add_parser("metrics", parents=[common], help="serve the queues' figures to Prometheus")
    p.add_argument("--port", type=_positive_int, default=9191, help="default 9191")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    link_cli.add_parsers(
        sub,
        common=common,
        listing=listing,
        positive_int=_positive_int,
        positive_float=_positive_float,
    )
    console_cli.add_parser(sub, common=common)
    return parser


# -- output -------------------------------------------------------------------


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, float):
        return f"{value:.1f}"
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    text = " ".join(text.split())
    return text if len(text) <= _CELL_MAX else text[: _CELL_MAX - 3] + "..."


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [
        all(isinstance(row[i], int | float) or row[i] is None for row in rows)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(r) for r in cells)])


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _print_json(items: list[dict[str, Any]]) -> None:
    print(json.dumps(items, indent=2, default=_json_default))


def _listing(
    args: argparse.Namespace,
    items: Sequence[Any],
    *,
    empty: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[object]] | None = None,
) -> None:
    """JSON when asked (--json), else `empty` or an aligned table (rows default to each
    item's fields)."""
    if args.json:
        _print_json([dataclasses.asdict(i) for i in items])
    elif not items:
        print(empty)
    else:
        print(
            _table(headers, rows if rows is not None else [dataclasses.astuple(i) for i in items])
        )


# -- commands -------------------------------------------------------------------


async def _queues(admin: Admin, conn: psycopg.AsyncConnection, args: argparse.Namespace) -> int:
    _listing(
        args,
        await admin.queue_stats(conn=conn),
        empty="no queues (create one with: pgcourier create QUEUE)",
        headers=["QUEUE", "READY", "IN_FLIGHT", "DELAYED", "DEAD", "OLDEST_READY_AGE_S"],
    )
    return 0


async def _workers(admin: Admin, conn: psycopg.AsyncConnection, args: argparse.Namespace) -> int:
    workers = await admin.workers(conn=conn)
    _listing(
        args,
        workers,
        empty="no worker has reported in",
        headers=["NAME", "HOST", "PID", "QUEUES", "BEAT_AT", "LAST_CLAIM_AT", "LISTENING", "ALIVE"],
        rows=[
            (
                w.name,
                w.hostname,
                w.pid,
                ",".join(w.queues),
                w.beat_at,
                w.last_claim_at,
                w.listening,
                w.alive,
            )
            for w in workers
        ],
    )
    return 0


async def _grant(admin: Admin, conn: psycopg.AsyncConnection, args: argparse.Namespace) -> int:
    action = {
        "grant-send": admin.grant_send,
        "grant-consume": admin.grant_consume,
        "revoke": admin.revoke,
    }[args.command]
    await action(args.queue, args.role, conn=conn)
    print(f"{args.command} {args.queue} {args.role}: done")
    return 0


async def _privileges(admin: Admin, conn: psycopg.AsyncConnection, args: argparse.Namespace) -> int:
    _listing(
        args,
        await admin.privileges(conn=conn),
        empty="no role has rights on any queue (the owner has them all)",
        headers=["QUEUE", "ROLE", "SEND", "CONSUME"],
    )
    return 0


async def _peek(admin: Admin, conn: psycopg.AsyncConnection, args: argparse.Namespace) -> int:
    messages = await admin.peek(args.queue, limit=args.limit, conn=conn)
    if args.json:
        _print_json([dataclasses.asdict(m) for m in messages])
    elif not messages:
        print(f"queue {args.queue!r} is empty")
    else:
        headers = ["MSG_ID", "READ_CT", "ENQUEUED_AT", "VISIBLE_AT", "TYPE", "PAYLOAD"]
        rows = [
            (m.msg_id, m.read_ct, m.enqueued_at, m.visible_at, m.type, m.payload) for m in messages
        ]
        print(_table(headers, rows))
    return 0


async def _dead(admin: Admin, conn: psycopg.AsyncConnection, args: argparse.Namespace) -> int:
    letters = await admin.dead_letters(args.queue, limit=args.limit, conn=conn)
    if args.json:
        _print_json([{**dataclasses.asdict(d), "last_error": d.last_error} for d in letters])
    elif not letters:
        print(f"queue {args.queue!r} has no dead letters")
    else:
        headers = ["ID", "MSG_ID", "TYPE", "ATTEMPTS", "DEAD_AT", "LAST_ERROR"]
        rows = [
            (d.dead_letter_id, d.msg_id, d.type, d.attempts, d.dead_at, d.last_error)
            for d in letters
        ]
        print(_table(headers, rows))
    return 0


async def _retry_dead(admin: Admin, conn: psycopg.AsyncConnection, args: argparse.Namespace) -> int:
    count = await admin.dead_letter_retry(args.queue, dead_letter_ids=args.ids, conn=conn)
    print(f"requeued {count} dead letter{'' if count == 1 else 's'} on {args.queue!r}")
    if args.ids is not None and count < len(set(args.ids)):
        missing = len(set(args.ids)) - count
        print(
            f"note: {missing} of the given ids are not dead letters of {args.queue!r}",
            file=sys.stderr,
        )
    return 0


async def _purge(admin: Admin, conn: psycopg.AsyncConnection, args: argparse.Namespace) -> int:
    if not args.yes:
        stats = {s.queue: s for s in await admin.queue_stats(conn=conn)}
        if args.queue not in stats:
            raise QueueNotFoundError(args.queue)
        s = stats[args.queue]
        n = s.ready + s.in_flight + s.delayed
        print(
            f"error: refusing to purge queue {args.queue!r} without --yes: it would delete "
            f"{n} message{'' if n == 1 else 's'}, in flight ones included",
            file=sys.stderr,
        )
        return EXIT_ERROR
    count = await admin.queue_purge(args.queue, conn=conn)
    print(f"deleted {count} message{'' if count == 1 else 's'} from {args.queue!r}")
    return 0


async def _create(admin: Admin, conn: psycopg.AsyncConnection, args: argparse.Namespace) -> int:
    courier = admin.courier
    # Options not given keep the queue's current settings rather than reset them.
    options: dict[str, Any] = {}
    try:
        now = await courier.queue_settings(args.queue, conn=conn)
        existed = True
        options = {
            "visibility_timeout": now.visibility_timeout_s,
            "max_attempts": now.max_attempts,
            "backoff_base": now.backoff_base_s,
            "backoff_max": now.backoff_max_s,
            "archive": now.archive,
            "archive_retention": now.archive_retention_s,
        }
    except QueueNotFoundError:
        existed = False
    for key in ("visibility_timeout", "max_attempts", "archive"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    await courier.queue_create(args.queue, conn=conn, **options)
    s = await courier.queue_settings(args.queue, conn=conn)
    print(
        f"{'updated' if existed else 'created'} queue {args.queue!r}: visibility timeout "
        f"{s.visibility_timeout_s:g}s, max attempts {s.max_attempts}, "
        f"archive {'on' if s.archive else 'off'}"
    )
    return 0


async def _migrate(admin: Admin, conn: psycopg.AsyncConnection, args: argparse.Namespace) -> int:
    applied = await migrate(conn)
    for version in applied:
        print(f"applied {version}")
    if not applied:
        print("schema is up to date")
    return 0


COMMANDS = {
    "queues": _queues,
    "peek": _peek,
    "dead": _dead,
    "retry-dead": _retry_dead,
    "purge": _purge,
    "create": _create,
    "workers": _workers,
    "grant-send": _grant,
    "grant-consume": _grant,
    "revoke": _grant,
    "privileges": _privileges,
    "migrate": _migrate,
}


async def _connect(url: str) -> psycopg.AsyncConnection:
    options: dict[str, Any] = {}
    try:
        if "connect_timeout" not in conninfo_to_dict(url) and not os.environ.get(
            "PGCONNECT_TIMEOUT"
        ):
            options["connect_timeout"] = 10
        return await psycopg.AsyncConnection.connect(url, autocommit=True, **options)
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot connect to the database: {str(exc).strip()}") from exc


async def run(args: argparse.Namespace, url: str) -> int:
    # One autocommit connection, passed to every call: a one-shot command needs no
    # pool, and a bad URL fails at once with the driver's reason.
    async with await _connect(url) as conn:
        if args.command in link_cli.COMMANDS:
            return await link_cli.COMMANDS[args.command](conn, url, args)
        admin = Admin(Courier(url, pool_min_size=1, pool_max_size=1))
        return await COMMANDS[args.command](admin, conn, args)


def _schema_hint(exc: PgCourierError) -> str | None:
    cause = str(exc.__cause__ or "")
    missing = isinstance(
        exc.__cause__,
        psycopg.errors.UndefinedTable
        | psycopg.errors.UndefinedFunction
        | psycopg.errors.InvalidSchemaName,
    )
    if missing and any(name in cause for name in ("pgmq.meta", "pgcourier.", '"pgcourier"')):
        return "the pgcourier schema is not installed in this database: run `pgcourier migrate`"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command == "console":  # a server with databases of its own, not one command
        return console_cli.run(args)
    try:
        queue = getattr(args, "queue", None)  # a list where repeatable (link --queue)
        for name in queue if isinstance(queue, list) else [] if queue is None else [queue]:
            check_queue_name(name)
        url = getattr(args, "database_url", None) or Settings.from_env().database_url
        if not url:
            print(f"error: {NO_DATABASE}", file=sys.stderr)
            return EXIT_USAGE
        if args.command == "metrics":  # serves until stopped: no one-shot connection
            return metrics.serve_until_interrupted(url, port=args.port, host=args.host)
        return asyncio.run(run(args, url))
    except PgCourierError as exc:
        print(f"error: {_schema_hint(exc) or exc}", file=sys.stderr)
        return EXIT_ERROR
    except psycopg.Error as exc:
        print(f"error: {wrap_driver_error(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
