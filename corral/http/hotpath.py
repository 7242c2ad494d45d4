"""A short way through the ASGI stack for the read-only requests that UIs poll.

Open WebUI and similar clients poll ``GET /api/tags`` (and ``/api/version``) every few seconds from every open tab,
often while a model is generating on the same two cores. Through FastAPI's routing, dependency solving and response
classes such a request costs ~0.3-0.4 ms of server CPU; answered here, from the same cached bytes the routes
serve, it costs a fraction of that (docs/benchmarks.md). The routes stay the single source of truth: this module
only calls their body builders, and everything else (other methods, query strings, other paths) goes to FastAPI.

Installed innermost among Corral's own middleware, so the Host check, CORS, API key, request log and metrics apply
exactly as they do to the routed requests.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from corral import __version__
from corral.api import native
from corral.store.store import Store


@dataclass(frozen=True)
class _Route:
    """What ``scope["route"]`` holds for a routed request, as far as the metrics need it (its template)."""

    path: str


def polled_bodies(store: Store) -> dict[str, Callable[[], bytes]]:
    """Path -> builder of its JSON body: the requests both short ways answer (this module and ``fastlane``)."""
    version = json.dumps({"version": native.OLLAMA_COMPAT_VERSION, "corral_version": __version__},
                         separators=(",", ":")).encode()
    return {
        "/api/tags": lambda: native.tags_body(store),
        "/api/version": lambda: version,
    }


class HotPath:
    def __init__(self, app: ASGIApp, *, store: Store) -> None:
        self.app = app
        self.bodies = polled_bodies(store)
        self.routes = {path: _Route(path) for path in self.bodies}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        build = self.bodies.get(scope["path"]) if scope["type"] == "http" else None
        if build is None or scope["method"] not in ("GET", "HEAD") or scope.get("query_string"):
            await self.app(scope, receive, send)
            return
        body = build()
        scope["route"] = self.routes[scope["path"]]
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
