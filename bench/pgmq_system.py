"""The raw pgmq Python client: send_batch(100), read(qty=100) + delete_batch, polling."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from harness import (
    BATCH,
    POLL_S,
    VT_S,
    Link,
    System,
    Target,
    paced,
    queue_reset,
    queue_rows,
    record,
    wait_for_go,
)
from pgmq.queue import PGMQueue
from psycopg_pool import ConnectionPool

# The client gets its own psycopg pool (PGMQueue(pool=...)): its conn_string parser
# drops a Unix-socket host, as in the embedded server's URL, and would quietly
# connect to localhost:5432 instead.


def consumer(link: Link, idx: int) -> None:
    latencies: list[float] = []
    with ConnectionPool(link.target.url, min_size=1, max_size=1, open=True) as pool:
        pool.wait()
        client = PGMQueue(pool=pool, init_extension=False)
        if not wait_for_go(link, idx):
            return
        link.running[idx] = 1
        while not link.stop.is_set():
            read = client.read(link.target.queue, vt=VT_S, qty=BATCH)
            messages = read if isinstance(read, list) else [read] if read else []
            if not messages:
                time.sleep(POLL_S)
                continue
            for m in messages:
                record(link, idx, latencies, m.message.get("t"))
            client.delete_batch(link.target.queue, [m.msg_id for m in messages])
    link.results.put((idx, latencies))


class Producer:
    def __init__(self, target: Target) -> None:
        self.queue = target.queue
        self.pool = ConnectionPool(target.url, min_size=1, max_size=1, open=True)
        self.pool.wait()
        self.client = PGMQueue(pool=self.pool, init_extension=False)

    def close(self) -> None:
        self.pool.close()

    def send_batches(self, batches: Sequence[list[dict[str, Any]]]) -> None:
        for batch in batches:
            self.client.send_batch(self.queue, batch)

    def send_paced(self, total: int, rate: float, payload: Any) -> None:
        for i in paced(total, rate):
            self.client.send(self.queue, payload(i))


def system(url: str) -> System:
    target = Target(url, "bench_pgmq")
    with ConnectionPool(url, min_size=1, max_size=1) as pool:
        PGMQueue(pool=pool, init_extension=False).create_queue(target.queue)
    return System(
        "pgmq",
        target,
        consumer,
        Producer,
        reset=queue_reset,
        pending=queue_rows,
        describe=f"PGMQueue (sync, psycopg) per process, send_batch({BATCH}), "
        f"read(qty={BATCH}) + delete_batch, {POLL_S * 1000:.0f} ms sleep when empty",
    )
