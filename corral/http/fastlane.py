"""``GET /api/tags`` and ``/api/version`` answered inside the HTTP protocol, before any ASGI machinery runs.

UIs poll these from every open tab, and on a two-core machine they share the CPU with a generation. Even through
the short ASGI way (``hotpath``) each one pays for uvicorn's scope dict, a task, an event and eight middleware
frames; answered here, as the parser reports the end of the headers, a request costs a header scan and one socket
write of cached bytes (docs/benchmarks.md has the numbers).

Only requests whose answer cannot differ from the ASGI app's are taken: GET or HEAD of exactly those paths (no
query), HTTP/1.1 keep-alive without a body, no ``Origin`` (CORS would add headers), a ``Host`` that the loopback
rule allows, on a connection with nothing else in flight, queued or waiting to be written. A server with an API
key, metrics or an access log does not use this lane at all. Everything else, a refused Host included, goes to
uvicorn's usual path and the app, which gives the usual answer. The request is logged with the same line as
``reqlog``'s.

The lane and the coalesced head (``corral.http.coalesce``) live on uvicorn's internals: they subclass its
``HttpToolsProtocol``, read its per-connection attributes and swap a request cycle's transport. ``hook_problems``
checks, before the server installs them, that the installed uvicorn and httptools are in the range these hooks were
tested on and still have every name used here; ``corral serve`` falls back to uvicorn's own protocol (every request
through the app) with one warning line when they are not.
"""

from __future__ import annotations

import asyncio
import dis
import logging
import re
import time
from collections.abc import Callable, Iterable

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from corral.http import hotpath, reqlog, security
from corral.http.coalesce import HeadWithBody
from corral.store.store import Store

# Request headers that mean the request is not a plain poll: a body, a browser origin, an upgrade, an expectation.
_NOT_A_POLL = frozenset((b"origin", b"content-length", b"transfer-encoding", b"upgrade", b"expect"))


class FastLane:
    """What the lane answers and the checks it applies before answering."""

    def __init__(self, store: Store, *, check_host: bool) -> None:
        self.bodies: dict[bytes, Callable[[], bytes]] = {
            path.encode(): build for path, build in hotpath.polled_bodies(store).items()}
        self.host_rule = security.HostRule() if check_host else None

    def body_for(self, method: bytes, url: bytes, headers: list[tuple[bytes, bytes]]) -> bytes | None:
        """The JSON body for a request this lane may answer; None sends the request down the usual path."""
        if method != b"GET" and method != b"HEAD":
            return None
        build = self.bodies.get(url)
        if build is None:
            return None
        host: bytes | None = None
        for name, value in headers:
            if name == b"host":
                if host is not None:  # two Hosts: the app's answer (its check reads the first), not a guess here
                    return None
                host = value
            elif name in _NOT_A_POLL:
                return None
        if self.host_rule is not None and not self.host_rule.allows((host or b"").decode("latin-1")):
            return None
        return build()


# [low, high): tests/http/test_fastlane.py and tests/http/test_coalesce.py passed on uvicorn 0.30.0 and the last
# release of every minor version up to 0.55, and on httptools 0.6.0-0.9.0. Kept equal to pyproject.toml's pins (a
# test checks); widen both only after running those tests on the new release.
TESTED_UVICORN = ((0, 30), (0, 56))
TESTED_HTTPTOOLS = ((0, 6), (0, 10))

# Every name of uvicorn's and httptools' that the lane and the coalescer use.
PROTOCOL_METHODS = ("on_message_begin", "on_headers_complete", "on_body", "on_message_complete",
                    "on_response_complete")
PROTOCOL_ATTRIBUTES = ("parser", "url", "headers", "cycle", "pipeline", "flow", "access_log", "server_state",
                       "transport", "loop", "client")
CYCLE_ATTRIBUTES = ("transport", "response_complete")
FLOW_ATTRIBUTES = ("write_paused",)
SERVER_STATE_ATTRIBUTES = ("default_headers",)
PARSER_METHODS = ("get_method", "get_http_version", "should_keep_alive")


def _version(text: str) -> tuple[int, int] | None:
    found = re.match(r"(\d+)\.(\d+)", text)
    return (int(found.group(1)), int(found.group(2))) if found else None


def _assigned(cls: type) -> set[str]:
    """The attribute names the methods of ``cls`` (and its bases) assign: its instances' attributes."""
    names: set[str] = set()
    for klass in cls.__mro__:
        for member in vars(klass).values():
            code = getattr(member, "__code__", None)
            if code is not None:
                names.update(str(i.argval) for i in dis.get_instructions(code) if i.opname == "STORE_ATTR")
    return names


def _missing(owner: type, attributes: Iterable[str] = (), methods: Iterable[str] = ()) -> list[str]:
    assigned = _assigned(owner)
    gone = [f"{owner.__qualname__}.{name}" for name in attributes if name not in assigned]
    gone += [f"{owner.__qualname__}.{name}()" for name in methods if not callable(getattr(owner, name, None))]
    return gone


