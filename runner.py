"""Brings the whole system up with one command.

python runner.py [up] [--replicas N]   Postgres (embedded unless DATABASE_URL is set),
                                       migrations, the four services (HTTP and
                                       workers); prints their URLs; Ctrl-C stops all.
python runner.py demo                  the same, then a scripted scenario through the
                                       HTTP APIs; exits 0 only if every outcome is right.
python runner.py migrate               migrations only (compose.yaml runs this).
python runner.py psql                  psql on the database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pgcourier.admin import Admin
from pgcourier.courier import Courier
from pgcourier.errors import PgCourierError
from pgcourier.settings import Settings
from services.demo import DemoFailed, run_demo
from services.shared.database import shop_migrate
from services.shared.settings import DEFAULT_PORTS
from services.supervisor import Supervisor
from services.topology import process_env, processes

ROOT = Path(__file__).resolve().parent
ADMIN_PASSWORD_FILE = ROOT / ".shop-admin-password"


def kept_admin_password(path: Path = ADMIN_PASSWORD_FILE) -> str:
    """The admin password generated on the first start and kept (git-ignored) for the next.

    The users service creates the admin once and never resets an existing account's
    password; a new one each start would print a password that does not log in.
    """
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_urlsafe(12)
    path.touch(mode=0o600)
    path.write_text(password + "\n")
    return password


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[tuple[str, Path | None]]:
    """(admin conninfo, folder holding psql or None): DATABASE_URL's, or an embedded server."""
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


async def print_queues(url: str) -> None:
    async with Courier(url, pool_min_size=1, pool_max_size=1) as courier:
        stats = await Admin(courier).queue_stats()
    print(f"{'queue':<24} {'ready':>7} {'in flight':>9} {'delayed':>7} {'dead':>6}")
    for s in stats:
        print(f"{s.queue:<24} {s.ready:>7} {s.in_flight:>9} {s.delayed:>7} {s.dead:>6}")


def wait_for_ctrl_c(supervisor: Supervisor) -> None:
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stop:
        supervisor.check_alive()
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runner.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "command", nargs="?", default="up", choices=["up", "demo", "migrate", "psql"]
    )
    parser.add_argument("--replicas", type=int, default=1, help="worker processes per service")
    args = parser.parse_args(argv)
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    demo = args.command == "demo"
    jwt_secret = os.environ.get("SHOP_JWT_SECRET") or secrets.token_urlsafe(32)
    admin_email = os.environ.get("SHOP_ADMIN_EMAIL") or "admin@shop.example"
    admin_password = os.environ.get("SHOP_ADMIN_PASSWORD") or kept_admin_password()
    role_password = os.environ.get("SHOP_DB_PASSWORD") or None
    timeout_s = float(os.environ.get("SHOP_SAGA_STEP_TIMEOUT") or (3 if demo else 10))
    supervisor = Supervisor(log_dir=ROOT / ".logs" if demo else None)
    try:
        with database(Settings.from_env()) as (url, bin_dir):
            if args.command == "psql":
                return os.spawnv(os.P_WAIT, psql_path(bin_dir), ["psql", url])
            applied = asyncio.run(shop_migrate(url, role_password=role_password))
            print("migrations applied:", ", ".join(applied) if applied else "none (up to date)")
            if args.command == "migrate":
                return 0
            try:
                for process in processes(replicas=args.replicas):
                    env = process_env(
                        process,
                        url,
                        jwt_secret=jwt_secret,
                        saga_step_timeout_s=timeout_s,
                        admin_email=admin_email,
                        admin_password=admin_password,
                        role_password=role_password,
                    )
                    supervisor.start(process, env)
                urls = {s: f"http://127.0.0.1:{p}" for s, p in DEFAULT_PORTS.items()}
                supervisor.wait_healthy(urls)
                print(
                    f"\nup: {len(supervisor.running)} processes "
                    f"({args.replicas} worker(s) per consuming service)"
                )
                for service, service_url in urls.items():
                    print(f"  {service:<9} {service_url}   ({service_url}/openapi.json)")
                print(f"  admin     {admin_email} / {admin_password}")
                print(f"  database  {url}   (python runner.py psql)")
                print(f"  queues    DATABASE_URL='{url}' {sys.executable} -m pgcourier queues\n")
                if demo:
                    ok = run_demo(
                        urls,
                        admin_email=admin_email,
                        admin_password=admin_password,
                        saga_step_timeout_s=timeout_s,
                    )
                    print()
                    asyncio.run(print_queues(url))
                    print(f"\ndemo {'passed' if ok else 'FAILED'} (service logs in .logs/)")
                    return 0 if ok else 1
                asyncio.run(print_queues(url))
                print("\npress Ctrl-C to stop", flush=True)
                wait_for_ctrl_c(supervisor)
            finally:
                print("stopping the services", flush=True)
                supervisor.stop_all()
    except (PgCourierError, DemoFailed, RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
