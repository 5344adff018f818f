"""The README's "Using the bus", as a program: python examples/using_the_bus.py URL

Against an empty database (or one pgcourier already migrated): installs the bus,
creates two queues, publishes an event in the caller's own transaction, and runs a
worker until the event has been handled and the message it caused has arrived.
"""

from __future__ import annotations

import asyncio
import os
import sys

import psycopg

from pgcourier import Context, Courier, Message, Worker, migrate


async def main(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await migrate(conn)  # the bus's schema (pgmq and pgcourier), idempotent
        await conn.execute("CREATE TABLE IF NOT EXISTS users (id int PRIMARY KEY)")
        await conn.execute("CREATE TABLE IF NOT EXISTS sent_emails (user_id int PRIMARY KEY)")

    async with Courier(url) as courier:
        await courier.queue_create("emails", visibility_timeout=30, max_attempts=5)
        await courier.queue_create("audit")
        await courier.subscribe("user.*", "emails")  # topic binding

        # Sent in your own transaction: the message exists iff your transaction commits.
        async with await psycopg.AsyncConnection.connect(url) as conn:
            await conn.execute("INSERT INTO users (id) VALUES (7) ON CONFLICT DO NOTHING")
            await courier.publish("user.registered", {"id": 7}, conn=conn)
            await conn.commit()

        # Due in a minute; a second send with the same key is a no-op while it waits.
        await courier.send("emails", {"to": "a@b.c"}, delay=60, idempotency_key="welcome-7")

        worker = Worker(courier, concurrency=50, batch_size=50, poll_interval=1.0)

        @worker.handle("emails", type="user.registered", transactional=True)
        async def welcome(message: Message, ctx: Context) -> None:
            # One transaction: inbox record of message.id, these writes, these sends and
            # the acknowledgement. A redelivered message has its effects exactly once.
            assert ctx.conn is not None  # always, with transactional=True
            await ctx.conn.execute(
                "INSERT INTO sent_emails (user_id) VALUES (%s) ON CONFLICT DO NOTHING",
                [message.payload["id"]],
            )
            await ctx.send("audit", {"welcomed": message.payload["id"]})  # same correlation id

        @worker.handle("emails")  # every other message on the queue
        async def email(message: Message, ctx: Context) -> None:
            print("sending", message.payload)

        @worker.handle("audit")
        async def audit(message: Message, ctx: Context) -> None:
            print("audit:", message.payload, "correlation id", message.correlation_id)
            worker.stop()  # this program's end; a service would run until told to stop

        await worker.run()  # worker.stop() finishes in-flight work, then returns


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else os.environ["DATABASE_URL"]))
