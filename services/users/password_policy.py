"""What a new password must be: long enough, not absurdly long, not common, not the email.

The list of common passwords (common-passwords.txt.gz, beside this file) is the one
Django ships as django/contrib/auth/common-passwords.txt.gz (Django 5.2, BSD-3-Clause
licence), copied unchanged: 20,000 passwords of leaked-password corpora compiled by
Royce Williams (https://gist.github.com/roycewilliams/226886fd01572964e1431ac8afc999ce),
lowercased, deduplicated, one a line. Most are shorter than MIN_LENGTH and are refused
for that already; the rest (about 1,800) are what the list adds.
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

MIN_LENGTH = 10
# argon2 hashes whatever it is given: a cap keeps one request's hashing cheap.
MAX_LENGTH = 256
COMMON_PASSWORDS = Path(__file__).with_name("common-passwords.txt.gz")


class WeakPassword(Exception):
    """The password breaks the policy; the message says how, without repeating it."""


@functools.cache
def common_passwords() -> frozenset[str]:
    with gzip.open(COMMON_PASSWORDS, "rt", encoding="utf-8") as f:
        return frozenset(line.strip() for line in f if line.strip())


def check(password: str, *, email: str) -> None:
    """Raises WeakPassword unless the password may be set for the account `email`."""
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"must be at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"must be at most {MAX_LENGTH} characters")
    folded = password.strip().lower()
    if folded in common_passwords():
        raise WeakPassword("is one of the most common passwords; choose another")
    local_part = email.partition("@")[0]
    if folded in (email.strip().lower(), local_part.strip().lower()):
        raise WeakPassword("must not be the email address")
