"""The claim as a server-side function, for connections that cannot prepare it.

Behind PgBouncer in transaction mode (before 1.21) psycopg's prepared statements must
be off, and the claim, one large statement, is then sent, parsed and planned at every
call: an empty claim took 1.0-1.1 ms so. PL/pgSQL keeps a function's statements parsed
in each server process, whichever client calls, so the same statement wrapped in a
function is only planned: 0.82 ms. Planned at every call on purpose (the function sets
plan_cache_mode = force_custom_plan): a plan kept for every call (0.22 ms an empty
claim) is made for whatever the table looked like when it was made, and in
bench/many_workers.py, 256 workers behind PgBouncer drained at 2,400-4,600 msg/s
with kept plans, 4,900-5,700 with the statement, and 6,000-6,700 with the function
planning each call (at 64: 7,000-9,700 against 5,900-7,300; at 16 about level).

The function is made from message_claim.sql itself, per queue (the queue's table is
in its text), and named by a hash of what it runs: `pgcourier.claim_<hash>_<queue>`.
A new version of the claim is a new name, so a worker of an older version never runs
a newer claim, and a missing function is not an error: the worker claims with the
statement, as for a queue another pgmq client created. `migrate` makes the current
version for every queue and drops the others. The function runs with its caller's
rights (SECURITY INVOKER): it can do nothing the statement could not.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re

import psycopg
from psycopg import errors, sql

from . import queries
from .naming import check_queue_name, queue_table

log = logging.getLogger(__name__)

# The claim's parameters, in the function's order: %(name)s in the query, p_name here.
_PARAMS = (
    ("limit", "integer"),
    ("vt_s", "double precision"),
    ("horizon_s", "double precision"),
    ("now", "timestamp with time zone"),
)
_RESULT = (
    "msg_id bigint, read_ct integer, enqueued_at timestamp with time zone, message text, "
    "headers text, sender text, more_of_key boolean, next_due_s double precision"
)
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
# use_column: the result's column names (msg_id, read_ct, ...) are also PL/pgSQL
# variables; in the query they mean the tables' columns.
_WRAPPER = (
    "CREATE FUNCTION {name}({params}) RETURNS TABLE ({result})"
    " LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_custom_plan"
    " AS $pgcourier_claim$\n"
    "#variable_conflict use_column\nBEGIN\nRETURN QUERY {body};\nEND\n$pgcourier_claim$"
)


@functools.cache
def _body_template() -> str:
    """message_claim.sql with its placeholders as the function's parameters; `{queue}`
    is left for the queue's table."""
    text = queries.query_text("message_claim")
    names = {name for name, _ in _PARAMS}
    found = set(_PLACEHOLDER.findall(text))
    if found != names:  # the claim and this wrapper must name the same parameters
        raise RuntimeError(f"message_claim.sql has parameters {sorted(found)}, not {sorted(names)}")
    return _PLACEHOLDER.sub(lambda m: f"p_{m.group(1)}", text)


@functools.cache
def version() -> str:
    """Eight hex digits naming what the function runs: the claim and its wrapper."""
    signature = repr((_PARAMS, _RESULT, _WRAPPER, _body_template()))
    return hashlib.sha256(signature.encode()).hexdigest()[:8]


def function_name(queue: str) -> str:
    # "claim_" + 8 + "_" + a queue name of at most 47: 62 of Postgres's 63 characters.
    return f"claim_{version()}_{check_queue_name(queue)}"


@functools.cache
def call(queue: str) -> sql.Composed:
    """The statement that claims through the queue's function; the same parameters as
    message_claim.sql."""
    args = sql.SQL(", ").join(sql.Placeholder(name) for name, _ in _PARAMS)
    return sql.SQL("SELECT * FROM {}({})").format(
        sql.Identifier("pgcourier", function_name(queue)), args
    )


def _definition(queue: str) -> sql.Composed:
    body = sql.SQL(_body_template()).format(queue=queue_table(queue))
    params = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(f"p_{name}"), sql.SQL(kind))
        for name, kind in _PARAMS
    )
    return sql.SQL(_WRAPPER).format(
        name=sql.Identifier("pgcourier", function_name(queue)),
        params=params,
        result=sql.SQL(_RESULT),
        body=body,
    )


async def installed(conn: psycopg.AsyncConnection, queue: str) -> bool:
    cur = await conn.execute(
        "SELECT to_regproc(%s) IS NOT NULL", [f"pgcourier.{function_name(queue)}"]
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def install(conn: psycopg.AsyncConnection, queue: str) -> bool:
    """Makes the queue's claim function unless it is there; False (and a warning) when
    this role may not create functions in the pgcourier schema: the queue works
    without it, its claims parsed and planned each time when not prepared."""
    if await installed(conn, queue):
        return True
    try:
        async with conn.transaction():
            await conn.execute(_definition(queue))
    except (errors.UniqueViolation, errors.DuplicateFunction):
        return True  # made meanwhile by another process: the same name, the same text
    except errors.InsufficientPrivilege as exc:
        log.warning(
            "cannot create the claim function of queue %r (%s): its workers claim with "
            "the statement instead, planned at every claim where it cannot be prepared",
            queue,
            exc,
        )
        return False
    return True


async def _existing(conn: psycopg.AsyncConnection) -> list[str]:
    """The names of every claim function in the pgcourier schema."""
    cur = await conn.execute(
        "SELECT p.proname FROM pg_proc p WHERE p.pronamespace = 'pgcourier'::regnamespace"
        " AND p.proname ~ '^claim_[0-9a-f]{8}_'"
    )
    return [row[0] for row in await cur.fetchall()]


def _queue_of(name: str) -> str:
    return name[len("claim_") + 9 :]


async def _drop(conn: psycopg.AsyncConnection, name: str) -> None:
    """Drops one claim function (names are unique: no argument list needed); one this
    role does not own is left, with a warning (a worker that calls it still can)."""
    try:
        async with conn.transaction():
            await conn.execute(
                sql.SQL("DROP FUNCTION IF EXISTS {}").format(sql.Identifier("pgcourier", name))
            )
    except errors.InsufficientPrivilege as exc:
        log.warning("cannot drop the claim function %s (%s): left in place", name, exc)


async def drop(conn: psycopg.AsyncConnection, queue: str) -> None:
    """Drops every version of the queue's claim function."""
    check_queue_name(queue)
    for name in await _existing(conn):
        if _queue_of(name) == queue:
            await _drop(conn, name)


async def install_all(conn: psycopg.AsyncConnection) -> None:
    """The current version for every queue pgcourier manages; other versions, and the
    functions of queues that are gone, dropped. Run by `migrate`, under its lock."""
    cur = await conn.execute(
        "SELECT q.queue_name FROM pgcourier.queue q"
        " JOIN pgmq.meta m ON m.queue_name = q.queue_name ORDER BY 1"
    )
    queues = [row[0] for row in await cur.fetchall()]
    wanted = {function_name(queue) for queue in queues}
    for name in await _existing(conn):
        if name not in wanted:
            await _drop(conn, name)
    for queue in queues:
        await install(conn, queue)
