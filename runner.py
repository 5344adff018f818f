"""Brings the whole system up with one command.

python runner.py [up] [--replicas N]   Postgres (embedded unless DATABASE_URL is set),
                 [--base-port P]       migrations, the four services (HTTP and
                 [--topology T]        workers, on ports P..P+3, default 8001..8004);
                 [--link-mode M]       prints their URLs; restarts a process that
                                       crashes; Ctrl-C (or SIGTERM) stops all.
                                       --topology databases (default: a database per
                                       service, linked by logical replication, or by
                                       relays with --link-mode relay) or one (a
                                       database for all); also SHOP_TOPOLOGY and
                                       SHOP_LINK_MODE.
python runner.py demo                  the same, then a scripted scenario through the
                                       HTTP APIs; exits 0 only if every outcome is right.
python runner.py migrate               migrations only (compose.yaml runs this).
python runner.py keys                  creates the token keys and service secrets
                                       (once, in .shop-keys/) and prints the public
                                       keys, for compose.yaml's SHOP_TOKEN_PUBLIC_KEYS.
python runner.py psql                  psql on the database.

`up` and `demo` also start the live console (python -m pgcourier console) on the
port after the services' (8005 by default, SHOP_CONSOLE_PORT), as the owner role
over every database, with the operator token SHOP_CONSOLE_TOKEN or one kept in
.shop-keys/console.token. So that it can show an order's whole saga after the
fact, every queue keeps handled messages in its archive for SHOP_CONSOLE_HISTORY_S
seconds (default 3600; 0 keeps none).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgcourier.admin import Admin
from pgcourier.courier import Courier
from pgcourier.errors import PgCourierError
from pgcourier.settings import Settings, env_flag
from services.demo import DemoFailed, run_demo
from services.shared.auth import SigningKey, public_key_text, public_keys_parse
from services.shared.database import shop_migrate
from services.shared.metrics import worker_metrics_env, worker_metrics_port
from services.shared.roles import role_name
from services.shared.settings import DEFAULT_PORTS, SERVICES
from services.shared.topology_db import ShopDatabases, add_topology_arguments, shop_databases
from services.supervisor import Supervisor
from services.topology import process_env, processes

ROOT = Path(__file__).resolve().parent
ADMIN_PASSWORD_FILE = ROOT / ".shop-admin-password"
# The service roles' generated database passwords (the embedded server), one file each.
SECRETS_DIR = ROOT / ".shop-secrets"
KEYS_DIR = ROOT / ".shop-keys"
# What stops a start or a running shop with a message (and exit code 1).
FAILURES = (PgCourierError, DemoFailed, RuntimeError, TimeoutError)


def kept_secret(path: Path, *, nbytes: int = 24) -> tuple[str, bool]:
    """(secret, whether it was generated now): generated once, then kept (mode 0600).

    Created with O_EXCL, so two starts at once cannot keep different secrets.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        path.chmod(0o600)  # a file kept by an older version may be readable by others
        return path.read_text().strip(), False
    secret = secrets.token_urlsafe(nbytes)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret, True


def kept_admin_password(path: Path = ADMIN_PASSWORD_FILE) -> str:
    """The admin password generated on the first start and kept (git-ignored) for the next.

    The users service creates the admin once and never resets an existing account's
    password; a new one each start would print a password that does not log in.
    """
    return kept_secret(path, nbytes=12)[0]


def admin_credentials(path: Path = ADMIN_PASSWORD_FILE) -> tuple[str, str]:
    """(the admin password, what to print of it): SHOP_ADMIN_PASSWORD, else the kept one.

    The password is printed once, when it is generated; afterwards only where it is kept.
    """
    given = os.environ.get("SHOP_ADMIN_PASSWORD")
    if given:
        return given, "(password from SHOP_ADMIN_PASSWORD)"
    password, generated = kept_secret(path, nbytes=12)
    kept_in = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    if generated:
        return password, f"/ {password}   (generated now, kept in {kept_in})"
    return password, f"(password in {kept_in})"


