"""Signed tokens (JWT, HS256) issued by the users service and checked by every service."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

ROLES = ("customer", "admin")
_ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class AuthError(Exception):
    """Missing, malformed, expired or badly signed token."""


def token_issue(principal: Principal, *, secret: str, ttl_s: float) -> str:
    now = int(time.time())
    claims = {"sub": principal.user_id, "role": principal.role, "iat": now, "exp": now + int(ttl_s)}
    return jwt.encode(claims, secret, algorithm=_ALGORITHM)


def token_verify(token: str, *, secret: str) -> Principal:
    try:
        claims = jwt.decode(
            token, secret, algorithms=[_ALGORITHM], options={"require": ["sub", "exp", "role"]}
        )
    except jwt.PyJWTError as exc:
        raise AuthError(str(exc)) from None
    if claims["role"] not in ROLES:
        raise AuthError("unknown role")
    return Principal(str(claims["sub"]), claims["role"])
