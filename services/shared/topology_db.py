"""Where each service's data lives: one database per service (the default), or one
database for all (what a small deployment wants).

With a database per service, each service's database holds its own schema and the
inbox it consumes; messages to another service's inbox go through pgcourier's
outbox and a link (logical replication by default, a relay when asked), set up here
from the contracts: one link per (sending service, consuming service) pair.

Every URL here is the migrating (owner) role's; services get their own role's
(services/shared/database.py: role_url).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgcourier.errors import ConfigurationError

from . import contracts
from .settings import SERVICES

Topology = Literal["databases", "one"]
LinkMode = Literal["replication", "relay"]
TOPOLOGIES: tuple[Topology, ...] = ("databases", "one")
LINK_MODES: tuple[LinkMode, ...] = ("replication", "relay")


@dataclass(frozen=True, slots=True)
class ShopDatabases:
    """The owner URL of each service's database (all the same in the one topology)."""

    topology: Topology
    urls: Mapping[str, str]
    link_mode: LinkMode = "replication"

    def url(self, service: str) -> str:
        return self.urls[service]

    def distinct_urls(self) -> list[str]:
        """Each database once, in the services' order."""
        return list(dict.fromkeys(self.urls[s] for s in SERVICES if s in self.urls))

    @classmethod
    def one(cls, admin_url: str) -> ShopDatabases:
        return cls("one", {s: admin_url for s in SERVICES})


def database_name(admin_url: str, service: str) -> str:
    """shop_<service>, or <database>_<service> when the admin URL names a database
    other than the server's default one."""
    base = str(conninfo_to_dict(admin_url).get("dbname") or "postgres")
    return f"{'shop' if base == 'postgres' else base}_{service}"


def shop_databases(
    admin_url: str,
    *,
    topology: str = "databases",
    link_mode: str = "replication",
    env: Mapping[str, str] | None = None,
) -> ShopDatabases:
    """SHOP_DATABASE_URL_<SERVICE> (say SHOP_DATABASE_URL_ORDERS) puts a service on a
    database of its own choosing, on any server; the others are databases of
    admin_url's server, named by database_name()."""
    if topology not in TOPOLOGIES:
        raise ConfigurationError(
            f"unknown topology {topology!r}: {' or '.join(repr(t) for t in TOPOLOGIES)}"
        )
    if link_mode not in LINK_MODES:
        raise ConfigurationError(
            f"unknown link mode {link_mode!r}: {' or '.join(repr(m) for m in LINK_MODES)}"
        )
    if topology == "one":
        return ShopDatabases.one(admin_url)
    env = env or {}
    urls = {
        service: env.get(f"SHOP_DATABASE_URL_{service.upper()}")
        or make_conninfo(admin_url, dbname=database_name(admin_url, service))
        for service in SERVICES
    }
    return ShopDatabases("databases", urls, link_mode)


def create_databases(databases: ShopDatabases) -> list[str]:
    """Creates each service's database where it is missing (connecting to its server's
    postgres database with the same credentials); returns the ones created."""
    created = []
    for url in databases.distinct_urls():
        name = str(conninfo_to_dict(url).get("dbname") or "")
        with psycopg.connect(make_conninfo(url, dbname="postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            if exists is None:
                try:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                except psycopg.errors.DuplicateDatabase:
                    continue  # another start made it at the same moment
                created.append(name)
    return created


def inbox_of(service: str) -> str | None:
    for queue, consumer in contracts.CONSUMERS.items():
        if consumer == service:
            return queue
    return None


def link_pairs() -> dict[tuple[str, str], list[str]]:
    """(sending service, consuming service) -> the consumer's queues it sends to, for
    every pair of different services the contracts name."""
    pairs: dict[tuple[str, str], set[str]] = {}
    for c in contracts.CONTRACTS:
        consumer = contracts.CONSUMERS[c.queue]
        if consumer != c.sender:
            pairs.setdefault((c.sender, consumer), set()).add(c.queue)
    return {pair: sorted(queues) for pair, queues in sorted(pairs.items())}


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A topic pattern as pgmq compiles it: `*` one segment, `#` any."""
    escaped = re.escape(pattern).replace(r"\*", "[^.]+").replace(r"\#", ".*")
    return re.compile(f"^{escaped}$")


def publisher(pattern: str, queue: str) -> str:
    """The one service whose events a topic binding carries (the binding lives in its
    database, where publish looks it up)."""
    regex = _pattern_regex(pattern)
    found = {c.sender for c in contracts.CONTRACTS if c.queue == queue and regex.match(c.type)}
    if len(found) != 1:
        raise ConfigurationError(
            f"topic binding {pattern!r} -> {queue}: expected one publishing service "
            f"in the contracts, found {sorted(found) or 'none'}"
        )
    return found.pop()


def add_topology_arguments(parser: argparse.ArgumentParser) -> None:
    """--topology and --link-mode, defaulting to SHOP_TOPOLOGY and SHOP_LINK_MODE, as
    runner.py and everything that starts the shop as it does read them."""
    parser.add_argument(
        "--topology",
        choices=TOPOLOGIES,
        default=os.environ.get("SHOP_TOPOLOGY") or "databases",
        help="a database per service (default), or one for all",
    )
    parser.add_argument(
        "--link-mode",
        choices=LINK_MODES,
        default=os.environ.get("SHOP_LINK_MODE") or "replication",
        help="how messages cross databases: logical replication (default) or relays",
    )
