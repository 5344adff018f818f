"""pgcourier's queues with real pgmq clients: pgmq-js (Node.js, from npm) and the Python
`pgmq` package, each as a producer and as a consumer.

pgmq is installed as SQL, not as an extension, so both clients are told not to run
`CREATE EXTENSION` (pgmq-js: `skipExtensionCreation: true`; Python: `init_extension=False`).

pgmq-js runs from tests/foreign (package.json pins its version), installed there on first
use with `npm install` and kept (git-ignored) for later runs. Without node or npm, or when
the install fails, its tests are skipped, with a warning that says why.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from pgcourier import Context, Courier, Message, Worker
from tests.helpers import queue_empty, scalar, wait_until

FOREIGN = Path(__file__).resolve().parent.parent / "foreign"
PINNED = json.loads((FOREIGN / "package.json").read_text())["dependencies"]
SCRIPT = FOREIGN / "pgmq_js_client.js"


class InteropSkipped(UserWarning):
    """An interop test could not run here: its client is missing."""


def skip_loudly(reason: str) -> None:
    message = f"pgmq-js interop tests SKIPPED: {reason}"
    warnings.warn(message, InteropSkipped, stacklevel=2)
    pytest.skip(message)


def installed() -> bool:
    """Whether node_modules holds exactly the pinned versions."""
    for name, version in PINNED.items():
        manifest = FOREIGN / "node_modules" / name / "package.json"
        if not manifest.exists() or json.loads(manifest.read_text())["version"] != version:
            return False
    return True


@pytest.fixture(scope="session")
def node() -> str:
    """node, with pgmq-js installed in tests/foreign; skips loudly when it cannot be had."""
    node = shutil.which("node")
    if node is None:
        skip_loudly("node is not installed (apt-get install nodejs npm)")
    assert node is not None
    if installed():
        return node
    npm = shutil.which("npm")
    if npm is None:
        skip_loudly("npm is not installed, so pgmq-js cannot be (apt-get install npm)")
    assert npm is not None
    try:
        done = subprocess.run(
            [npm, "install", "--no-package-lock", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=FOREIGN,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        skip_loudly(f"npm install in {FOREIGN} did not finish within 300 s")
    if done.returncode != 0 or not installed():
        skip_loudly(f"npm install in {FOREIGN} failed ({done.returncode}): {done.stderr[-1500:]}")
    return node


def passfile_password(passfile: str | None) -> str | None:
    """The password in a libpq password file (the embedded server's superuser's URL
    names one); node's driver reads only a password given to it."""
    if not passfile:
        return None
    return Path(passfile).read_text().splitlines()[0].split(":", 4)[4]


