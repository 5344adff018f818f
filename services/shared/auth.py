"""Access tokens: JWTs the users service signs with Ed25519 and every service verifies.

Only the users process holds the private key; the others hold public keys, each named
by a key id (`kid`, derived from the key) that the token's header carries. A service
accepts a set of public keys, so a new signing key can be brought in while tokens
signed with the old one are still honoured, and the old one then dropped.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ROLES = ("customer", "admin")
# The only algorithm accepted: an HS256 token (signed with any shared secret) or one
# with `alg: none` is refused before its signature is looked at.
_ALGORITHM = "EdDSA"

PublicKeys = Mapping[str, Ed25519PublicKey]


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    role: str
    # The account's token version when the token was issued. The users service raises
    # it on a role change, a deletion and a logout everywhere; every service refuses a
    # token below the version its user.changed events told it of.
    version: int = 1

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class AuthError(Exception):
    """Missing, malformed, expired, revoked or badly signed token."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short name of the key, the same wherever it is computed: no kid to keep in step."""
    return _b64(hashlib.sha256(_raw(public_key)).digest()[:12])


def public_key_text(public_key: Ed25519PublicKey) -> str:
    """The key's 32 bytes, base64url: one line, fit for an environment variable."""
    return _b64(_raw(public_key))


def public_keys_parse(text: str) -> dict[str, Ed25519PublicKey]:
    """{kid: key} from public keys separated by commas or whitespace; ValueError if bad."""
    keys: dict[str, Ed25519PublicKey] = {}
    for item in text.replace(",", " ").split():
        try:
            raw = base64.urlsafe_b64decode(item + "=" * (-len(item) % 4))
            key = Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            raise ValueError(f"not an Ed25519 public key (32 bytes, base64url): {item!r}") from None
        keys[key_id(key)] = key
    return keys


def public_keys_text(keys: PublicKeys) -> str:
    return ",".join(public_key_text(k) for k in keys.values())


@dataclass(frozen=True, slots=True)
class SigningKey:
    """The users service's private key and its kid."""

    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, data: bytes) -> SigningKey:
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the token signing key must be an Ed25519 private key")
        return cls(key)

    @classmethod
    def from_file(cls, path: Path) -> SigningKey:
        return cls.from_pem(path.read_bytes())

    def pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def kid(self) -> str:
        return key_id(self.public_key)


def token_issue(principal: Principal, *, key: SigningKey, ttl_s: float) -> str:
    now = int(time.time())
    claims = {
        "sub": principal.user_id,
        "role": principal.role,
        "ver": principal.version,
        "iat": now,
        "exp": now + int(ttl_s),
    }
    return jwt.encode(claims, key.private_key, algorithm=_ALGORITHM, headers={"kid": key.kid})


def token_verify(token: str, *, keys: PublicKeys) -> Principal:
    try:
        header = jwt.get_unverified_header(token)
        if header.get("alg") != _ALGORITHM:
            raise AuthError(f"algorithm {header.get('alg')!r} is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or kid not in keys:
            raise AuthError("unknown key id")
        claims = jwt.decode(
            token,
            keys[kid],
            algorithms=[_ALGORITHM],
            options={"require": ["sub", "exp", "iat", "role", "ver"]},
        )
    except jwt.PyJWTError as exc:
        raise AuthError(str(exc)) from None
    if claims["role"] not in ROLES:
        raise AuthError("unknown role")
    version = claims["ver"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise AuthError("bad token version")
    return Principal(str(claims["sub"]), claims["role"], version)
