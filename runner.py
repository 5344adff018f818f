"""Brings the system up with one command.

python runner.py          Postgres (embedded unless DATABASE_URL is set), migrations,
                          then waits for Ctrl-C, printing how to reach everything.
python runner.py psql     opens psql on the database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from pgcourier.admin import Admin
from pgcourier.courier import Courier
from pgcourier.errors import PgCourierError
from pgcourier.migrations import migrate_url
from pgcourier.settings import Settings

ROOT = Path(__file__).resolve().parent


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[tuple[str, Path | None]]:
    """(conninfo, directory holding psql or None): DATABASE_URL's, or an embedded server."""
    if settings.database_url:
        yield settings.database_url, None
        return
    from pgcourier.embedded import EmbeddedPostgres

    data_dir = settings.data_dir if settings.data_dir.is_absolute() else ROOT / settings.data_dir
    print(f"starting the embedded Postgres in {data_dir} ...", flush=True)
    server = EmbeddedPostgres(data_dir)
    try:
        yield server.url, server.bin_dir
    finally:
        print("stopping the embedded Postgres", flush=True)
        server.stop()


def psql_path(bin_dir: Path | None) -> str:
    if bin_dir is not None and (bin_dir / "psql").exists():
        return str(bin_dir / "psql")
    found = shutil.which("psql")
    if found is None:
        raise SystemExit("psql is not installed")
    return found


async def show_queues(url: str) -> None:
    async with Courier(url, pool_min_size=1, pool_max_size=1) as courier:
        stats = await Admin(courier).queue_stats()
    if not stats:
        print("queues: none yet")
        return
    print(f"{'queue':<24} {'ready':>7} {'in flight':>9} {'delayed':>7} {'dead':>6}")
    for s in stats:
        print(f"{s.queue:<24} {s.ready:>7} {s.in_flight:>9} {s.delayed:>7} {s.dead:>6}")


async def wait_for_ctrl_c() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def up(url: str, bin_dir: Path | None) -> None:
    applied = await migrate_url(url)
    print("migrations applied:", ", ".join(applied) if applied else "none (up to date)")
    print()
    print(f"database:  {url}")
    print(f"psql:      python runner.py psql   (or: {psql_path(bin_dir)} '{url}')")
    print(f"queues:    DATABASE_URL='{url}' {sys.executable} -m pgcourier queues")
    print()
    await show_queues(url)
    print("\nup; press Ctrl-C to stop", flush=True)
    await wait_for_ctrl_c()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runner.py", description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="up", choices=["up", "psql"])
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        with database(settings) as (url, bin_dir):
            if args.command == "psql":
                return os.spawnv(os.P_WAIT, psql_path(bin_dir), ["psql", url])
            asyncio.run(up(url, bin_dir))
    except PgCourierError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
