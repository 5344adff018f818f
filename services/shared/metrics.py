"""What every shop process shows of itself: /metrics, and a server span per request.

An HTTP service mounts both with one line, `observe(app)`. A worker process has no
app: it serves its series on a port of its own, SHOP_METRICS_PORT (runner.py gives
each worker replica one, see worker_metrics_port), bound to SHOP_HOST (127.0.0.1).
What the database says of the queues (depth, in flight, dead, oldest age) is served
by `python -m pgcourier metrics` against the database, not by the services: a
service's role may read only its own queues.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pgcourier import metrics

from .tracing import ServerSpans

log = logging.getLogger("services.metrics")


async def _metrics(request: Request) -> Response:
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)


def observe(app: Starlette) -> Starlette:
    """Adds GET /metrics (this process's series, no token needed) and a server span
    per request (services/shared/tracing.py) to a service's app."""
    app.router.routes.append(Route("/metrics", _metrics, methods=["GET"]))
    app.add_middleware(ServerSpans)
    return app


def worker_metrics_port(service_port: int, replica: int) -> int:
    """A worker replica's /metrics port: its service's HTTP port plus 1000 per replica
    (orders 8003: orders-worker-1 on 9003, orders-worker-2 on 10003)."""
    return service_port + 1000 * replica


def worker_metrics_env(process: Any, ports: Mapping[str, int]) -> dict[str, str]:
    """SHOP_METRICS_PORT for a worker process (services.topology.ServiceProcess), as
    runner.py starts it; nothing for any other process."""
    if getattr(process, "role", None) != "worker":
        return {}
    return {"SHOP_METRICS_PORT": str(worker_metrics_port(ports[process.service], process.replica))}


def serve_worker_metrics(env: Mapping[str, str] | None = None) -> int | None:
    """Serves this worker process's series when SHOP_METRICS_PORT is set; returns the
    port, or None. A port already taken is logged, not fatal: the worker still works."""
    env = os.environ if env is None else env
    port = env.get("SHOP_METRICS_PORT")
    if not port or not metrics.available():
        return None
    host = env.get("SHOP_HOST") or "127.0.0.1"
    try:
        metrics.serve_process_metrics(port=int(port), host=host)
    except (OSError, ValueError) as exc:
        log.warning("cannot serve /metrics on %s:%s: %s", host, port, exc)
        return None
    log.info("metrics on http://%s:%s/metrics", host, port)
    return int(port)
