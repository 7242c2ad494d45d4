"""One log line per request, and nothing a user typed unless debug logging is on.

At the default level each request is logged as method, path, status, duration and client address, the facts
Ollama's ``[GIN]`` line carries. Prompts, messages, images and every other part of a body stay out of the log: a
server log is read by administrators, shipped to log collectors and attached to bug reports, and a chat is the
user's. With ``CORRAL_DEBUG``/``OLLAMA_DEBUG`` the request body is logged too (cut at ``DEBUG_BODY_LIMIT`` bytes),
which is what debugging a template or a client needs.
"""

from __future__ import annotations

import json
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("corral.http")

DEBUG_BODY_LIMIT = 64 << 10
_PATH_LIMIT = 200


def quoted(text: str, limit: int = _PATH_LIMIT) -> str:
    """A client-supplied string safe for a one-line log: JSON-quoted (no raw newlines or escapes), cut to ``limit``."""
    return json.dumps(text if len(text) <= limit else text[:limit] + "...")


def log_request(method: str, path: str, status: int, seconds: float, client: str | None) -> None:
    """The one line per request, shared by the middleware and the protocol-level fast lane."""
    log.info("request method=%s path=%s status=%s duration=%.3fs client=%s", method, quoted(path),
             status or "-", seconds, client or "-")


class RequestLog:
    """Logs each HTTP request when its response ends (or the client goes away)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        method, path = scope["method"], scope["path"]
        debug = log.isEnabledFor(logging.DEBUG) and not path.startswith("/api/blobs/")
        seen: list[bytes] = []
        seen_size = 0

        async def logged_receive() -> Message:
            nonlocal seen_size
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                if seen_size < DEBUG_BODY_LIMIT:
                    seen.append(chunk[:DEBUG_BODY_LIMIT - seen_size])
                seen_size += len(chunk)
                if not message.get("more_body", False) and seen_size:
                    body = b"".join(seen).decode("utf-8", "replace")
                    more = f" (first {DEBUG_BODY_LIMIT} of {seen_size} bytes)" if seen_size > DEBUG_BODY_LIMIT else ""
                    log.debug("request body %s %s%s: %s", method, quoted(path), more, body)
            return message

        async def logged_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, logged_receive if debug else receive, logged_send)
        finally:
            client = scope.get("client")
            log_request(method, path, status, time.perf_counter() - started, client[0] if client else None)
