"""The CLI's error types, in a module of their own so the entry point can catch them without importing httpx."""

from __future__ import annotations


class APIError(Exception):
    """A request failed: ``status`` is the HTTP status (``None`` when no answer came), ``message`` is for people."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class Interrupted(Exception):
    """Ctrl-C ended a command; carried past click, which would otherwise print a line of its own."""


class ConnectError(APIError):
    """Nothing answered at the server's address (refused, unreachable, timed out while connecting)."""
