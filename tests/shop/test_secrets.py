"""Database credentials: each role its own password, each process only its own role's."""

from __future__ import annotations

import functools
import io
import json
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import runner
from services.shared.database import role_url
from services.shared.settings import SERVICES
from services.supervisor import Supervisor
from services.topology import LINKS_KEEPER, process_env, processes
from tests.shop.conftest import ROLE_PASSWORDS

SUPERUSER_PASSWORD = "superuser-secret-1"
ADMIN_PASSWORD = "admin-secret-1"


def distinct_passwords() -> dict[str, str]:
    return {s: f"{s}-secret-{i}" for i, s in enumerate(SERVICES)}


def requires_passwords(shop_url: str) -> None:
    if "passfile" not in conninfo_to_dict(shop_url):
        pytest.skip("DATABASE_URL's server: its authentication is its owner's")


def test_a_service_role_logs_in_only_with_its_own_password(shop_url: str, tmp_path: Path) -> None:
    requires_passwords(shop_url)
    # Nor from a password file: neither the admin's nor ~/.pgpass.
    nowhere = str(tmp_path / "no-such-file")
    with psycopg.connect(role_url(shop_url, "orders", ROLE_PASSWORDS["orders"])) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("orders_svc",)
    no_password = make_conninfo(role_url(shop_url, "orders"), passfile=nowhere)
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(no_password)
    for password in ("wrong-password", ROLE_PASSWORDS["products"]):
        url = make_conninfo(role_url(shop_url, "orders", password), passfile=nowhere)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(url)


def test_a_role_url_keeps_nothing_of_the_admins_credentials() -> None:
    admin = (
        f"host=/run/pg dbname=shop user=postgres password={SUPERUSER_PASSWORD} passfile=/x/pgpass"
    )
    url = conninfo_to_dict(role_url(admin, "payments", "pw-1"))
    assert url == {"host": "/run/pg", "dbname": "shop", "user": "payments_svc", "password": "pw-1"}


def test_each_process_environment_holds_only_its_own_roles_password() -> None:
    passwords = distinct_passwords()
    admin_url = f"host=/run/pg dbname=shop user=postgres password={SUPERUSER_PASSWORD}"
    for process in processes(replicas=2):
        env = process_env(
            process,
            admin_url,
            token_public_keys="kid-1 public-key",
            token_private_key_file="/keys/token-signing.pem",
            service_secret_files={s: f"/keys/{s}.secret" for s in passwords},
            saga_step_timeout_s=15,
            admin_email="admin@shop.test",
            admin_password=ADMIN_PASSWORD,
            role_passwords=passwords,
        )
        everything = "\n".join(f"{k}={v}" for k, v in env.items())
        if process == LINKS_KEEPER:
            # The owner's URLs (it prunes outboxes and restarts subscriptions, as
            # migrations run): no service role's password, no admin password.
            assert all(p not in everything for p in passwords.values())
            assert ADMIN_PASSWORD not in everything
            continue
        url = conninfo_to_dict(env["DATABASE_URL"])
        assert url["user"] == f"{process.service}_svc"
        assert url["password"] == passwords[process.service]
        assert "passfile" not in url
        assert SUPERUSER_PASSWORD not in everything, process.instance
        for other, password in passwords.items():
            if other != process.service:
                assert password not in everything, (process.instance, other)
        assert (ADMIN_PASSWORD in everything) == (process.service == "users"), process.instance


def test_role_passwords_are_generated_once_per_role_and_kept_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SHOP_DB_PASSWORD", *(f"SHOP_DB_PASSWORD_{s.upper()}" for s in SERVICES)):
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / ".shop-secrets"
    first = runner.role_passwords(generate=True, folder=folder)
    assert len(set(first.values())) == len(SERVICES)
    assert all(p and len(p) >= 24 for p in first.values())
    assert runner.role_passwords(generate=True, folder=folder) == first
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for service in SERVICES:
        assert stat.S_IMODE((folder / f"{service}_svc.password").stat().st_mode) == 0o600
    # DATABASE_URL's server: given passwords, else none (the roles keep theirs).
    assert runner.role_passwords(generate=False, folder=folder) == dict.fromkeys(SERVICES)
    monkeypatch.setenv("SHOP_DB_PASSWORD", "all-roles")
    monkeypatch.setenv("SHOP_DB_PASSWORD_ORDERS", "orders-own")
    given = runner.role_passwords(generate=False, folder=folder)
    assert given == {**dict.fromkeys(SERVICES, "all-roles"), "orders": "orders-own"}


