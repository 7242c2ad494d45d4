"""ASGI middleware shared by every API family."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class AssumeJSONBody:
    """Treat every request body as JSON, whatever its Content-Type says.

    Ollama decodes bodies as JSON without looking at the header, and curl scripts written for it send
    ``application/x-www-form-urlencoded`` (curl's default for ``-d``). Blob uploads are raw bytes and keep theirs.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "DELETE", "PATCH") and not scope[
            "path"
        ].startswith("/api/blobs/"):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            headers.append((b"content-type", b"application/json"))
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)