async def pgmq_js(node: str, database_url: str, *args: str) -> Any:
    """Runs one command of tests/foreign/pgmq_js_client.js; returns what it printed."""
    params = psycopg.conninfo.conninfo_to_dict(database_url)
    settings = {
        "host": params.get("host"),
        "port": params.get("port"),
        "user": params.get("user"),
        "password": params.get("password") or passfile_password(params.get("passfile")),
        "database": params.get("dbname"),
    }
    proc = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        *args,
        cwd=FOREIGN,
        env={"PATH": str(Path(node).parent), "PGCOURIER_PG": json.dumps(settings)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, f"pgmq-js {args[0]} failed: {err.decode()}"
    return json.loads(out)


class Recorder:
    """A transactional handler recording what it saw, and an effect keyed by message id."""

    def __init__(self) -> None:
        self.seen: list[Message] = []

    async def __call__(self, message: Message, ctx: Context) -> None:
        assert ctx.conn is not None
        await ctx.conn.execute("INSERT INTO effects (message_id) VALUES (%s)", [message.id])
        self.seen.append(message)


async def effects_table(courier: Courier) -> None:
    async with courier.pool.connection() as conn:
        await conn.execute("CREATE TABLE effects (message_id text PRIMARY KEY)")


async def test_pgmq_js_creates_a_queue_and_sends_and_pgcourier_adopts_it_and_handles_everything(
    node: str, courier: Courier, database_url: str
) -> None:
    await effects_table(courier)
    await pgmq_js(node, database_url, "create", "js_in")
    payloads = [{"n": 1, "text": "caf\u00e9 \u4e2d"}, {"n": 2, "nested": {"a": [1, None]}}]
    await pgmq_js(node, database_url, "produce", "js_in", json.dumps(payloads))
    # The queue pgmq-js created, with the messages already in it, is adopted as it is.
    await courier.queue_create("js_in", max_attempts=3)
    recorder = Recorder()
    # A poll far slower than the test: the later sends are noticed through NOTIFY.
    worker = Worker(courier, poll_interval=30)
    worker.handle("js_in", recorder, transactional=True)
    async with worker.running():
        await wait_until(lambda: len(recorder.seen) == 2, within=10)
        await pgmq_js(node, database_url, "produce", "js_in", json.dumps([{"n": 3}]))
        await wait_until(lambda: len(recorder.seen) == 3, within=5)
        await wait_until(lambda: queue_empty(courier, "js_in"), within=5)
    # Handlers run concurrently: they finish in any order.
    assert sorted((m.payload for m in recorder.seen), key=lambda p: p["n"]) == [
        *payloads,
        {"n": 3},
    ]
    assert all(m.type is None and m.attempt == 1 for m in recorder.seen)
    assert len({m.id for m in recorder.seen}) == 3
    assert await scalar(courier, "SELECT count(*) FROM effects") == 3
    assert await scalar(courier, "SELECT count(*) FROM pgcourier.dead_letter") == 0


async def test_pgmq_js_reads_and_archives_what_pgcourier_sends_with_its_payload_and_headers(
    node: str, courier: Courier, database_url: str
) -> None:
    await courier.queue_create("js_out")
    await courier.send(
        "js_out",
        {"order": 7, "total": "12.50"},
        type="order.placed",
        correlation_id="corr-1",
        ordering_key="customer-3",
        headers={"tenant": "acme"},
    )
    await courier.send_batch("js_out", [{"order": 8}, {"order": 9}], type="order.paid")
    got = await pgmq_js(node, database_url, "consume", "js_out", "3", "10000")
    messages = got["messages"]
    assert [m["message"] for m in messages] == [
        {"order": 7, "total": "12.50"},
        {"order": 8},
        {"order": 9},
    ]
    assert all(m["readCount"] == 1 and m["archived"] is True for m in messages)
    first = messages[0]["headers"]
    assert first["type"] == "order.placed"
    assert first["correlation_id"] == "corr-1"
    assert first["x-pgmq-group"] == "customer-3"
    assert first["tenant"] == "acme"
    assert [m["headers"]["type"] for m in messages[1:]] == ["order.paid", "order.paid"]
    ids = [m["headers"]["message_id"] for m in messages]
    assert all(ids) and len(set(ids)) == 3
    assert await queue_empty(courier, "js_out")
    assert await scalar(courier, "SELECT count(*) FROM pgmq.a_js_out") == 3


async def test_the_python_pgmq_client_without_create_extension_sends_to_and_reads_from_pgcourier(
    courier: Courier, database_url: str
) -> None:
    from pgmq import PGMQueue

    await effects_table(courier)
    await courier.queue_create("py_in")
    await courier.queue_create("py_out")
    await courier.send("py_out", {"order": 1}, type="order.placed", headers={"tenant": "acme"})

    def other_client() -> tuple[int, Any]:
        with ConnectionPool(database_url, min_size=1, max_size=2, open=True) as pool:
            client = PGMQueue(pool=pool, init_extension=False)
            msg_id = client.send("py_in", {"n": 1}, headers={"type": "job", "tenant": "acme"})
            read = client.read("py_out", vt=30)
            assert read is not None and not isinstance(read, list)
            assert client.archive("py_out", read.msg_id)
            return msg_id, read

    msg_id, read = await asyncio.to_thread(other_client)
    assert read.message == {"order": 1}
    assert read.headers is not None
    assert read.headers["type"] == "order.placed"
    assert read.headers["tenant"] == "acme"
    assert read.headers["message_id"]
    recorder = Recorder()
    worker = Worker(courier, poll_interval=0.05)
    worker.handle("py_in", recorder, type="job", transactional=True)
    async with worker.running():
        await wait_until(lambda: len(recorder.seen) == 1, within=5)
    [message] = recorder.seen
    assert (message.msg_id, message.payload, message.headers["tenant"]) == (
        msg_id,
        {"n": 1},
        "acme",
    )
    assert await queue_empty(courier, "py_out")