def test_the_admin_password_is_printed_when_generated_and_never_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHOP_ADMIN_PASSWORD", raising=False)
    path = tmp_path / ".shop-admin-password"
    path.write_text("old-password\n")
    path.chmod(0o644)  # as an older version may have left it
    password, said = runner.admin_credentials(path)
    assert password == "old-password"
    assert password not in said and str(path) in said
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.unlink()
    password, said = runner.admin_credentials(path)
    assert password in said and "generated now" in said
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, said = runner.admin_credentials(path)
    assert again == password and password not in said
    monkeypatch.setenv("SHOP_ADMIN_PASSWORD", "given-password")
    assert runner.admin_credentials(path) == (
        "given-password",
        "(password from SHOP_ADMIN_PASSWORD)",
    )


@dataclass(frozen=True)
class EnvDump:
    """A stand-in for a service process: writes the environment it was started with,
    waits for the others to have written theirs, then crashes (ending runner.main)."""

    service: str
    instance: str
    folder: Path
    count: int
    module_args: list[str] = field(init=False)

    def __post_init__(self) -> None:
        code = (
            "import json, os, sys, time\n"
            f"folder = {str(self.folder)!r}\n"
            f"with open(os.path.join(folder, {self.instance!r} + '.tmp'), 'w') as f:\n"
            "    json.dump(dict(os.environ), f)\n"
            f"os.replace(os.path.join(folder, {self.instance!r} + '.tmp'),"
            f" os.path.join(folder, {self.instance!r} + '.json'))\n"
            f"while len([n for n in os.listdir(folder) if n.endswith('.json')]) < {self.count}:\n"
            "    time.sleep(0.01)\n"
            "sys.exit(3)\n"
        )
        object.__setattr__(self, "module_args", ["-c", code])


def test_no_secret_of_runners_environment_reaches_another_services_process(
    shop_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real runner.main and supervisor, the services replaced by environment dumps."""
    from tests.shop.test_runner import free_port_block

    real = processes(replicas=1, topology="one")
    monkeypatch.setattr(
        runner,
        "processes",
        lambda replicas, topology: [
            EnvDump(p.service, p.instance, tmp_path, len(real)) for p in real
        ],
    )
    monkeypatch.setattr(runner, "Supervisor", functools.partial(Supervisor, restart_backoff_s=0.01))
    for name, value in {
        "DATABASE_URL": shop_url,
        "SHOP_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "SHOP_DB_PASSWORD": "shared-fallback-password",
        **{f"SHOP_DB_PASSWORD_{s.upper()}": p for s, p in ROLE_PASSWORDS.items()},
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setattr(runner.signal, "signal", lambda signum, handler: None)
    # One database: the secrets each process gets do not depend on the topology
    # (process_env's test covers the links keeper), and the test makes no links.
    assert runner.main(["up", "--topology", "one", "--base-port", str(free_port_block())]) == 1
    passfile = conninfo_to_dict(shop_url).get("passfile")
    superuser = Path(str(passfile)).read_text().split(":", 4)[4].strip() if passfile else None

    for process in real:
        env = json.loads((tmp_path / f"{process.instance}.json").read_text())
        assert not [k for k in env if k.startswith("SHOP_DB_PASSWORD")], process.instance
        url = conninfo_to_dict(env["DATABASE_URL"])
        assert url["password"] == ROLE_PASSWORDS[process.service]
        assert "passfile" not in url
        everything = "\n".join(f"{k}={v}" for k, v in env.items())
        for other, password in ROLE_PASSWORDS.items():
            if other != process.service:
                assert password not in everything, (process.instance, other)
        assert (ADMIN_PASSWORD in everything) == (process.service == "users"), process.instance
        assert superuser is None or superuser not in everything, process.instance
