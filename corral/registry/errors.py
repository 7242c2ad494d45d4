"""Errors of registry transfers; every message is safe to show to an API client (no filesystem paths, no tokens)."""

from __future__ import annotations


class RegistryError(Exception):
    """A pull or push failed; ``str()`` is the one line the user sees."""


class RegistryStatusError(RegistryError):
    """The registry answered with an HTTP error status (``<code>: <body>``, as Ollama words it)."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body}" if body else str(status))
        self.status = status
        self.body = body


class RegistryNotFound(RegistryStatusError):
    """404: Ollama reports it as Go's ``os.ErrNotExist`` text."""

    def __init__(self) -> None:
        super().__init__(404, "")
        self.args = ("file does not exist",)

    def __str__(self) -> str:
        return "file does not exist"


class RegistryUnreachable(RegistryError):
    """No HTTP answer at all: refused, reset, timed out, name not resolved."""


class Unauthorized(RegistryError):
    """Authentication failed even after a token or basic credentials were tried."""

    def __init__(self, message: str = "unauthorized: access denied") -> None:
        super().__init__(message)


class DigestMismatchError(RegistryError):
    """The bytes received do not hash to the digest the manifest names."""

    def __init__(self, want: str, got: str) -> None:
        super().__init__(f"digest mismatch, file must be downloaded again: want {want}, got {got}")
        self.want = want
        self.got = got
