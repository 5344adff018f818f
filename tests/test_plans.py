"""The plans of the per-message queries: an index path, never a scan of the queue.

Joined to unnest() alone, the fenced acknowledgement hashed the ids and scanned the
whole queue table on every batch (its cost grew with the queue); these plans must
stay on the primary key however long the queue is.
"""

import pytest

from pgcourier import Courier, queries

FENCED = [
    "message_delete",
    "message_archive",
    "message_retry",
    "message_dead_letter",
    "message_extend",
]


@pytest.mark.parametrize("name", FENCED)
async def test_a_fenced_query_finds_its_messages_by_key_not_by_scanning_the_queue(
    courier: Courier, name: str
) -> None:
    await courier.queue_create("jobs")
    async with courier.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO pgmq.q_jobs (vt, message, headers)"
            " SELECT now(), '{}', '{}' FROM generate_series(1, 5000)"
        )
        await conn.execute("ANALYZE pgmq.q_jobs")
        cur = await conn.execute("SELECT msg_id FROM pgmq.q_jobs ORDER BY msg_id LIMIT 100")
        ids = [row[0] for row in await cur.fetchall()]
        params = {
            "msg_ids": ids,
            "read_cts": [0] * len(ids),
            "now": None,
            "vt_s": 30,
            "delays": [1.0] * len(ids),
            "errors": ["[]"] * len(ids),
            "attempts": [1] * len(ids),
            "queue_name": "jobs",
        }
        explain = b"EXPLAIN " + queries.queue_query(name, "jobs").as_bytes(conn)
        cur = await conn.execute(explain, params)
        plan = "\n".join(row[0] for row in await cur.fetchall())
    assert "Seq Scan on q_jobs" not in plan, plan
    assert "using q_jobs_pkey on q_jobs" in plan, plan
