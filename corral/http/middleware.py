"""ASGI middleware shared by every API family."""

from __future__ import annotations

import json
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.errors import http_status, log_unhandled

log = logging.getLogger("corral.api")


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


class CatchAll:
    """The last stop for an exception no route handled: a 500 in Ollama's shape and one log line.

    Starlette's outermost error middleware answers too, but then re-raises to the server, which prints a traceback
    and drops the connection, so the client's next request on it failed with a reset. Installed innermost, this
    answers first; an exception after the response has started can only be logged.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            log_unhandled(log, exc, scope.get("path", ""))
            if started:
                return
            status, message = http_status(exc)
            body = json.dumps({"error": message}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
