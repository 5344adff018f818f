"""Named SQL queries, loaded from .sql files: the package's own, and (through
`load`) any application's, such as the shop's.

Queries that touch a queue's table carry `{queue}` / `{archive}` placeholders,
filled with quoted identifiers, never with string formatting of user input.
"""

from __future__ import annotations

import functools
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from psycopg import sql

from .naming import archive_table, queue_table


def load(path: Path | Traversable, **identifiers: sql.Composable) -> sql.Composed:
    """The statement in a .sql file, its comment lines dropped and its `{name}`
    placeholders filled with `identifiers` (literal braces are doubled, `{{`)."""
    return sql.SQL(without_comment_lines(path.read_text())).format(**identifiers)


def _file(name: str) -> Traversable:
    return resources.files("pgcourier.sql").joinpath("queries", f"{name}.sql")


@functools.cache
def _text(name: str) -> str:
    return without_comment_lines(_file(name).read_text())


def without_comment_lines(text: str) -> str:
    """The statement without its whole-line comments. They say why in the .sql files;
    sent along, they made the claim longer than the 4,096 bytes up to which psycopg
    caches a query's conversion, so it was re-parsed in Python on every claim."""
    return "\n".join(
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("--")
    )


def query_text(name: str) -> str:
    """A query file's statement as text, comment lines dropped, placeholders unfilled."""
    return _text(name)


@functools.cache
def query(name: str) -> sql.Composed:
    """A query that names no queue table (braces are escaped as in every query file)."""
    return load(_file(name))


@functools.cache
def queue_query(name: str, queue: str) -> sql.Composed:
    """A query against one queue's pgmq tables."""
    return sql.SQL(_text(name)).format(queue=queue_table(queue), archive=archive_table(queue))


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) for every bus migration, in order."""
    folder = resources.files("pgcourier.sql").joinpath("migrations")
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(n.removesuffix(".sql"), folder.joinpath(n).read_text()) for n in names]


def bootstrap_sql() -> str:
    return resources.files("pgcourier.sql").joinpath("schema_migration.sql").read_text()
