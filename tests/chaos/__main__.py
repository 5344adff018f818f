"""python -m tests.chaos [--minutes N] [--clients N] ...: the fault suite (`make chaos`).

Runs the whole shop (two worker replicas per consuming service) on a Postgres it may
restart, places orders from concurrent clients while killing workers, crashing Postgres
and dropping LISTEN connections (with a database per service, the default, also
terminating the links' apply workers and killing the links keeper), then checks each
service's tables that nothing was lost, doubled or oversold. Prints a table; exits 1
naming every check that failed.

The server is the embedded one in .pgdata-chaos, never DATABASE_URL's unless
--restart-database-url names its data folder: that server will be restarted with
`pg_ctl restart -m immediate`, so never point it at a server others use.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from services.shared.topology_db import add_topology_arguments

from . import postgres
from .run import Options, run
from .shop import DEFAULT_STEP_TIMEOUT_S

ROOT = Path(__file__).resolve().parent.parent.parent


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos", description=__doc__.split("\n\n")[1]
    )
    parser.add_argument(
        "--minutes", type=float, default=10.0, help="how long the load and faults last"
    )
    parser.add_argument("--clients", type=int, default=16, help="concurrent customers")
    parser.add_argument("--drain-seconds", type=float, default=180.0, help="wait for final orders")
    parser.add_argument("--seed", type=int, default=1, help="which workers die, what is ordered")
    parser.add_argument(
        "--step-timeout",
        type=float,
        default=DEFAULT_STEP_TIMEOUT_S,
        help="SHOP_SAGA_STEP_TIMEOUT (s)",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=ROOT / ".pgdata-chaos", help="the embedded server's folder"
    )
    parser.add_argument(
        "--restart-database-url",
        metavar="PGDATA",
        type=Path,
        help="use DATABASE_URL's server, restarting it with pg_ctl -D PGDATA (it WILL be crashed)",
    )
    parser.add_argument("--pg-ctl", help="pg_ctl to restart DATABASE_URL's server with")
    add_topology_arguments(parser)
    parser.add_argument(
        "--keep-database",
        action="store_true",
        help="keep the run's databases (until the next run on the same server drops them)",
    )
    args = parser.parse_args(argv)
    if min(args.minutes, args.clients, args.drain_seconds, args.step_timeout) <= 0:
        parser.error("every number must be positive")
    if args.restart_database_url and not os.environ.get("DATABASE_URL"):
        parser.error("--restart-database-url needs DATABASE_URL")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    if args.restart_database_url:
        pg = postgres.external(
            os.environ["DATABASE_URL"], args.restart_database_url, pg_ctl=args.pg_ctl
        )
    else:
        pg = postgres.embedded(args.data_dir)
    # The services' logs of the last run, for whoever reads a failure.
    log_dir = ROOT / ".logs" / "chaos"
    shutil.rmtree(log_dir, ignore_errors=True)
    try:
        result = run(
            pg,
            Options(
                seconds=args.minutes * 60,
                log_dir=log_dir,
                clients=args.clients,
                drain_s=args.drain_seconds,
                seed=args.seed,
                step_timeout_s=args.step_timeout,
                keep_database=args.keep_database,
                topology=args.topology,
                link_mode=args.link_mode,
                # The suite's own embedded server only: DATABASE_URL's may hold others'.
                drop_leftovers=not args.restart_database_url,
            ),
        )
    finally:
        pg.stop()
    print()
    print(result.table)
    print(f"service logs: {log_dir}", flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
