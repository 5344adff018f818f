"""An embedded PostgreSQL for development and tests, from the `pgserver` wheel.

Postgres refuses to run as root; pgserver runs it as a dedicated system user when
it must. The server is shared by every process using the same data folder and
stopped when the last one exits.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from .errors import ConfigurationError


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        try:
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset (as for root), harmlessly.
                warnings.simplefilter("ignore")
                import pgserver
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigurationError(
                "no DATABASE_URL is set and the embedded Postgres is not installed "
                "(pip install 'pgcourier[embedded]')"
            ) from exc
        data_dir = data_dir.resolve()
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._server = pgserver.get_server(data_dir, cleanup_mode="stop")

    @property
    def url(self) -> str:
        return self._server.get_uri()

    def database_url(self, database: str) -> str:
        return self._server.get_uri(database=database)

    @property
    def bin_dir(self) -> Path:
        from pgserver._commands import POSTGRES_BIN_PATH

        return Path(POSTGRES_BIN_PATH)

    def stop(self) -> None:
        self._server.cleanup()
