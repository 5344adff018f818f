"""What each role may do; /users/me reports it so clients can shape their UI."""

from __future__ import annotations

_CUSTOMER = ("products:read", "orders:place", "orders:read_own", "payments:read_own")
_ADMIN_ONLY = (
    "products:write",
    "stock:adjust",
    "orders:read_all",
    "payments:read_all",
    "users:read",
    "users:manage",
)

PERMISSIONS: dict[str, tuple[str, ...]] = {
    "customer": _CUSTOMER,
    "admin": _CUSTOMER + _ADMIN_ONLY,
}


def permissions_for(role: str) -> list[str]:
    return list(PERMISSIONS.get(role, ()))