def role_passwords(*, generate: bool, folder: Path = SECRETS_DIR) -> dict[str, str | None]:
    """Each service role's database password, by service.

    SHOP_DB_PASSWORD_<SERVICE> (e.g. SHOP_DB_PASSWORD_ORDERS), else SHOP_DB_PASSWORD
    for every role, else (generate: the embedded server) one generated per role and
    kept in folder, else none (the roles keep what they have).
    """
    found: dict[str, str | None] = {}
    for service in SERVICES:
        given = os.environ.get(f"SHOP_DB_PASSWORD_{service.upper()}") or os.environ.get(
            "SHOP_DB_PASSWORD"
        )
        if not given and generate:
            folder.mkdir(mode=0o700, exist_ok=True)
            given = kept_secret(folder / f"{role_name(service)}.password")[0]
        found[service] = given or None
    return found


def withhold_secrets_from_children() -> None:
    """The supervisor passes runner.py's environment on to every child: secrets read
    from it here must not follow (each child gets only its own, from process_env)."""
    for name in list(os.environ):
        if name in ("SHOP_ADMIN_PASSWORD", "SHOP_CONSOLE_TOKEN") or name.startswith(
            "SHOP_DB_PASSWORD"
        ):
            del os.environ[name]


def shown_url(url: str) -> str:
    """A conninfo fit to print: a password in it is replaced by ***."""
    if "password" not in conninfo_to_dict(url):
        return url
    return make_conninfo(url, password="***")


def _write_private(path: Path, data: bytes) -> None:
    """Created 0600 from the start: never readable by others, not even for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


@dataclass(frozen=True, slots=True)
class ShopKeys:
    signing_key_file: Path
    public_keys: str  # every accepted key, comma-separated (SHOP_TOKEN_PUBLIC_KEYS)
    service_secret_files: dict[str, str]

    def settings(self) -> dict[str, Any]:
        """services.topology.process_env's key arguments."""
        return {
            "token_public_keys": self.public_keys,
            "token_private_key_file": str(self.signing_key_file),
            "service_secret_files": self.service_secret_files,
        }


def kept_keys(directory: Path = KEYS_DIR) -> ShopKeys:
    """The token keys and each service's secret, generated on the first start and kept.

    token-signing.pem: the users service's private key (0600). token-public-keys: the
    public keys every service accepts, one a line; the signing key's is added when
    missing. To rotate, remove token-signing.pem and restart: a new key signs, the old
    one's public key still verifies until its line is deleted (after the tokens it
    signed have expired, SHOP_TOKEN_TTL). <service>.secret: each service's own secret.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    signing_file = directory / "token-signing.pem"
    if not signing_file.exists():
        _write_private(signing_file, SigningKey.generate().pem())
    signing_key = SigningKey.from_file(signing_file)
    public_file = directory / "token-public-keys"
    lines = public_file.read_text().split() if public_file.exists() else []
    if signing_key.kid not in public_keys_parse(" ".join(lines)):
        lines.append(public_key_text(signing_key.public_key))
        public_file.write_text("".join(f"{line}\n" for line in lines))
    secret_files = {}
    for service in SERVICES:
        path = directory / f"{service}.secret"
        if not path.exists():
            _write_private(path, (secrets.token_urlsafe(32) + "\n").encode())
        secret_files[service] = str(path)
    return ShopKeys(signing_file, ",".join(lines), secret_files)


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


async def print_queues(databases: ShopDatabases) -> None:
    print(f"{'queue':<24} {'ready':>7} {'in flight':>9} {'delayed':>7} {'dead':>6}")
    for url in databases.distinct_urls():
        async with Courier(url, pool_min_size=1, pool_max_size=1) as courier:
            stats = await Admin(courier).queue_stats()
        for s in stats:
            print(f"{s.queue:<24} {s.ready:>7} {s.in_flight:>9} {s.delayed:>7} {s.dead:>6}")


def print_databases(databases: ShopDatabases) -> None:
    if databases.topology == "one":
        url = databases.url(SERVICES[0])
        print(f"  database  {shown_url(url)}   (python runner.py psql)")
        print(f"  queues    DATABASE_URL='{shown_url(url)}' {sys.executable} -m pgcourier queues")
        return
    print(f"  databases one per service, linked by {databases.link_mode}:")
    for service in SERVICES:
        print(f"    {service:<9} {shown_url(databases.url(service))}")
    example = shown_url(databases.url("orders"))
    print(
        f"  links     DATABASE_URL='{example}' {sys.executable} -m pgcourier links   (and queues)"
    )


@dataclass(frozen=True, slots=True)
class ConsoleProcess:
    """The live console, supervised like the services (services.supervisor.Supervised)."""

    host: str
    port: int
    instance: str = "console"

    @property
    def module_args(self) -> list[str]:
        return ["-m", "pgcourier", "console", "--host", self.host, "--port", str(self.port)]


def console_port(base_port: int | None) -> int:
    given = os.environ.get("SHOP_CONSOLE_PORT")
    if given:
        return int(given)
    return (base_port or DEFAULT_PORTS[SERVICES[0]]) + len(SERVICES)


def console_env(databases: ShopDatabases, token: str) -> dict[str, str]:
    """Every database under its service's name (one, "shop", in the one topology); the
    URLs and the token go through the environment, never the command line (ps)."""
    if databases.topology == "one":
        named = {"shop": databases.url(SERVICES[0])}
    else:
        named = {service: databases.url(service) for service in SERVICES}
    return {"PGCOURIER_CONSOLE_DATABASES": json.dumps(named), "PGCOURIER_CONSOLE_TOKEN": token}


async def keep_history(databases: ShopDatabases, *, retention_s: float) -> None:
    """Turns the archive on for every queue, kept retention_s (the workers prune it),
    so the console can follow an order's saga after its messages were handled."""
    for url in databases.distinct_urls():
        async with Courier(url, pool_min_size=1, pool_max_size=1) as courier:
            for stats in await Admin(courier).queue_stats():
                now = await courier.queue_settings(stats.queue)
                await courier.queue_create(
                    stats.queue,
                    visibility_timeout=now.visibility_timeout_s,
                    max_attempts=now.max_attempts,
                    backoff_base=now.backoff_base_s,
                    backoff_max=now.backoff_max_s,
                    archive=True,
                    archive_retention=retention_s,
                )


