"""runner.py's console: over every database of the shop, with its secrets kept out of
the command line and out of the other processes' environment."""

from __future__ import annotations

import json
import os

import pytest

import runner
from services.shared.settings import SERVICES
from services.shared.topology_db import ShopDatabases


def per_service() -> ShopDatabases:
    return ShopDatabases("databases", {s: f"dbname=shop_{s} password=secret-{s}" for s in SERVICES})


def test_the_console_watches_each_services_database_under_its_name() -> None:
    env = runner.console_env(per_service(), "tok")
    named = json.loads(env["PGCOURIER_CONSOLE_DATABASES"])
    assert named == {s: f"dbname=shop_{s} password=secret-{s}" for s in SERVICES}
    assert env["PGCOURIER_CONSOLE_TOKEN"] == "tok"
    one = runner.console_env(ShopDatabases.one("dbname=shop"), "tok")
    assert json.loads(one["PGCOURIER_CONSOLE_DATABASES"]) == {"shop": "dbname=shop"}


def test_the_consoles_command_line_carries_no_url_and_no_token() -> None:
    args = runner.ConsoleProcess("127.0.0.1", 8005).module_args
    assert args == ["-m", "pgcourier", "console", "--host", "127.0.0.1", "--port", "8005"]


def test_the_console_takes_the_port_after_the_services(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOP_CONSOLE_PORT", raising=False)
    assert runner.console_port(None) == 8005
    assert runner.console_port(9001) == 9005
    monkeypatch.setenv("SHOP_CONSOLE_PORT", "7000")
    assert runner.console_port(None) == 7000


def test_the_console_token_is_withheld_from_the_services(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_CONSOLE_TOKEN", "tok")
    runner.withhold_secrets_from_children()
    assert "SHOP_CONSOLE_TOKEN" not in os.environ
