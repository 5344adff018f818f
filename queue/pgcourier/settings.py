"""One typed settings object, read from the environment at the entry point."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigurationError


def env_positive(env: Mapping[str, str], name: str, default: float) -> float:
    """A positive number from the environment, or a ConfigurationError naming the variable."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigurationError(f"{name} must be positive, got {raw!r}")
    return value


def env_positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env_positive(env, name, default)
    if value != int(value):
        raise ConfigurationError(f"{name} must be a whole number, got {env.get(name)!r}")
    return int(value)


_TRUE = ("1", "on", "true", "yes")
_FALSE = ("0", "off", "false", "no")


def env_flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if value not in _TRUE + _FALSE:
        raise ConfigurationError(
            f"{name} must be one of {', '.join(_TRUE + _FALSE)}, got {env.get(name)!r}"
        )
    return value in _TRUE


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Where the database is and how the bus behaves.

    database_url: PGCOURIER_DATABASE_URL or DATABASE_URL; None means the embedded
        Postgres in data_dir (PGCOURIER_DATA_DIR, runner.py's).
    pool_min_size, pool_max_size (PGCOURIER_POOL_MIN_SIZE, _MAX_SIZE) and
    max_payload_bytes (PGCOURIER_MAX_PAYLOAD_BYTES): a Courier's, through
    Courier.from_settings.
    """

    database_url: str | None = None
    data_dir: Path = Path(".pgdata")
    pool_min_size: int = 1
    pool_max_size: int = 10
    max_payload_bytes: int = 1024 * 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        url = env.get("PGCOURIER_DATABASE_URL") or env.get("DATABASE_URL") or None
        return cls(
            database_url=url,
            data_dir=Path(env.get("PGCOURIER_DATA_DIR") or ".pgdata"),
            pool_min_size=env_positive_int(env, "PGCOURIER_POOL_MIN_SIZE", 1),
            pool_max_size=env_positive_int(env, "PGCOURIER_POOL_MAX_SIZE", 10),
            max_payload_bytes=env_positive_int(env, "PGCOURIER_MAX_PAYLOAD_BYTES", 1024 * 1024),
        )
