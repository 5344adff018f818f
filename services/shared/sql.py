"""Each service's SQL lives in sql/<service>/: migrations/ and queries/, one query a file."""

from __future__ import annotations

import functools
from pathlib import Path

from psycopg import sql

SQL_ROOT = Path(__file__).resolve().parents[2] / "sql"


def migrations_dir(component: str) -> Path:
    return SQL_ROOT / component / "migrations"


@functools.cache
def query(service: str, name: str) -> sql.Composed:
    """Literal braces are doubled in query files, as in pgcourier's own."""
    text = (SQL_ROOT / service / "queries" / f"{name}.sql").read_text()
    return sql.SQL(text).format()


@functools.cache
def table_query(component: str, name: str, table: tuple[str, str]) -> sql.Composed:
    """A query of sql/<component>/queries/ on a table named at run time: `{table}`
    in the file becomes the quoted (schema, name)."""
    text = (SQL_ROOT / component / "queries" / f"{name}.sql").read_text()
    return sql.SQL(text).format(table=sql.Identifier(*table))
