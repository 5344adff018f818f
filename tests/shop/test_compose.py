"""compose.yaml must describe the same processes and settings as runner.py."""

import json
import re
from pathlib import Path

import yaml
from psycopg.conninfo import conninfo_to_dict

from services.shared.metrics import worker_metrics_port
from services.shared.settings import DEFAULT_PORTS, SERVICES
from services.shared.topology_db import database_name
from services.topology import LINKS_KEEPER, process_env, processes

COMPOSE = Path(__file__).resolve().parents[2] / "compose.yaml"


def compose_services() -> dict[str, dict]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_compose_runs_every_runner_process_with_the_same_command() -> None:
    services = compose_services()
    expected = {p.name for p in processes()}
    assert set(services) - {"postgres", "migrate", "console"} == expected
    for process in processes():
        assert services[process.name]["command"] == ["python", *process.module_args]


def test_compose_gives_each_process_the_settings_runner_gives_it() -> None:
    services = compose_services()
    for process in processes():
        runner_env = process_env(
            process,
            "postgresql://admin@db/shop",
            token_public_keys="k",
            token_private_key_file="/keys/token-signing.pem",
            service_secret_files={s: f"/keys/{s}.secret" for s in DEFAULT_PORTS},
            saga_step_timeout_s=1,
            admin_email="a@b.c",
            admin_password="p",
        )
        compose_env = services[process.name]["environment"]
        assert set(runner_env) <= set(compose_env), process.name
        migrate_url = re.sub(
            r"\$\{[^}]*\}", "pw", services["migrate"]["environment"]["DATABASE_URL"]
        )
        if process == LINKS_KEEPER:
            # The owner of each service's database, as migrate connects.
            for service in SERVICES:
                url = re.sub(
                    r"\$\{[^}]*\}", "pw", compose_env[f"SHOP_DATABASE_URL_{service.upper()}"]
                )
                assert conninfo_to_dict(url)["user"] == "postgres"
                assert conninfo_to_dict(url)["dbname"] == database_name(migrate_url, service)
            continue
        assert compose_env["PORT"] == str(DEFAULT_PORTS[process.service])
        # Each service connects as its own role, to its own database migrate prepared.
        url = re.sub(r"\$\{[^}]*\}", "pw", compose_env["DATABASE_URL"])
        assert conninfo_to_dict(url)["user"] == f"{process.service}_svc"
        assert conninfo_to_dict(url)["dbname"] == database_name(migrate_url, process.service)


def test_compose_asks_every_login_for_a_password_and_gives_each_service_only_its_own() -> None:
    services = compose_services()
    postgres = services["postgres"]["environment"]
    assert postgres["POSTGRES_HOST_AUTH_METHOD"] == "scram-sha-256"
    assert "--auth-local=scram-sha-256" in postgres["POSTGRES_INITDB_ARGS"].split()
    assert "--auth-host=scram-sha-256" in postgres["POSTGRES_INITDB_ARGS"].split()
    # Required, with no default anyone could guess.
    assert postgres["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    migrate = services["migrate"]["environment"]
    for service in SERVICES:
        assert migrate[f"SHOP_DB_PASSWORD_{service.upper()}"].startswith(
            f"${{SHOP_DB_PASSWORD_{service.upper()}:?"
        )
    for process in processes():
        env = " ".join(str(v) for v in services[process.name]["environment"].values())
        variables = set(re.findall(r"\$\{(\w+)", env))
        secrets = {v for v in variables if "PASSWORD" in v}
        own = f"SHOP_DB_PASSWORD_{process.service.upper()}"
        expected = {own, "SHOP_ADMIN_PASSWORD"} if process.service == "users" else {own}
        if process == LINKS_KEEPER:
            expected = {"POSTGRES_PASSWORD"}  # the owner's, as migrate has it
        assert secrets == expected, process.name


def test_compose_waits_for_migrations_and_checks_health() -> None:
    services = compose_services()
    assert services["migrate"]["command"] == ["python", "runner.py", "migrate"]
    assert "healthcheck" in services["postgres"]
    for process in processes():
        spec = services[process.name]
        assert spec["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        if process.role == "http":
            assert "/health" in " ".join(spec["healthcheck"]["test"])


def test_compose_gives_the_token_signing_key_to_users_alone() -> None:
    services = compose_services()
    for process in processes():
        spec = services[process.name]
        names = {s if isinstance(s, str) else s["source"] for s in spec.get("secrets", [])}
        if process == LINKS_KEEPER:
            assert not names  # signs nothing, verifies nothing
            continue
        env = spec["environment"]
        if process.service == "users":
            assert "token_signing_key" in names
            assert env["SHOP_TOKEN_PRIVATE_KEY_FILE"] == "/run/secrets/token_signing_key"
        else:
            assert "token_signing_key" not in names, process.name
            assert "SHOP_TOKEN_PRIVATE_KEY_FILE" not in env, process.name
        # Each service its own secret, none another's.
        assert f"{process.service}_secret" in names
        assert all(not n.endswith("_secret") or n == f"{process.service}_secret" for n in names)
        assert "SHOP_TOKEN_PUBLIC_KEYS" in env


def test_compose_runs_the_console_over_every_services_database_on_loopback_only() -> None:
    console = compose_services()["console"]
    assert console["command"][:4] == ["python", "-m", "pgcourier", "console"]
    assert console["ports"] == ["127.0.0.1:8005:8005"]
    databases = json.loads(
        re.sub(
            r"\$\{POSTGRES_PASSWORD[^}]*\}",
            "pw",
            console["environment"]["PGCOURIER_CONSOLE_DATABASES"],
        )
    )
    assert {name: conninfo_to_dict(url)["dbname"] for name, url in databases.items()} == {
        service: database_name("postgresql://postgres@postgres/shop", service)
        for service in SERVICES
    }
    orders = compose_services()["orders-http"]["environment"]
    assert orders["SHOP_CONSOLE_URL"].endswith("127.0.0.1:8005}")


def test_compose_workers_serve_their_metrics_on_the_port_runner_gives_the_first_replica() -> None:
    services = compose_services()
    for process in processes():
        if process.role != "worker":
            continue
        compose_env = services[process.name]["environment"]
        assert compose_env["SHOP_METRICS_PORT"] == str(
            worker_metrics_port(DEFAULT_PORTS[process.service], 1)
        ), process.name
