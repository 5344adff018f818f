"""The users service's HTTP contract: its request bodies, query and answers."""

from __future__ import annotations

import re
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from services.shared.auth import ROLES
from services.shared.models import Id, Query, RequestBody, ResponseBody, Timestamp, query_int

from . import password_policy

Role = Literal["customer", "admin"]
assert get_args(Role) == ROLES, "one list of roles"

# Deliberately loose: one @, something dotted after it, no spaces. Whether the
# address exists is not something a regex can tell.
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")


def normalise_email(email: str) -> str:
    return email.strip().lower()


def _email_address(email: str) -> str:
    email = normalise_email(email)
    if not _EMAIL.fullmatch(email):
        raise PydanticCustomError("email", "must be an email address")
    return email


# Normalised (trimmed, lower case) once validated.
NewEmail = Annotated[str, Field(max_length=254), AfterValidator(_email_address)]
Email = Annotated[str, Field(max_length=254), AfterValidator(normalise_email)]


class Register(RequestBody):
    email: NewEmail
    password: Annotated[
        str,
        Field(min_length=password_policy.MIN_LENGTH, max_length=password_policy.MAX_LENGTH),
    ]


class Login(RequestBody):
    email: Email
    # No length rules at login: a wrong password gets the same 401 whatever its shape.
    password: Annotated[str, Field(max_length=1024)]


class RoleChange(RequestBody):
    role: Role


class Refresh(RequestBody):
    refresh_token: Annotated[str, Field(max_length=200)]


class Logout(RequestBody):
    refresh_token: Annotated[str, Field(max_length=200)]
    everywhere: bool = Field(
        default=False,
        description="also end every other session and access token of the user",
    )


class UserPage(Query):
    # query_int builds an Annotated int at import time, which pydantic reads and mypy,
    # seeing a call in a type position, cannot.
    limit: query_int(1, 500) = 100  # type: ignore[valid-type]
    offset: query_int(0, 10**9) = 0  # type: ignore[valid-type]


class User(ResponseBody):
    user_id: Id
    email: str
    role: Role
    created_at: Timestamp


class Me(User):
    permissions: list[str]


class Users(ResponseBody):
    users: list[User]


class Tokens(ResponseBody):
    token: str = Field(description="the access token, for Authorization: Bearer")
    token_type: Literal["bearer"]
    expires_in: int = Field(description="seconds the access token is valid for")
    refresh_token: str = Field(description="exchange at /users/refresh for new tokens")
    refresh_expires_in: int
