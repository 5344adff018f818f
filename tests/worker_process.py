"""A worker in its own process, for tests that kill it: `python -m tests.worker_process URL MARKER`.

Its transactional handler records the message's effect, then signals through the
marker file and hangs, so the test can kill it in the middle of the transaction.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from pgcourier import Context, Courier, Message, Worker


async def main(url: str, marker: Path) -> None:
    async with Courier(url) as courier:

        async def record_then_hang(message: Message, ctx: Context) -> None:
            assert ctx.conn is not None
            await ctx.conn.execute(
                "INSERT INTO effects (message_id, attempt) VALUES (%s, %s)",
                [message.id, message.attempt],
            )
            await ctx.send("downstream", {"caused_by": message.id})
            await asyncio.to_thread(marker.write_text, str(message.attempt))
            await asyncio.sleep(3600)

        worker = Worker(courier)
        worker.handle("jobs", record_then_hang, transactional=True)
        await worker.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