def service_ports(base_port: int | None) -> dict[str, int]:
    if base_port is None:
        return dict(DEFAULT_PORTS)
    return {service: base_port + i for i, service in enumerate(SERVICES)}


def taken_ports(ports: dict[str, int], *, host: str = "127.0.0.1") -> list[str]:
    """Why each port a service needs cannot be had: bound (listening) by someone else.

    Without this, a second runner.py would see the first one's services answer its
    health checks, report "up", and only then find its own HTTP processes dead.
    """
    taken = []
    for service, port in ports.items():
        with socket.socket() as s:
            # As uvicorn binds: a port left in TIME_WAIT by an earlier run is free.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                taken.append(f"port {port} ({service}) is already in use: is another runner.py up?")
    return taken


def wait_for_ctrl_c(supervisor: Supervisor, *, poll_s: float = 0.2) -> None:
    """Supervises (restarting crashed children) until SIGINT or SIGTERM.

    Raises CrashLoopError when a child keeps crashing.
    """
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop:
            supervisor.check()
            time.sleep(poll_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runner.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "command", nargs="?", default="up", choices=["up", "demo", "migrate", "psql", "keys"]
    )
    parser.add_argument("--replicas", type=int, default=1, help="worker processes per service")
    add_topology_arguments(parser)
    parser.add_argument(
        "--base-port",
        type=int,
        default=None,
        help="the users service's port; the others follow (default: 8001..8004)",
    )
    args = parser.parse_args(argv)
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    demo = args.command == "demo"
    # SIGTERM while starting up stops what has started, as Ctrl-C does (the children
    # have their own process group: nothing else stops them).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    ports = service_ports(args.base_port)
    host = os.environ.get("SHOP_HOST") or "127.0.0.1"
    console = ConsoleProcess(host, console_port(args.base_port))
    console_url = f"http://127.0.0.1:{console.port}"
    console_token = os.environ.get("SHOP_CONSOLE_TOKEN")
    history_s = float(os.environ.get("SHOP_CONSOLE_HISTORY_S") or 3600)
    if args.command in ("up", "demo"):
        # Before anything starts (the embedded Postgres included), so nothing is left to undo.
        taken = taken_ports({**ports, "console": console.port}, host=host)
        for reason in taken:
            print(f"error: {reason}", file=sys.stderr, flush=True)
        if taken:
            return 1
    keys_dir = Path(os.environ.get("SHOP_KEYS_DIR") or KEYS_DIR)
    if args.command == "keys":
        print(kept_keys(keys_dir).public_keys)
        return 0
    admin_email = os.environ.get("SHOP_ADMIN_EMAIL") or "admin@shop.example"
    # Only `up` and `demo` start the users service, which creates the admin.
    admin_password, admin_note = admin_credentials() if args.command in ("up", "demo") else ("", "")
    # At least 1.5 x 2 hops x (lease + first retry backoff) of the saga's queues
    # (3 s + 0.5 s): the orders service refuses one a crashed worker's lease could outlast.
    timeout_s = float(os.environ.get("SHOP_SAGA_STEP_TIMEOUT") or 15)
    per_batch = env_flag(os.environ, "SHOP_TRANSACTION_PER_BATCH", True)
    supervisor = Supervisor(log_dir=ROOT / ".logs" if demo else None)
    try:
        settings = Settings.from_env()
        passwords = role_passwords(generate=not settings.database_url)
        withhold_secrets_from_children()
        with database(settings) as (url, bin_dir):
            if args.command == "psql":
                return os.spawnv(os.P_WAIT, psql_path(bin_dir), ["psql", url])
            databases = shop_databases(
                url, topology=args.topology, link_mode=args.link_mode, env=os.environ
            )
            applied = asyncio.run(shop_migrate(databases, role_passwords=passwords))
            print("migrations applied:", ", ".join(applied) if applied else "none (up to date)")
            if args.command == "migrate":
                return 0
            keys = kept_keys(keys_dir)
            token_file = keys_dir / "console.token"
            if console_token is None:
                console_token = kept_secret(token_file)[0]
                token_note = f"operator token in {token_file}"
            else:
                token_note = "operator token from SHOP_CONSOLE_TOKEN"
            if history_s > 0:
                asyncio.run(keep_history(databases, retention_s=history_s))
            try:
                for process in processes(replicas=args.replicas, topology=args.topology):
                    env = process_env(
                        process,
                        databases,
                        **keys.settings(),
                        saga_step_timeout_s=timeout_s,
                        admin_email=admin_email,
                        admin_password=admin_password,
                        role_passwords=passwords,
                        ports=ports,
                        transaction_per_batch=per_batch,
                    )
                    env |= worker_metrics_env(process, ports)
                    # The orders service links an order to its saga in the console.
                    supervisor.start(process, {**env, "SHOP_CONSOLE_URL": console_url})
                supervisor.start(console, console_env(databases, console_token))
                urls = {s: f"http://127.0.0.1:{p}" for s, p in ports.items()}
                supervisor.wait_healthy(urls)
                print(
                    f"\nup: {len(supervisor.running)} processes "
                    f"({args.replicas} worker(s) per consuming service)"
                )
                for service, service_url in urls.items():
                    print(f"  {service:<9} {service_url}   ({service_url}/openapi.json)")
                print(f"  console   {console_url}   ({token_note})")
                print(
                    "  metrics   each service's URL + /metrics; worker replica R on its service's"
                    f" port + 1000 x R (orders-worker-1: http://127.0.0.1:"
                    f"{worker_metrics_port(ports['orders'], 1)}/metrics); the queues:"
                    f" {sys.executable} -m pgcourier metrics --port 9191"
                )
                print(f"  admin     {admin_email} {admin_note}")
                print_databases(databases)
                print()
                if demo:
                    ok = run_demo(
                        urls,
                        admin_email=admin_email,
                        admin_password=admin_password,
                        saga_step_timeout_s=timeout_s,
                    )
                    print()
                    asyncio.run(print_queues(databases))
                    print(f"\ndemo {'passed' if ok else 'FAILED'} (service logs in .logs/)")
                    return 0 if ok else 1
                asyncio.run(print_queues(databases))
                print("\npress Ctrl-C to stop", flush=True)
                wait_for_ctrl_c(supervisor)
            except FAILURES as exc:
                # Said before the shutdown lines, so it is the first thing the user reads.
                print(f"error: {exc}", file=sys.stderr, flush=True)
                return 1
            finally:
                print("stopping the services", flush=True)
                supervisor.stop_all()
    except FAILURES as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
