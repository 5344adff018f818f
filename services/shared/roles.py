"""Each service's database login role."""

from __future__ import annotations


def role_name(service: str) -> str:
    return f"{service}_svc"
