"""The supervisor restarts crashed children with backoff and gives up on a crash loop.

Real child processes throughout; the last test runs the whole shop on a fresh database.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from runner import kept_keys
from services.shared.topology_db import ShopDatabases
from services.supervisor import ChildEvent, CrashLoopError, Supervisor
from services.topology import processes
from tests.helpers import wait_until_sync
from tests.shop.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.shop.test_e2e import (
    RunningShop,
    auth,
    create_product,
    free_port,
    wait_all_final,
    wait_known_to_orders,
)

pytestmark = pytest.mark.timeout(120)


@dataclass(frozen=True)
class FakeChild:
    """Any Python command, supervised as a service process would be."""

    instance: str
    module_args: list[str]


EXITS_AT_ONCE = ["-c", "import sys; sys.exit(3)"]
STAYS_UP = ["-c", "import time; time.sleep(60)"]


def check_until(
    supervisor: Supervisor, done: Callable[[list[ChildEvent]], bool], *, within_s: float = 10
) -> list[ChildEvent]:
    """Calls check() as a supervising loop would, collecting its events until done(events)."""
    events: list[ChildEvent] = []

    def checked() -> bool:
        if done(events):
            return True
        events.extend(supervisor.check())
        return False

    wait_until_sync(checked, within=within_s, interval=0.005, failing=lambda: f"{events}")
    return events


def restarts(events: list[ChildEvent]) -> int:
    return sum(e.kind == "restarted" for e in events)


@pytest.fixture
def supervisor() -> Iterator[Supervisor]:
    sup = Supervisor(restart_backoff_s=0.05)
    try:
        yield sup
    finally:
        sup.stop_all(grace_s=2)


def test_a_child_that_keeps_exiting_is_given_up_with_its_name_and_exit(
    capfd: pytest.CaptureFixture[str],
) -> None:
    supervisor = Supervisor(restart_backoff_s=0.01, crash_loop_crashes=3, crash_loop_window_s=30)
    supervisor.start(FakeChild("crasher", EXITS_AT_ONCE), {})
    supervisor.start(FakeChild("steady", STAYS_UP), {})
    events: list[ChildEvent] = []
    try:
        with pytest.raises(CrashLoopError) as raised:
            # Checks until check() raises; running out of time fails the test.
            wait_until_sync(lambda: events.extend(supervisor.check()), within=10, interval=0.005)
        steady_pid = supervisor.pid("steady")
        assert steady_pid is not None and supervisor.running["steady"][1].poll() is None
    finally:
        supervisor.stop_all(grace_s=2)
    assert raised.value.instance == "crasher"
    assert raised.value.last_exit == "exited with code 3"
    assert "crasher keeps crashing (3 crashes within 30 s" in str(raised.value)
    # Two crashes restarted, the backoff doubling; the third is the loop.
    crashed = [e for e in events if e.kind == "crashed"]
    assert [e.restart_in_s for e in crashed] == [0.01, 0.02]
    assert all(e.instance == "crasher" for e in events)
    first_line = capfd.readouterr().err.splitlines()[0]
    assert first_line == (
        f"crasher (pid {crashed[0].pid}) exited with code 3: restarting it in 0.01 s"
    )


def test_a_sigkilled_child_is_restarted_after_its_backoff_without_blocking(
    capfd: pytest.CaptureFixture[str],
) -> None:
    supervisor = Supervisor(restart_backoff_s=0.5)
    try:
        supervisor.start(FakeChild("victim", STAYS_UP), {})
        supervisor.start(FakeChild("bystander", STAYS_UP), {})
        assert sorted(supervisor.instances()) == ["bystander", "victim"]
        old_pid, bystander_pid = supervisor.pid("victim"), supervisor.pid("bystander")
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        crashed = check_until(supervisor, lambda events: bool(events))
        assert [(e.kind, e.instance, e.pid, e.detail) for e in crashed] == [
            ("crashed", "victim", old_pid, "killed by SIGKILL")
        ]
        # Scheduled, not slept: check() answers at once while the victim waits.
        t0 = time.monotonic()
        assert supervisor.check() == []
        assert time.monotonic() - t0 < 0.1
        assert supervisor.pid("victim") is None
        assert "victim" in supervisor.instances()
        restarted = check_until(supervisor, lambda events: bool(events), within_s=5)
        assert time.monotonic() - t0 >= 0.4
        new_pid = supervisor.pid("victim")
        assert [(e.kind, e.instance, e.pid) for e in restarted] == [
            ("restarted", "victim", new_pid)
        ]
        assert new_pid != old_pid and supervisor.running["victim"][1].poll() is None
        assert supervisor.pid("bystander") == bystander_pid
        assert capfd.readouterr().err.splitlines() == [
            f"victim (pid {old_pid}) killed by SIGKILL: restarting it in 0.5 s",
            f"restarted victim (pid {new_pid})",
        ]
    finally:
        supervisor.stop_all(grace_s=2)


def test_the_backoff_doubles_and_starts_over_once_a_child_stayed_up() -> None:
    supervisor = Supervisor(restart_backoff_s=0.02, stable_after_s=0.5)
    try:
        supervisor.start(FakeChild("flaky", STAYS_UP), {})
        delays = []
        for stays_up_s in (0, 0, 0.6):
            time.sleep(stays_up_s)
            pid = supervisor.pid("flaky")
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            events = check_until(supervisor, lambda e: restarts(e) == 1)
            delays += [e.restart_in_s for e in events if e.kind == "crashed"]
        assert delays == [0.02, 0.04, 0.02]
    finally:
        supervisor.stop_all(grace_s=2)


def test_a_deliberate_kill_or_stop_all_is_not_restarted(supervisor: Supervisor) -> None:
    supervisor.start(FakeChild("killed", STAYS_UP), {})
    stopped = supervisor.start(FakeChild("stopped", STAYS_UP), {})
    supervisor.kill("killed")
    assert supervisor.instances() == ["stopped"]
    supervisor.stop_all(grace_s=2)
    assert stopped.poll() is not None
    # A minute on, long past the 0.05 s backoff a crash would have had.
    assert supervisor.check(now=time.monotonic() + 60) == []
    assert supervisor.instances() == [] and supervisor.running == {}


def wait_logged(path: Path, line: str, times: int, *, within_s: float = 30) -> None:
    wait_until_sync(
        lambda: path.read_text().count(line) >= times, within=within_s, failing=path.read_text
    )


def test_a_sigkilled_shop_worker_is_restarted_and_confirms_the_next_order(
    shop_url: str, tmp_path: Path
) -> None:
    ports = {s: free_port() for s in ("users", "products", "orders", "payments")}
    logs = tmp_path / "logs"
    shop = RunningShop(
        ShopDatabases.one(shop_url),
        {s: f"http://127.0.0.1:{p}" for s, p in ports.items()},
        Supervisor(log_dir=logs, restart_backoff_s=0.1),
        ports,
        kept_keys(tmp_path / "keys"),
        # Long enough for a loaded machine to start two workers again.
        step_timeout_s=10.0,
    )
    try:
        for process in processes(replicas=2, topology="one"):
            shop.supervisor.start(process, shop.env(process))
        shop.supervisor.wait_healthy(shop.urls)
        admin = shop.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        product_id = create_product(shop, admin, stock=5)
        wait_known_to_orders(shop, product_id)
        customer = shop.customer()

        # Every orders worker dies, as in `kill -9`: only the restarts can confirm an order.
        workers = ("orders-worker-1", "orders-worker-2")
        for instance in workers:
            wait_logged(logs / f"{instance}.log", f"{instance} INFO worker started", 1)
            pid = shop.supervisor.pid(instance)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
        events = check_until(shop.supervisor, lambda e: restarts(e) == 2)
        assert {e.instance for e in events} == set(workers)
        # Each replica's log lines carry its name, before and after the restart.
        for instance in workers:
            wait_logged(logs / f"{instance}.log", f"{instance} INFO worker started", 2)

        with httpx.Client(timeout=30) as http:
            r = http.post(
                f"{shop.urls['orders']}/orders",
                headers=auth(customer),
                json={
                    "lines": [{"product_id": product_id, "quantity": 1}],
                    "card_token": "tok_visa",
                },
            )
            assert r.status_code == 202, r.text
        order_id = r.json()["order_id"]
        final = wait_all_final(shop, customer, [order_id], within_s=30)
        assert final[order_id]["status"] == "confirmed", final[order_id]
        assert shop.supervisor.check() == []  # nothing else crashed meanwhile
    finally:
        shop.supervisor.stop_all()
