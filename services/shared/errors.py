"""The error an HTTP handler raises to answer with a 4xx JSON body."""

from __future__ import annotations


class HTTPError(Exception):
    def __init__(self, status: int, error: str, message: str, *, field: str | None = None):
        super().__init__(message)
        self.status, self.error, self.message, self.field = status, error, message, field
