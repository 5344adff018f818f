"""A service's settings, read once from the environment at its entry point."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from pgcourier.errors import ConfigurationError
from pgcourier.settings import env_positive, env_positive_int

SERVICES = ("users", "products", "orders", "payments")
DEFAULT_PORTS = {"users": 8001, "products": 8002, "orders": 8003, "payments": 8004}


@dataclass(frozen=True, kw_only=True)
class ServiceSettings:
    """database_url: the service's own login role (set by runner.py or compose.yaml)."""

    service: str
    database_url: str
    jwt_secret: str
    host: str = "127.0.0.1"
    port: int = 8000
    token_ttl_s: float = 3600
    saga_step_timeout_s: float = 15
    admin_email: str | None = None
    admin_password: str | None = None
    max_body_bytes: int = 64 * 1024
    # Orders one customer may have in the saga (pending or awaiting payment) at once: each
    # holds stock until it settles or times out, and a card that never answers holds it
    # for two step timeouts, so without a cap one customer could keep a product sold out.
    max_open_orders: int = 5
    # How long a request waits for a database connection before it is answered 503
    # (with Retry-After) rather than hanging while the database is unreachable.
    db_timeout_s: float = 5

    @classmethod
    def from_env(cls, service: str, env: Mapping[str, str] | None = None) -> ServiceSettings:
        env = os.environ if env is None else env
        if service not in SERVICES:
            raise ConfigurationError(f"unknown service {service!r}")
        url = env.get("DATABASE_URL")
        if not url:
            raise ConfigurationError(f"DATABASE_URL (the {service} role's) is not set")
        secret = env.get("SHOP_JWT_SECRET")
        if not secret or len(secret) < 32:
            raise ConfigurationError("SHOP_JWT_SECRET must be set, at least 32 characters")
        return cls(
            service=service,
            database_url=url,
            jwt_secret=secret,
            host=env.get("SHOP_HOST", "127.0.0.1"),
            port=env_positive_int(env, "PORT", DEFAULT_PORTS[service]),
            token_ttl_s=env_positive(env, "SHOP_TOKEN_TTL", 3600),
            saga_step_timeout_s=env_positive(env, "SHOP_SAGA_STEP_TIMEOUT", 15),
            max_open_orders=env_positive_int(env, "SHOP_MAX_OPEN_ORDERS", 5),
            admin_email=env.get("SHOP_ADMIN_EMAIL") or None,
            admin_password=env.get("SHOP_ADMIN_PASSWORD") or None,
        )
