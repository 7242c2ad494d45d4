"""Exposure controls: the Host-header check against DNS rebinding, CORS origins, and a request-body limit.

A local runtime is reachable from every web page the user opens. Bound to loopback, Corral answers only requests
whose ``Host`` names this machine (CVE-2024-28224 was a DNS-rebinding attack on exactly this), lets browsers in only
from Ollama's default origins plus ``OLLAMA_ORIGINS``/``CORRAL_ORIGINS``, and refuses oversized bodies before reading
them.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
import socket
from collections.abc import Callable, Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral import config

DEFAULT_ORIGIN_HOSTS = ("localhost", "127.0.0.1", "0.0.0.0")
DEFAULT_ORIGIN_SCHEMES = ("app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*")
# Go's net.IP.IsPrivate: RFC 1918 and RFC 4193 only (Python's is_private also counts documentation ranges).
PRIVATE_NETS = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))
DEFAULT_MAX_BODY = 256 << 20  # large enough for any chat with images; blob uploads are exempt (they stream)


def allowed_origins() -> list[str]:
    """Ollama's defaults (http and https, any port, on the loopback names) plus the configured extras."""
    origins: list[str] = []
    for host in DEFAULT_ORIGIN_HOSTS:
        for scheme in ("http", "https"):
            origins += [f"{scheme}://{host}", f"{scheme}://{host}:*"]
    origins += DEFAULT_ORIGIN_SCHEMES
    extra = config.env("ORIGINS")
    if extra:
        origins += [o.strip() for o in extra.split(",") if o.strip()]
    return origins


def origin_regex(origins: Iterable[str]) -> str:
    """One regex for all allowed origins; ``*`` matches any run of characters, as gin-contrib/cors wildcards do."""
    parts = []
    for origin in origins:
        if origin == "*":
            return ".*"
        parts.append(".*".join(re.escape(piece) for piece in origin.split("*")))
    return "^(" + "|".join(parts) + ")$"


def _own_addresses() -> set[str]:
    addrs: set[str] = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            addrs.add(str(info[4][0]))
    except OSError:
        pass
    return addrs


def host_allowed(host_header: str, own_hostname: str, own_addrs: set[str]) -> bool:
    """Ollama's allowedHostsMiddleware rules."""
    host = host_header.strip()
    if not host:
        return True
    if host.startswith("["):  # [v6]:port
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    host = host.lower().rstrip(".")
    if host in ("localhost", own_hostname.lower()) or host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified or any(ip in net for net in PRIVATE_NETS) or host in own_addrs


class HostRule:
    """Which ``Host`` headers name this machine; shared by the middleware and the protocol-level fast lane."""

    def __init__(self) -> None:
        self.hostname = socket.gethostname()
        self.addrs = _own_addresses()
        # Clients send the same one or two Host values on every request; parsing them as addresses each time is
        # a tenth of a polled request's cost. Bounded, so a stream of made-up Hosts only churns it.
        self.allows: Callable[[str], bool] = functools.lru_cache(maxsize=256)(self._allows)

    def _allows(self, host_header: str) -> bool:
        return host_allowed(host_header, self.hostname, self.addrs)


class HostCheck:
    """403 for a request whose Host header does not name this machine, while bound to a loopback address."""

    def __init__(self, app: ASGIApp, *, enabled: bool) -> None:
        self.app = app
        self.enabled = enabled
        self.rule = HostRule()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.enabled and scope["type"] == "http":
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            if not self.rule.allows(host):
                await send({"type": "http.response.start", "status": 403, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
        await self.app(scope, receive, send)


class OriginCheck:
    """403 for a request whose ``Origin`` is neither allowed nor this server itself (gin-contrib/cors' rule).

    CORS headers only decide whether a page may *read* an answer; a browser still *sends* a "simple" cross-origin
    POST (``Content-Type: text/plain``) without asking first, and Corral, like Ollama, reads every body as JSON. So
    without this check any web page could make the server pull, create, copy or push models blind. Requests without
    an ``Origin`` (every non-browser client) pass.
    """

    def __init__(self, app: ASGIApp, *, origins: Iterable[str]) -> None:
        self.app = app
        self.allowed = re.compile(origin_regex(origins))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            origin = next((v.decode("latin-1") for k, v in headers if k == b"origin"), None)
            if origin is not None and not self.allowed.fullmatch(origin):
                host = next((v.decode("latin-1") for k, v in headers if k == b"host"), "")
                if origin not in (f"http://{host}", f"https://{host}"):  # same-origin fetch() sends it too
                    await send({"type": "http.response.start", "status": 403, "headers": []})
                    await send({"type": "http.response.body", "body": b""})
                    return
        await self.app(scope, receive, send)


class BodyLimit:
    """413 in Ollama's error shape for bodies over ``CORRAL_MAX_BODY`` bytes, declared or streamed."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/api/blobs/"):
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(send)
            return
        if declared is not None:
            await self.app(scope, receive, send)  # the server stops reading at Content-Length
            return
        # A chunked body: read it here, up to the limit, and replay it to the route.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._reject(send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}],
                                      receive), send)

    def _message(self) -> str:
        return f"request body too large (limit {self.limit} bytes)"

    async def _reject(self, send: Send) -> None:
        body = json.dumps({"error": self._message()}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


def max_body() -> int:
    return config.env_int("MAX_BODY", DEFAULT_MAX_BODY)
