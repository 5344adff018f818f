"""The programs under examples/ run as written, each on an empty database."""

from __future__ import annotations

import subprocess
import sys

import psycopg

from tests.helpers import ROOT


def run_example(name: str, url: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_readmes_bus_example_handles_the_event_and_its_consequence_exactly_once(
    empty_database_url: str,
) -> None:
    out = run_example("using_the_bus.py", empty_database_url)
    assert "audit: {'welcomed': 7}" in out
    # Again on the same database: migrations, queues and the binding are idempotent.
    again = run_example("using_the_bus.py", empty_database_url)
    assert "audit: {'welcomed': 7}" in again
    with psycopg.connect(empty_database_url) as conn:
        emails = conn.execute("SELECT user_id FROM sent_emails").fetchall()
        queues = {
            queue: (ready, in_flight, delayed)
            for queue, ready, in_flight, delayed in conn.execute(
                "SELECT queue, ready, in_flight, delayed FROM pgcourier.queues"
            ).fetchall()
        }
    assert emails == [(7,)]
    # One email still delayed: the second run's send had the same idempotency key.
    assert queues == {"emails": (0, 0, 1), "audit": (0, 0, 0)}
