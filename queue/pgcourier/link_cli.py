"""The CLI's commands for links between databases (see links.py): node, link, links,
relay and keep-links. The database of --database-url is the sender (link, relay)
or the one looked at (node, links)."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg

from . import links
from .keeper import LinkKeeper
from .relay import Relay


def add_parsers(
    sub: Any,
    *,
    common: argparse.ArgumentParser,
    listing: argparse.ArgumentParser,
    positive_int: Callable[[str], int],
    positive_float: Callable[[str], float],
) -> None:
    p = sub.add_parser(
        "node", parents=[common], help="show (or set) this database's name among linked ones"
    )
    p.add_argument("name", nargs="?", help="the new name (1-20 of a-z, 0-9, _)")

    p = sub.add_parser(
        "link",
        parents=[common],
        help="let this database send to queues of another (one command per link; idempotent)",
    )
    p.add_argument("--to", required=True, metavar="URL", help="the receiving database (owner)")
    p.add_argument(
        "--queue", action="append", required=True, help="a receiver's queue (repeat for more)"
    )
    p.add_argument(
        "--relay",
        action="store_true",
        help="carried by `pgcourier relay` instead of logical replication",
    )
    p.add_argument(
        "--resync", action="store_true", help="deliver again every row this database still keeps"
    )
    p.add_argument(
        "--subscription-conninfo",
        metavar="CONNINFO",
        help="how the receiving server reaches this one (default: --database-url)",
    )

    sub.add_parser("links", parents=[common, listing], help="links to and from this database")

    p = sub.add_parser(
        "relay", parents=[common], help="carry this database's outbox to a receiver, until Ctrl-C"
    )
    p.add_argument("--to", required=True, metavar="URL", help="the receiving database (owner)")
    p.add_argument("--batch-size", type=positive_int, default=500)
    p.add_argument("--poll-interval", type=positive_float, default=1.0)

    p = sub.add_parser(
        "keep-links",
        parents=[common],
        help="prune confirmed outbox rows and restart stalled subscriptions, until Ctrl-C",
    )
    p.add_argument("urls", nargs="*", metavar="URL", help="more databases to keep")
    p.add_argument("--interval", type=positive_float, default=1.0)


async def _node(conn: psycopg.AsyncConnection, url: str, args: argparse.Namespace) -> int:
    if args.name:
        await links.set_node_name(conn, args.name)
    print(await links.node_name(conn))
    return 0


async def _link(conn: psycopg.AsyncConnection, url: str, args: argparse.Namespace) -> int:
    report = await links.link(
        url,
        args.to,
        queues=args.queue,
        mode="relay" if args.relay else "replication",
        subscription_conninfo=args.subscription_conninfo,
        resync=args.resync,
    )
    print(f"{report.sender} -> {report.receiver} ({report.mode}): {', '.join(report.queues)}")
    for what in report.created:
        print(f"  created {what}")
    if report.resent:
        print(f"  re-sent {report.resent} kept rows (the receiver skips those it has)")
    if report.mode == "relay":
        print("  run the relay: python -m pgcourier relay --database-url SENDER --to RECEIVER")
    return 0


async def _links(conn: psycopg.AsyncConnection, url: str, args: argparse.Namespace) -> int:
    from .cli import _listing  # the CLI's one listing shape

    _listing(
        args,
        await links.links(conn),
        empty="no links (set one up with: pgcourier link --to URL --queue QUEUE)",
        headers=[
            "DIRECTION",
            "NODE",
            "MODE",
            "STATE",
            "LAG_BYTES",
            "LAG_S",
            "RETAINED",
            "EXPIRED",
            "SLOT",
            "SLOT_STATUS",
            "LAST_ERROR",
        ],
    )
    return 0


async def _until_signal(run: Callable[[asyncio.Event], Any]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run(stop)
    return 0


async def _relay(conn: psycopg.AsyncConnection, url: str, args: argparse.Namespace) -> int:
    relay = Relay(url, args.to, batch_size=args.batch_size, poll_interval=args.poll_interval)
    print("relaying (Ctrl-C to stop)", flush=True)
    code = await _until_signal(relay.run)
    print(f"relayed {relay.relayed} rows")
    return code


async def _keep_links(conn: psycopg.AsyncConnection, url: str, args: argparse.Namespace) -> int:
    keeper = LinkKeeper([url, *args.urls], interval=args.interval)
    print("keeping links (Ctrl-C to stop)", flush=True)
    code = await _until_signal(keeper.run)
    print(f"pruned {keeper.pruned} outbox rows, restarted {keeper.nudged} subscriptions")
    return code


COMMANDS: dict[
    str, Callable[[psycopg.AsyncConnection, str, argparse.Namespace], Awaitable[int]]
] = {
    "node": _node,
    "link": _link,
    "links": _links,
    "relay": _relay,
    "keep-links": _keep_links,
}


def names() -> Sequence[str]:
    return tuple(COMMANDS)
