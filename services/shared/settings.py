"""A service's settings, read once from the environment at its entry point."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pgcourier.errors import ConfigurationError
from pgcourier.settings import env_flag, env_positive, env_positive_int

from .auth import PublicKeys, SigningKey, public_keys_parse

SERVICES = ("users", "products", "orders", "payments")
DEFAULT_PORTS = {"users": 8001, "products": 8002, "orders": 8003, "payments": 8004}


@dataclass(frozen=True, kw_only=True)
class ServiceSettings:
    """database_url: the service's own login role (set by runner.py or compose.yaml).

    token_keys: the public keys whose tokens are accepted, by kid. signing_key: the
    users service's private key; no other service has one. service_secret: this
    service's own HMAC key (Idempotency-Key fingerprints), shared with no other service.
    """

    service: str
    database_url: str
    token_keys: PublicKeys
    service_secret: str
    signing_key: SigningKey | None = field(default=None, repr=False)
    host: str = "127.0.0.1"
    port: int = 8000
    # Access tokens are short-lived: a stolen one is good for minutes, and clients
    # renew theirs with the refresh token the users service can revoke.
    token_ttl_s: float = 300
    refresh_ttl_s: float = 30 * 24 * 3600
    # How long a service trusts what it read of a user's revocations: a demotion,
    # deletion or logout everywhere takes effect within this plus the event's delivery.
    revocation_cache_s: float = 1.0
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
    # Workers handle the messages of one claim in one transaction (one WAL flush for
    # them all) rather than one each: SHOP_TRANSACTION_PER_BATCH=0 turns it off.
    transaction_per_batch: bool = True

    @classmethod
    def from_env(cls, service: str, env: Mapping[str, str] | None = None) -> ServiceSettings:
        env = os.environ if env is None else env
        if service not in SERVICES:
            raise ConfigurationError(f"unknown service {service!r}")
        url = env.get("DATABASE_URL")
        if not url:
            raise ConfigurationError(f"DATABASE_URL (the {service} role's) is not set")
        return cls(
            service=service,
            database_url=url,
            token_keys=_token_keys(env),
            service_secret=_service_secret(env),
            signing_key=_signing_key(service, env),
            host=env.get("SHOP_HOST", "127.0.0.1"),
            port=env_positive_int(env, "PORT", DEFAULT_PORTS[service]),
            token_ttl_s=env_positive(env, "SHOP_TOKEN_TTL", 300),
            refresh_ttl_s=env_positive(env, "SHOP_REFRESH_TTL", 30 * 24 * 3600),
            saga_step_timeout_s=env_positive(env, "SHOP_SAGA_STEP_TIMEOUT", 15),
            max_open_orders=env_positive_int(env, "SHOP_MAX_OPEN_ORDERS", 5),
            admin_email=env.get("SHOP_ADMIN_EMAIL") or None,
            admin_password=env.get("SHOP_ADMIN_PASSWORD") or None,
            transaction_per_batch=env_flag(env, "SHOP_TRANSACTION_PER_BATCH", True),
        )


def _token_keys(env: Mapping[str, str]) -> PublicKeys:
    try:
        keys = public_keys_parse(env.get("SHOP_TOKEN_PUBLIC_KEYS", ""))
    except ValueError as exc:
        raise ConfigurationError(f"SHOP_TOKEN_PUBLIC_KEYS: {exc}") from None
    if not keys:
        raise ConfigurationError(
            "SHOP_TOKEN_PUBLIC_KEYS must list the users service's public key(s)"
        )
    return keys


def _read_secret_file(env: Mapping[str, str], name: str) -> bytes:
    path = env.get(name)
    if not path:
        raise ConfigurationError(f"{name} must name a file")
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{name}: cannot read {path}: {exc.strerror}") from None


def _service_secret(env: Mapping[str, str]) -> str:
    secret = _read_secret_file(env, "SHOP_SERVICE_SECRET_FILE").decode().strip()
    if len(secret) < 32:
        raise ConfigurationError("SHOP_SERVICE_SECRET_FILE must hold 32 or more characters")
    return secret


def _signing_key(service: str, env: Mapping[str, str]) -> SigningKey | None:
    """The users service's private key; any other service given one refuses to start."""
    if service != "users":
        if env.get("SHOP_TOKEN_PRIVATE_KEY_FILE"):
            raise ConfigurationError(
                f"SHOP_TOKEN_PRIVATE_KEY_FILE is set for {service}: only users signs tokens"
            )
        return None
    data = _read_secret_file(env, "SHOP_TOKEN_PRIVATE_KEY_FILE")
    try:
        key = SigningKey.from_pem(data)
    except ValueError as exc:
        raise ConfigurationError(f"SHOP_TOKEN_PRIVATE_KEY_FILE: {exc}") from None
    if key.kid not in _token_keys(env):
        # Its own tokens would be refused everywhere, its own /users/me included.
        raise ConfigurationError(
            f"SHOP_TOKEN_PUBLIC_KEYS lacks the signing key's public key (kid {key.kid})"
        )
    return key
