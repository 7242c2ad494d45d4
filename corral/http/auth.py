"""Optional API-key authentication: with ``CORRAL_API_KEY`` set, every request must carry the key.

Ollama has no authentication of its own (its maintainers point to a reverse proxy); it is the feature users ask for
most, and the one thing that makes a server bound to a LAN address safe to leave running. The key is accepted as
``Authorization: Bearer <key>`` (what the OpenAI SDK, the ``ollama`` client with a header and the ``corral`` CLI send)
or as ``x-api-key: <key>`` (what the Anthropic SDK sends). ``GET /`` and ``HEAD /`` stay open, so health checks and
"is a server running?" probes keep working, as do the ``/healthz`` and ``/readyz`` probes (they tell nothing about
models), and so do CORS preflights (``OPTIONS``), which browsers send without credentials, and the web chat's own
files (``GET /ui`` and what it loads: they hold no data, and the page asks for the key when its first API call is
refused). A refusal is a 401 in the error shape of the route's API family, so each SDK raises its own authentication
error.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from corral.api.ui import PUBLIC_PATHS

MISSING = "unauthorized: this server requires an API key (send Authorization: Bearer <key>)"
INVALID = "unauthorized: invalid API key"


def _fingerprint(value: bytes) -> bytes:
    # Comparing fixed-size digests keeps the comparison's time independent of the presented key's length too.
    return hashlib.sha256(value).digest()


def presented_keys(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    """Every key the request offers: ``Authorization: Bearer <key>`` (scheme case-insensitive) and ``x-api-key``."""
    keys: list[bytes] = []
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                keys.append(token.strip())
        elif name == b"x-api-key" and value.strip():
            keys.append(value.strip())
    return keys


def key_matches(presented: list[bytes], expected: bytes) -> bool:
    """Constant-time comparison of every presented key with the expected one (no early exit on a match either)."""
    want = _fingerprint(expected)
    ok = False
    for key in presented:
        ok |= hmac.compare_digest(_fingerprint(key), want)
    return ok


_OPEN_PATHS = ("/", "/healthz", "/readyz")


def is_exempt(scope: Scope) -> bool:
    method = scope["method"]
    if method == "OPTIONS":
        return True
    return method in ("GET", "HEAD") and (scope["path"] in _OPEN_PATHS or scope["path"] in PUBLIC_PATHS)


def error_body(path: str, message: str) -> dict[str, Any]:
    """The 401 body in the shape of the path's API family."""
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        from corral.api.anthropic import anthropic_error

        return anthropic_error(401, message)
    if path.startswith("/v1/"):
        # OpenAI's own answer to a bad key: invalid_request_error with code invalid_api_key.
        return {"error": {"message": message, "type": "invalid_request_error", "param": None,
                          "code": "invalid_api_key"}}
    return {"error": message}


class APIKeyAuth:
    """401 for a request without the configured key; a no-op when no key is configured."""

    def __init__(self, app: ASGIApp, *, key: str | None) -> None:
        self.app = app
        self.key = key.encode() if key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.key is None or scope["type"] != "http" or is_exempt(scope):
            await self.app(scope, receive, send)
            return
        presented = presented_keys(scope["headers"])
        if key_matches(presented, self.key):
            await self.app(scope, receive, send)
            return
        body = json.dumps(error_body(scope["path"], INVALID if presented else MISSING)).encode()
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b'Bearer realm="corral"'),
        ]})
        await send({"type": "http.response.body", "body": body})
