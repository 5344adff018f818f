"""An embedded PostgreSQL for development and tests, from the `pgserver` wheel.

Postgres refuses to run as root; pgserver runs it as a dedicated system user when
it must. The server is shared by every process using the same data folder and
stopped when the last one exits.

pgserver initialises its folder with `trust` (anyone may log in as any role, the
superuser included). Here every start makes sure it is not so: pg_hba.conf asks
every role for its password (scram-sha-256) over the socket and TCP alike, and the
superuser's password, generated once, is kept in a libpq password file (mode 0600)
inside the data folder. `url` names that file, so the password itself is never in
a URL, a command line or an environment.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from .errors import ConfigurationError

SUPERUSER = "postgres"
PASSFILE_NAME = "pgcourier-superuser.pgpass"
# The whole of pg_hba.conf: the first line tells a folder already converted.
HBA = """\
# pgcourier: every role proves its password (scram-sha-256); no trust, no peer.
local   all             all                     scram-sha-256
host    all             all     127.0.0.1/32    scram-sha-256
host    all             all     ::1/128         scram-sha-256
local   replication     all                     scram-sha-256
host    replication     all     127.0.0.1/32    scram-sha-256
host    replication     all     ::1/128         scram-sha-256
"""

# Enough for a shop of four databases linked both ways (seven links), and tests.
REPLICATION_SETTINGS = {
    "wal_level": "logical",
    "max_replication_slots": "64",
    "max_wal_senders": "64",
    "max_logical_replication_workers": "32",
    "max_worker_processes": "48",
}


class EmbeddedPostgres:
    def __init__(self, data_dir: Path, *, reload_timeout_s: float = 10) -> None:
        try:
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset (as for root), harmlessly.
                warnings.simplefilter("ignore")
                import pgserver
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigurationError(
                "no DATABASE_URL is set and the embedded Postgres is not installed "
                "(pip install 'pgcourier[embedded]')"
            ) from exc
        data_dir = data_dir.resolve()
        # Made here, not by pgserver: it checks, then creates, and of two processes
        # starting on a new folder at once (test processes, say) the second fails.
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        # One process at a time from here: the first to start on a new folder converts
        # it and restarts the server, and another starting meanwhile would start the
        # server itself in the gap (leaving the restart waiting for a postmaster that
        # could not start beside it).
        with _folder_locked(data_dir):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._server = pgserver.get_server(data_dir, cleanup_mode="stop")
            self._require_passwords(reload_timeout_s=reload_timeout_s)
            self._require_logical_replication()

    @property
    def password_file(self) -> Path:
        """The superuser's password, as a libpq password file (`passfile`), mode 0600."""
        return self.data_dir / PASSFILE_NAME

    @property
    def url(self) -> str:
        """The superuser's URL; its password is read from password_file."""
        return self.database_url(SUPERUSER)

    def database_url(self, database: str) -> str:
        return self._uri(database, self.password_file)

    def _uri(self, database: str, passfile: Path) -> str:
        params = {
            k: str(v)
            for k, v in conninfo_to_dict(self._server.get_uri(database=database)).items()
            if k not in ("user", "dbname", "password")
        }
        params["passfile"] = str(passfile)
        query = "&".join(f"{k}={quote(v, safe='/')}" for k, v in params.items())
        return f"postgresql://{SUPERUSER}@/{quote(database)}?{query}"

    @property
    def bin_dir(self) -> Path:
        from pgserver._commands import POSTGRES_BIN_PATH

        return Path(POSTGRES_BIN_PATH)

    def stop(self) -> None:
        self._server.cleanup()

    def _require_logical_replication(self) -> None:
        """Links between databases (links.py) use logical replication: wal_level must
        be logical, with room for a slot, a sender and an apply worker per link. Set
        once, then the server is restarted (once in the folder's life)."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            changed = False
            for name, wanted in REPLICATION_SETTINGS.items():
                row = conn.execute("SELECT current_setting(%s)", [name]).fetchone()
                current = row[0] if row else None
                if current == wanted or (
                    wanted.isdigit() and current and int(current) >= int(wanted)
                ):
                    continue
                conn.execute(
                    sql.SQL("ALTER SYSTEM SET {} = {}").format(
                        sql.Identifier(name), sql.Literal(wanted)
                    )
                )
                changed = True
        if not changed:
            return
        from pgserver._commands import pg_ctl
        from pgserver.postgres_server import PostmasterInfo

        server = self._server
        pg_ctl(
            ["-w", "-l", str(server.log), "restart"],
            pgdata=server.pgdata,
            user=server.system_user,
            timeout=60,
        )
        # pgserver stops the server it knows by its process: tell it the new one.
        server._postmaster_info = PostmasterInfo.read_from_pgdata(server.pgdata)

    def _require_passwords(self, *, reload_timeout_s: float) -> None:
        """Converts a folder still on pgserver's trust; a no-op once converted."""
        hba = self.data_dir / "pg_hba.conf"
        if hba.read_text() == HBA:
            if not self.password_file.exists():
                raise ConfigurationError(
                    f"{self.password_file} (the superuser's password) is missing, and "
                    f"{hba} asks for it: restore the file, or start from a new data folder"
                )
            return
        password = _kept_password(self.password_file)
        # While pg_hba.conf still trusts, libpq is not asked for the password; once it
        # asks (a half-done conversion, or rules someone wrote), the file answers.
        with psycopg.connect(self.url, autocommit=True) as conn:
            # The SCRAM verifier, computed here: the clear password never reaches the
            # server (nor its statement log).
            verifier = conn.pgconn.encrypt_password(
                password.encode(), SUPERUSER.encode(), b"scram-sha-256"
            )
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(SUPERUSER), sql.Literal(verifier.decode())
                )
            )
            # Rewritten in place: the file keeps its owner (pgserver's system user as root).
            hba.write_text(HBA)
            conn.execute("SELECT pg_reload_conf()")
        self._wait_until_passwords_required(timeout_s=reload_timeout_s)

    def _wait_until_passwords_required(self, *, timeout_s: float) -> None:
        """The reload is asynchronous: returns once a login without a password fails."""
        # A password file that does not exist: libpq must not find one (~/.pgpass).
        anonymous = self._uri(SUPERUSER, self.data_dir / "no-such-file")
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                psycopg.connect(anonymous, connect_timeout=5).close()
            except psycopg.OperationalError:
                return
            if time.monotonic() > deadline:
                raise ConfigurationError(
                    f"the embedded Postgres in {self.data_dir} still lets the superuser in "
                    "without a password after pg_hba.conf was rewritten and reloaded"
                )
            time.sleep(0.02)


def _kept_password(path: Path) -> str:
    """The password in a libpq password file; a new one is generated the first time."""
    if path.exists():
        path.chmod(0o600)
        line = path.read_text().splitlines()[0]
        return line.split(":", 4)[4]
    password = secrets.token_urlsafe(24)  # no ':' or '\\', which the file format escapes
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"*:*:*:{SUPERUSER}:{password}\n")
    return password


@contextlib.contextmanager
def _folder_locked(folder: Path) -> Iterator[None]:
    """Processes starting on the same folder at once convert it one at a time."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
