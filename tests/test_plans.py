"""The plans of the per-message queries: an index path, never a scan of the queue.

Joined to unnest() alone, the fenced acknowledgement hashed the ids and scanned the
whole queue table on every batch (its cost grew with the queue); these plans must
stay on the primary key however long the queue is.
"""

import pytest

from pgcourier import Courier, queries
from tests.helpers import prepare_claim

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


def _nodes(plan: dict) -> list[dict]:
    """Every node of an EXPLAIN (FORMAT JSON) plan, init plans and CTEs included."""
    found = [plan]
    for child in plan.get("Plans", []):
        found.extend(_nodes(child))
    return found


async def _claim_plan(courier: Courier, rows_sql: str, planning: str) -> tuple[dict, int]:
    """(the plan of one claim of 100 as EXPLAIN ANALYZE ran it, the queue table's pages)
    after rows_sql filled the queue; the claim is rolled back.

    planning "custom": planned for its parameters, as a statement sent each time is.
    "generic": the plan a server may settle on and keep for every call, whatever the
    parameters (a prepared claim after five calls, or the claim function's, whose plan
    each server process keeps): planned without knowing the limit or `now`."""
    await courier.queue_create("jobs")
    async with courier.pool.connection() as conn:
        await conn.execute(rows_sql)
        await conn.execute("ANALYZE pgmq.q_jobs")
        cur = await conn.execute(
            "SELECT relpages FROM pg_class WHERE oid = 'pgmq.q_jobs'::regclass"
        )
        pages = await cur.fetchone()
        async with conn.transaction(force_rollback=True):
            if planning == "generic":
                await prepare_claim(conn, "generic_claim", "jobs")
                await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                cur = await conn.execute(
                    "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)"
                    " EXECUTE generic_claim(100, 30, 1.0, NULL)"
                )
            else:
                params = {"now": None, "limit": 100, "vt_s": 30, "horizon_s": 1.0}
                explain = b"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + queries.queue_query(
                    "message_claim", "jobs"
                ).as_bytes(conn)
                cur = await conn.execute(explain, params)
            row = await cur.fetchone()
    assert row is not None and pages is not None
    return row[0][0]["Plan"], pages[0]


def _reads(plan: dict, cte: str) -> int:
    """Pages a CTE of the claim read: the walk, not the update (writing 100 new row
    versions and their index entries costs about ten pages each, however they were
    found)."""
    walk = next(n for n in _nodes(plan) if n.get("Subplan Name") == cte)
    return walk["Shared Hit Blocks"] + walk["Shared Read Blocks"]


@pytest.mark.parametrize("planning", ["custom", "generic"])
async def test_a_claim_walks_the_vt_index_from_the_head_of_a_large_backlog(
    courier: Courier, planning: str
) -> None:
    """Guards message_claim.sql's plan: with 60,000 ready messages, as many in flight or
    delayed and some with ordering keys, a claim of 100 reads its rows through indexes,
    never a scan of the queue table, and finds them in a few pages, not the table's.
    Ordered by (vt, msg_id), which pgmq's vt index is not, it sorted all 60,000 (1,940
    pages, 25 ms)."""
    plan, table_pages = await _claim_plan(
        courier,
        "INSERT INTO pgmq.q_jobs (vt, message, headers)"
        " SELECT now() + make_interval(secs => CASE WHEN i % 2 = 0 THEN -60 ELSE 600 END),"
        "        '{}', CASE WHEN i % 50 = 0"
        "                   THEN jsonb_build_object('x-pgmq-group', 'k' || (i % 10))"
        "                   ELSE '{}' END"
        " FROM generate_series(1, 120000) AS i",
        planning,
    )
    nodes = _nodes(plan)
    scans = [n for n in nodes if n.get("Relation Name") == "q_jobs"]
    claimed = next(n for n in nodes if n.get("Node Type") == "ModifyTable")
    assert claimed["Actual Rows"] == 100, plan
    assert scans and all(n["Node Type"] != "Seq Scan" for n in scans), scans
    assert any(n.get("Index Name") == "q_jobs_vt_idx" for n in scans), scans
    for cte in ("CTE unordered", "CTE ordered"):
        assert _reads(plan, cte) < table_pages / 4, (cte, _reads(plan, cte), table_pages)


@pytest.mark.parametrize("planning", ["custom", "generic"])
async def test_a_claim_that_finds_few_ready_messages_stops_where_the_delayed_ones_begin(
    courier: Courier, planning: str
) -> None:
    """Ten ready messages and 60,000 delayed (saga timeouts, say): the claim gets the ten
    and stops at the first delayed one. With its bound as a join filter it walked every
    delayed entry of the vt index, on every claim."""
    plan, table_pages = await _claim_plan(
        courier,
        "INSERT INTO pgmq.q_jobs (vt, message, headers)"
        " SELECT now() + make_interval(secs => CASE WHEN i <= 10 THEN -60 ELSE 600 END),"
        "        '{}', '{}'"
        " FROM generate_series(1, 60000) AS i",
        planning,
    )
    claimed = next(n for n in _nodes(plan) if n.get("Node Type") == "ModifyTable")
    assert claimed["Actual Rows"] == 10, plan
    assert _reads(plan, "CTE unordered") < table_pages / 20, (
        _reads(plan, "CTE unordered"),
        table_pages,
    )
