"""A Postgres the suite may restart: the embedded server, or DATABASE_URL's when allowed.

`pg_ctl restart -m immediate` is a crash as far as every client is concerned: every
backend dies at once, in-flight transactions are lost, and the server runs crash
recovery before it accepts connections again.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from pgcourier.embedded import EmbeddedPostgres

# Four HTTP pools and six worker pools of up to 10 connections each, plus each worker's
# LISTEN connection, plus the suite's own: more than Postgres's default of 100.
MIN_CONNECTIONS = 200


@dataclass
class RestartablePostgres:
    url: str
    data_dir: Path
    pg_ctl: str
    run_as: str | int | None = None  # the system user owning the data folder, if not us
    log_file: Path | None = None
    embedded: EmbeddedPostgres | None = None

    def _command(self, *args: str) -> list[str]:
        command = [self.pg_ctl, "-D", str(self.data_dir), *args]
        if self.log_file is not None and args and args[0] in ("start", "restart"):
            command += ["-l", str(self.log_file)]
        return command

    async def restart(self, *, timeout_s: float = 60) -> float:
        """Restarts the server the hard way; returns how long it took (down to accepting)."""
        started = time.monotonic()
        # A file, not a pipe: the new postmaster inherits pg_ctl's output and would hold
        # a pipe open for as long as it runs.
        with tempfile.TemporaryFile() as output:
            proc = await asyncio.create_subprocess_exec(
                *self._command("restart", "-m", "immediate", "-w", "-t", str(int(timeout_s))),
                stdout=output,
                stderr=subprocess.STDOUT,
                user=self.run_as,
            )
            await proc.wait()
            if proc.returncode != 0:
                output.seek(0)
                said = output.read().decode(errors="replace")[-500:]
                raise RuntimeError(f"pg_ctl restart failed ({proc.returncode}): {said}")
        return time.monotonic() - started

    def stop(self) -> None:
        if self.embedded is None:
            return  # not ours to stop
        # After a restart the postmaster is not the one pgserver started, so pgserver
        # would leave it running: stop it ourselves, then let pgserver tidy up.
        subprocess.run(
            self._command("stop", "-m", "fast", "-w"),
            user=self.run_as,
            capture_output=True,
            check=False,
        )
        self.embedded.stop()


def _max_connections(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SHOW max_connections").fetchone()
    assert row is not None
    return int(row[0])


def embedded(data_dir: Path) -> RestartablePostgres:
    """pgserver's server in its own data folder, run by pgserver's system user when root."""
    server = EmbeddedPostgres(data_dir)
    run_as = server._server.system_user  # pgserver runs postgres as 'pgserver' under root
    pg = RestartablePostgres(
        url=server.url,
        data_dir=server.data_dir,
        pg_ctl=str(server.bin_dir / "pg_ctl"),
        run_as=run_as,
        log_file=server.data_dir / "log",
        embedded=server,
    )
    if _max_connections(pg.url) < MIN_CONNECTIONS:
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER SYSTEM SET max_connections = {}").format(
                    sql.Literal(MIN_CONNECTIONS)
                )
            )
        asyncio.run(pg.restart())
    return pg


def external(url: str, data_dir: Path, *, pg_ctl: str | None = None) -> RestartablePostgres:
    """DATABASE_URL's server, restarted with pg_ctl on its data folder (the user said we may).

    pg_ctl runs as the owner of the data folder, as Postgres requires.
    """
    found = pg_ctl or shutil.which("pg_ctl")
    if found is None:
        raise SystemExit("pg_ctl is not on PATH; pass --pg-ctl")
    owner = data_dir.stat().st_uid
    pg = RestartablePostgres(
        url=url,
        data_dir=data_dir,
        pg_ctl=found,
        run_as=None if owner == os.geteuid() else owner,
        # Where the server's own output goes once pg_ctl has restarted it.
        log_file=data_dir / "chaos-restart.log",
    )
    if _max_connections(url) < MIN_CONNECTIONS:
        raise SystemExit(
            f"max_connections on that server is under {MIN_CONNECTIONS}: the shop with two "
            "worker replicas per service needs more"
        )
    return pg
