"""The embedded Postgres asks every role for its password: no trust, no peer."""

from __future__ import annotations

import stat
import subprocess
import sys
import warnings
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgcourier.embedded import HBA, EmbeddedPostgres


def without_password(url: str, where: Path) -> str:
    """url with no password and a password file that does not exist (nor ~/.pgpass)."""
    return make_conninfo(url, passfile=str(where / "no-such-file"), password="")


def superuser_password(url: str) -> str:
    passfile = conninfo_to_dict(url)["passfile"]
    return Path(str(passfile)).read_text().splitlines()[0].split(":", 4)[4]


def embedded_only(server_url: str) -> None:
    if "passfile" not in conninfo_to_dict(server_url):
        pytest.skip("DATABASE_URL's server: its authentication is its owner's")


def test_the_superuser_logs_in_with_the_url_and_not_without_its_password(
    server_url: str, tmp_path: Path
) -> None:
    embedded_only(server_url)
    with psycopg.connect(server_url) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(without_password(server_url, tmp_path))
    wrong = make_conninfo(without_password(server_url, tmp_path), password="wrong-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong)


def test_every_rule_of_the_embedded_server_asks_for_a_scram_password(server_url: str) -> None:
    embedded_only(server_url)
    with psycopg.connect(server_url) as conn:
        rules = conn.execute("SELECT type, auth_method, error FROM pg_hba_file_rules").fetchall()
    assert {kind for kind, _, _ in rules} == {"local", "host"}  # the socket and TCP
    assert {(method, error) for _, method, error in rules} == {("scram-sha-256", None)}


def test_the_superusers_password_file_is_private_and_not_in_the_url(server_url: str) -> None:
    embedded_only(server_url)
    passfile = Path(str(conninfo_to_dict(server_url)["passfile"]))
    assert stat.S_IMODE(passfile.stat().st_mode) == 0o600
    assert superuser_password(server_url) not in server_url


def test_a_data_folder_created_with_trust_is_converted_on_start(tmp_path: Path) -> None:
    import pgserver

    data_dir = tmp_path / "pgdata"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = pgserver.get_server(data_dir, cleanup_mode="stop")
    trusting = without_password(old.get_uri(), tmp_path)
    with psycopg.connect(trusting) as conn:  # pgserver's folder: anyone is the superuser
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    assert "trust" in (data_dir / "pg_hba.conf").read_text()
    old.cleanup()

    server = EmbeddedPostgres(data_dir)
    try:
        assert (data_dir / "pg_hba.conf").read_text() == HBA
        methods = {line.split()[-1] for line in HBA.splitlines() if not line.startswith("#")}
        assert methods == {"scram-sha-256"}
        with pytest.raises(psycopg.OperationalError, match="no password supplied"):
            psycopg.connect(trusting)
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
        assert stat.S_IMODE(server.password_file.stat().st_mode) == 0o600
        password = superuser_password(server.url)
    finally:
        server.stop()

    # The next start finds the folder converted and keeps the same password.
    again = EmbeddedPostgres(data_dir)
    try:
        assert superuser_password(again.url) == password
        with psycopg.connect(again.url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        again.stop()


STARTS_AND_CONNECTS = """
import sys, psycopg
from pathlib import Path
from pgcourier.embedded import EmbeddedPostgres
server = EmbeddedPostgres(Path(sys.argv[1]))
with psycopg.connect(server.url) as conn:
    print(conn.execute("SELECT current_user").fetchone()[0])
"""


def test_processes_starting_on_one_new_data_folder_at_once_all_get_in(tmp_path: Path) -> None:
    # As test processes do on a fresh clone: the first converts the folder and restarts
    # the server while the others wait (once, one failed to create the folder; once,
    # one started the server in the restart's gap and the restart hung).
    folder = tmp_path / "pgdata"
    starts = [
        subprocess.Popen(
            [sys.executable, "-c", STARTS_AND_CONNECTS, str(folder)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [p.communicate(timeout=90) for p in starts]
    assert [p.returncode for p in starts] == [0, 0, 0], [err[-800:] for _, err in results]
    assert [out.strip() for out, _ in results] == ["postgres"] * 3
