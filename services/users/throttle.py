"""Login throttling: after too many failed logins for an account, or from one client
address, within a window, further attempts are refused (429 with Retry-After).

The attempts live in users.login_attempt, so every users process counts the same
ones. An attempt is recorded (and committed) before its password is checked and
counted after: of any number of parallel guesses, at most the limit get checked.
A wrong password leaves its row; the right one deletes the account's rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from pgcourier import Courier
from services.shared.sql import query


@dataclass(frozen=True, kw_only=True)
class Limits:
    """At most per_account failures for one email and per_address from one address, per
    window_s. An address is what the connection comes from: behind a proxy that is
    the proxy, so per_address is set well above per_account."""

    per_account: int = 5
    per_address: int = 20
    window_s: float = 15 * 60


LIMITS = Limits()


class Throttled(Exception):
    def __init__(self, retry_after_s: int, what: str) -> None:
        super().__init__(f"too many failed logins for this {what}")
        self.retry_after_s = retry_after_s
        self.what = what


async def begin(courier: Courier, *, email: str, address: str, limits: Limits | None = None) -> int:
    """Records an attempt and returns its id; Throttled (the attempt forgotten) if the
    account or the address is over its limit."""
    limits = limits or LIMITS
    # Autocommit: the attempt must be visible to parallel attempts before it counts them.
    async with courier.statement_connection() as conn:
        cur = await conn.execute(
            query("users", "login_attempt_insert"),
            {"email": email, "address": address, "window_s": limits.window_s},
        )
        row = await cur.fetchone()
        assert row is not None
        attempt_id = int(row[0])
        cur = await conn.execute(
            query("users", "login_attempt_count"),
            {
                "email": email,
                "address": address,
                "attempt_id": attempt_id,
                "window_s": limits.window_s,
                "account_limit": limits.per_account,
                "address_limit": limits.per_address,
            },
        )
        counts = await cur.fetchone()
        assert counts is not None
        account_count, account_wait, address_count, address_wait = counts
        refused = None
        # This attempt is one of the counted: over the limit means `limit` came before.
        if account_count > limits.per_account:
            refused = Throttled(_seconds(account_wait, limits), "account")
        elif address_count > limits.per_address:
            refused = Throttled(_seconds(address_wait, limits), "address")
        if refused is not None:
            await conn.execute(query("users", "login_attempt_delete"), {"attempt_id": attempt_id})
            raise refused
    return attempt_id


async def succeeded(courier: Courier, *, email: str) -> None:
    async with courier.statement_connection() as conn:
        await conn.execute(query("users", "login_attempt_clear"), {"email": email})


def _seconds(wait: timedelta | None, limits: Limits) -> int:
    # None: the attempts that filled the limit were still in flight; say the window.
    if wait is None:
        return max(1, math.ceil(limits.window_s))
    return max(1, math.ceil(wait.total_seconds()))
