"""What runs: every service process and the settings it gets.

runner.py starts exactly these processes; compose.yaml describes the same ones for
Docker (tests/shop/test_compose.py checks that the two agree).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .shared.database import role_url
from .shared.settings import DEFAULT_PORTS, SERVICES
from .shared.topology_db import ShopDatabases

# Services that consume messages, and so have worker processes.
WORKER_SERVICES = ("products", "orders", "payments")

# The settings every service reads (services/shared/settings.py), besides DATABASE_URL.
# SHOP_SERVICE_SECRET_FILE names each service's own secret; only users gets the file of
# the private key that signs tokens, every service the public keys that verify them.
SHARED_SETTINGS = (
    "SHOP_TOKEN_PUBLIC_KEYS",
    "SHOP_SERVICE_SECRET_FILE",
    "SHOP_SAGA_STEP_TIMEOUT",
    "SHOP_TRANSACTION_PER_BATCH",
)
USERS_SETTINGS = ("SHOP_TOKEN_PRIVATE_KEY_FILE", "SHOP_ADMIN_EMAIL", "SHOP_ADMIN_PASSWORD")


@dataclass(frozen=True, slots=True)
class ServiceProcess:
    service: str
    role: str  # "http" or "worker"
    replica: int = 1

    @property
    def name(self) -> str:
        """As in compose.yaml: one name per service and role."""
        return f"{self.service}-{self.role}"

    @property
    def instance(self) -> str:
        """Unique among running processes: worker replicas are numbered."""
        return f"{self.name}-{self.replica}" if self.role == "worker" else self.name

    @property
    def module_args(self) -> list[str]:
        return ["-m", f"services.{self.service}", self.role]


# With a database per service, one more process keeps the links between them
# (services/links): it is not a service, and has no HTTP port.
LINKS_KEEPER = ServiceProcess("links", "keeper")


def processes(*, replicas: int = 1, topology: str = "databases") -> list[ServiceProcess]:
    found = [ServiceProcess(s, "http") for s in SERVICES]
    found += [
        ServiceProcess(s, "worker", r) for s in WORKER_SERVICES for r in range(1, replicas + 1)
    ]
    if topology == "databases":
        found.append(LINKS_KEEPER)
    return found


def keeper_env(databases: ShopDatabases) -> dict[str, str]:
    """The links keeper's environment: every database's owner URL (it prunes outboxes
    and restarts subscriptions, the owner's work, as migrations are) and the link mode."""
    env = {f"SHOP_DATABASE_URL_{s.upper()}": databases.url(s) for s in SERVICES}
    env["SHOP_LINK_MODE"] = databases.link_mode
    env["SHOP_INSTANCE"] = LINKS_KEEPER.instance
    return env


def process_env(
    process: ServiceProcess,
    admin_url: str | ShopDatabases,
    *,
    token_public_keys: str,
    token_private_key_file: str,
    service_secret_files: Mapping[str, str],
    saga_step_timeout_s: float,
    admin_email: str,
    admin_password: str,
    role_passwords: Mapping[str, str | None] | None = None,
    ports: dict[str, int] | None = None,
    transaction_per_batch: bool = True,
    max_open_orders: int | None = None,
) -> dict[str, str]:
    """The environment of one process: its own role's URL of its own service's database,
    and the shop settings. admin_url: the one database, or where each service's is.

    role_passwords: by service; a process gets its own role's only (in its
    DATABASE_URL), never another's nor the admin's. The admin password goes to the
    users processes alone (they create the admin account).
    max_open_orders: the orders service's cap on one customer's open orders; None
    leaves its default.
    """
    databases = ShopDatabases.one(admin_url) if isinstance(admin_url, str) else admin_url
    if process == LINKS_KEEPER:
        return keeper_env(databases)
    password = (role_passwords or {}).get(process.service)
    env = {
        "DATABASE_URL": role_url(databases.url(process.service), process.service, password),
        "PORT": str((ports or DEFAULT_PORTS)[process.service]),
        "SHOP_TOKEN_PUBLIC_KEYS": token_public_keys,
        "SHOP_SERVICE_SECRET_FILE": service_secret_files[process.service],
        "SHOP_SAGA_STEP_TIMEOUT": str(saga_step_timeout_s),
        # Workers: one transaction per claimed batch, or per message (settings.py).
        "SHOP_TRANSACTION_PER_BATCH": "1" if transaction_per_batch else "0",
        # Names the replica in its log lines (services/shared/process.py).
        "SHOP_INSTANCE": process.instance,
    }
    if process.service == "orders" and max_open_orders is not None:
        env["SHOP_MAX_OPEN_ORDERS"] = str(max_open_orders)
    if process.service == "users":
        env["SHOP_TOKEN_PRIVATE_KEY_FILE"] = token_private_key_file
        env["SHOP_ADMIN_EMAIL"] = admin_email
        env["SHOP_ADMIN_PASSWORD"] = admin_password
    return env