def hook_problems(protocol: type | None = None) -> list[str]:
    """What keeps the lane and the coalescer off with the installed uvicorn and httptools; empty when nothing does.

    Checks the versions against the tested range, then every name this module and ``coalesce`` use: methods must
    exist on the classes, attributes must be assigned by the classes' own methods (found in their bytecode, so
    nothing has to be instantiated). ``protocol`` replaces ``HttpToolsProtocol`` (tests).
    """
    problems: list[str] = []
    for name, installed, (low, high) in (("uvicorn", uvicorn.__version__, TESTED_UVICORN),
                                         ("httptools", httptools.__version__, TESTED_HTTPTOOLS)):
        version = _version(installed)
        if version is None or not low <= version < high:
            problems.append(f"{name} {installed} is outside the tested range >={low[0]}.{low[1]},<{high[0]}.{high[1]}")
    try:
        from uvicorn.protocols.http.flow_control import FlowControl
        from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
        from uvicorn.server import ServerState
    except ImportError as exc:
        return [*problems, f"uvicorn moved a class the fast lane uses ({exc})"]
    problems += _missing(protocol or HttpToolsProtocol, PROTOCOL_ATTRIBUTES, PROTOCOL_METHODS)
    problems += _missing(RequestResponseCycle, CYCLE_ATTRIBUTES)
    problems += _missing(FlowControl, FLOW_ATTRIBUTES)
    problems += _missing(ServerState, SERVER_STATE_ATTRIBUTES)
    problems += [f"httptools.HttpRequestParser.{name}()" for name in PARSER_METHODS
                 if not callable(getattr(httptools.HttpRequestParser, name, None))]
    return problems


def server_protocol(lane: FastLane | None) -> type[asyncio.Protocol] | str:
    """What ``corral serve`` gives ``uvicorn.Config(http=...)``: the lane's protocol, or uvicorn's own ("auto")
    with one warning line when ``hook_problems`` finds the installed uvicorn or httptools unlike the tested ones."""
    problems = hook_problems()
    if problems:
        logging.getLogger(__name__).warning(
            "fast lane and coalesced heads off, every request goes through the app: %s", "; ".join(problems))
        return "auto"
    return protocol_class(lane)


def protocol_class(lane: FastLane | None) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with the lane (when given) in front of its ASGI dispatch, and every other
    response's head sent with its first body bytes (``corral.http.coalesce``); for ``uvicorn.Config(http=...)``."""

    class FastLaneProtocol(HttpToolsProtocol):
        _answered = False

        def on_message_begin(self) -> None:
            self._answered = False
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            if lane is not None and self._idle():
                method = self.parser.get_method()
                try:
                    body = lane.body_for(method, self.url, self.headers)
                except Exception:  # e.g. an unreadable store: the app answers it, with its status and its log
                    body = None
                if body is not None:
                    self._answer(method, body)
                    return
            super().on_headers_complete()
            cycle = getattr(self, "cycle", None)  # None for a WebSocket upgrade
            if cycle is not None and not isinstance(cycle.transport, HeadWithBody):
                cycle.transport = HeadWithBody(self.transport, self.loop)  # its task has not run yet

        def _idle(self) -> bool:
            """Nothing in flight, queued or unsent on this connection, so the answer goes out in order.

            These are uvicorn's per-connection attributes (tests/http/test_fastlane.py pins their meaning); should a
            uvicorn release rename one, every request takes the usual path rather than fail."""
            try:
                return ((self.cycle is None or self.cycle.response_complete) and not self.pipeline
                        and not self.flow.write_paused and not self.access_log
                        and self.parser.get_http_version() == "1.1" and self.parser.should_keep_alive())
            except AttributeError:
                return False

        def _answer(self, method: bytes, body: bytes) -> None:
            started = time.perf_counter()
            self._answered = True
            out = [b"HTTP/1.1 200 OK\r\n"]
            for name, value in self.server_state.default_headers:
                out += [name, b": ", value, b"\r\n"]
            out += [b"content-type: application/json\r\ncontent-length: ", str(len(body)).encode(),
                    b"\r\nvary: Origin\r\n\r\n"]  # as the CORS middleware marks every answer
            if method == b"GET":
                out.append(body)
            self.transport.write(b"".join(out))
            reqlog.log_request(method.decode(), self.url.decode("latin-1"), 200, time.perf_counter() - started,
                               self.client[0] if self.client else None)
            self.on_response_complete()  # uvicorn's own bookkeeping: request count, keep-alive timer, reading on

        def on_body(self, body: bytes) -> None:
            if not self._answered:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if not self._answered:
                super().on_message_complete()

    return FastLaneProtocol
