"""`pgcourier console`: serves the live console (console.py) with uvicorn.

Kept apart from cli.py so that the other commands never import Starlette: the
console is an optional extra.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .settings import Settings

DEFAULT_PORT = 8090
DATABASES_ENV = "PGCOURIER_CONSOLE_DATABASES"
TOKEN_ENV = "PGCOURIER_CONSOLE_TOKEN"


def add_parser(sub: Any, *, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "console",
        parents=[common],
        help="serve the live console (web pages) for one or more databases",
        description="Serves the live console. Databases: --database NAME=URL (repeatable), "
        f"else ${DATABASES_ENV} (a JSON object of name: URL), else --database-url. "
        f"Operator token (to retry and purge dead letters): ${TOKEN_ENV} or --token-file; "
        "without one the console is read-only.",
    )
    p.add_argument(
        "--database",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="a database to watch, under a short name (repeatable)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    p.add_argument("--token-file", type=Path, metavar="PATH", help="file holding the token")
    p.add_argument(
        "--sample-interval",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds between two samples of the queues (default 2)",
    )


def databases_of(args: argparse.Namespace, env: dict[str, str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in args.database:
        name, sep, url = item.partition("=")
        if not sep or not name or not url:
            raise ValueError(f"--database wants NAME=URL, not {item!r}")
        found[name] = url
    if not found and env.get(DATABASES_ENV):
        given = json.loads(env[DATABASES_ENV])
        if not isinstance(given, dict) or not all(isinstance(v, str) for v in given.values()):
            raise ValueError(f"{DATABASES_ENV} must be a JSON object of name: URL")
        found = {str(k): v for k, v in given.items()}
    if not found:
        url = getattr(args, "database_url", None) or Settings.from_env().database_url
        if url:
            found = {"main": url}
    return found


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from .console import create_app
    except ImportError as exc:
        print(
            f"error: the console needs its extra ({exc.name} is missing): "
            "pip install 'pgcourier[console]'",
            file=sys.stderr,
        )
        return 1
    env = dict(os.environ)
    try:
        databases = databases_of(args, env)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not databases:
        print("error: no database given: --database NAME=URL or --database-url", file=sys.stderr)
        return 2
    token = env.get(TOKEN_ENV)
    if args.token_file is not None:
        token = args.token_file.read_text().strip()
    if args.sample_interval <= 0:
        print("error: --sample-interval must be positive", file=sys.stderr)
        return 2
    app = create_app(databases, token=token, sample_interval_s=args.sample_interval)
    mode = "operator token set" if token else "read-only: no operator token"
    print(f"pgcourier console on http://{args.host}:{args.port} ({mode})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
