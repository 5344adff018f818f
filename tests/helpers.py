"""Small helpers shared by the tests: a running worker and waiting for a condition."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from pgcourier import Courier, Worker


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    task = asyncio.create_task(worker.run())
    started = asyncio.ensure_future(worker.started.wait())
    await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        started.cancel()
        task.result()  # raises the start-up error
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)


async def wait_until(
    condition: Callable[[], Any], *, within: float = 10.0, interval: float = 0.01
) -> float:
    """Waits for condition() to be truthy; returns the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > within:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)
    return time.monotonic() - start


async def scalar(courier: Courier, query: str, params: Any = None) -> Any:
    async with courier.pool.connection() as conn:
        cur = await conn.execute(query, params)
        row = await cur.fetchone()
    return row[0] if row else None
