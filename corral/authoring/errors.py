"""The one error type of the create pipeline: a message safe to show a client, and the HTTP status it maps to."""

from __future__ import annotations


class CreateError(Exception):
    """``/api/create`` cannot do what was asked; 400 for a bad request, 404 for a missing base model, 500 for a
    failure of the server's own (conversion unavailable, disk errors). Messages name files and digests, never
    server paths."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
