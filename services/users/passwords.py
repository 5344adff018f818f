"""Password hashing with argon2, off the event loop (a hash costs tens of milliseconds)."""

from __future__ import annotations

import asyncio
import functools
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()

# A client that sends a hash instead of a password would make that hash the secret,
# and would tell us it hashes passwords itself with something we do not control.
_HASH_PREFIXES = ("$argon2", "$2a$", "$2b$", "$2y$", "$scrypt", "pbkdf2", "$pbkdf2", "$5$", "$6$")


def looks_hashed(password: str) -> bool:
    return password.lower().startswith(_HASH_PREFIXES)


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    """True if the password matches; for an unknown account (None) it costs the same."""
    if password_hash is None:
        await asyncio.to_thread(_verify, await _dummy_hash(), password)
        return False
    return await asyncio.to_thread(_verify, password_hash, password)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash_sync() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


async def _dummy_hash() -> str:
    return await asyncio.to_thread(_dummy_hash_sync)
