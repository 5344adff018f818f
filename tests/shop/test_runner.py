"""runner.py's own choices: the admin password, its supervising loop, its start-up checks."""

import functools
import io
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import runner
from runner import ROOT, kept_admin_password, wait_for_ctrl_c
from services.supervisor import Supervisor
from tests.shop.test_supervisor import EXITS_AT_ONCE, STAYS_UP, FakeChild


def test_generated_admin_password_is_kept_for_the_next_start(tmp_path: Path) -> None:
    # The users service never resets an existing admin's password: a second start
    # (or `runner.py demo` after `make up`) must print and use the first one.
    path = tmp_path / ".shop-admin-password"
    first = kept_admin_password(path)
    assert len(first) >= 16
    assert kept_admin_password(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_runner_refuses_to_start_when_a_port_it_needs_is_taken() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        # The orders service is the third from the base port (users, products, orders).
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        done = subprocess.run(
            [sys.executable, str(ROOT / "runner.py"), "up", "--base-port", str(taken - 2)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert (
        f"error: port {taken} (orders) is already in use: is another runner.py up?"
        in done.stderr.splitlines()
    )
    assert "Postgres" not in done.stdout  # refused before starting anything


def test_runner_loop_restarts_a_killed_child_and_stops_on_sigterm() -> None:
    supervisor = Supervisor(restart_backoff_s=0.05)
    before = signal.getsignal(signal.SIGTERM)
    try:
        supervisor.start(FakeChild("worker", STAYS_UP), {})
        first = supervisor.pid("worker")
        assert first is not None
        threading.Timer(0.1, os.kill, (first, signal.SIGKILL)).start()
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
        wait_for_ctrl_c(supervisor, poll_s=0.01)
        second = supervisor.pid("worker")
        assert second is not None and second != first
        assert supervisor.running["worker"][1].poll() is None
        assert signal.getsignal(signal.SIGTERM) is before
    finally:
        supervisor.stop_all(grace_s=2)


def test_runner_reports_a_crash_loop_before_stopping_the_others(
    shop_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The shop's own processes replaced by one that always fails and one that stays up;
    # the database (migrations) is real.
    monkeypatch.setattr(
        runner,
        "processes",
        lambda replicas, topology: [
            FakeChild("orders-worker-2", EXITS_AT_ONCE),
            FakeChild("up", STAYS_UP),
        ],
    )
    monkeypatch.setattr(runner, "process_env", lambda process, url, **settings: {})
    monkeypatch.setattr(runner, "Supervisor", functools.partial(Supervisor, restart_backoff_s=0.01))
    for name, value in {
        "DATABASE_URL": shop_url,
        "SHOP_KEYS_DIR": str(tmp_path / "keys"),
        "SHOP_ADMIN_PASSWORD": "admin-password-1",
    }.items():
        monkeypatch.setenv(name, value)
    output = io.StringIO()  # stdout and stderr in the order they were written
    monkeypatch.setattr(sys, "stdout", output)
    monkeypatch.setattr(sys, "stderr", output)
    monkeypatch.setattr(signal, "signal", lambda signum, handler: None)
    base = free_port_block()
    assert runner.main(["up", "--topology", "one", "--base-port", str(base)]) == 1
    lines = output.getvalue().splitlines()
    error = next(i for i, line in enumerate(lines) if line.startswith("error:"))
    assert lines[error] == (
        "error: orders-worker-2 keeps crashing (5 crashes within 60 s, "
        "the last one: exited with code 3); giving up"
    )
    assert lines.index("stopping the services") > error
    assert lines[0] == "migrations applied: none (up to date)"
    assert lines[1].startswith("orders-worker-2 (pid ")
    assert lines[1].endswith(") exited with code 3: restarting it in 0.01 s")


def free_port_block(size: int = 4) -> int:
    """A base port with the next size - 1 ports free too (the shop's four services)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + size < 65536 and not runner.taken_ports({str(i): base + i for i in range(size)}):
            return base
    raise AssertionError("no block of free ports")
