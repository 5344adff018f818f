"""Each service's SQL lives in sql/<service>/: migrations/ and queries/, one query a
file, loaded as pgcourier loads its own (pgcourier.queries.load)."""

from __future__ import annotations

import functools
from pathlib import Path

from psycopg import sql

from pgcourier.queries import load

SQL_ROOT = Path(__file__).resolve().parents[2] / "sql"


def migrations_dir(component: str) -> Path:
    return SQL_ROOT / component / "migrations"


@functools.cache
def query(service: str, name: str) -> sql.Composed:
    """Literal braces are doubled in query files, as in pgcourier's own."""
    return load(SQL_ROOT / service / "queries" / f"{name}.sql")


@functools.cache
def table_query(component: str, name: str, table: tuple[str, str]) -> sql.Composed:
    """A query of sql/<component>/queries/ on a table named at run time: `{table}`
    in the file becomes the quoted (schema, name)."""
    return load(SQL_ROOT / component / "queries" / f"{name}.sql", table=sql.Identifier(*table))
