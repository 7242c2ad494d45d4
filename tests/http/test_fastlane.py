"""The protocol-level lane for polled GETs (``corral/http/fastlane.py``): byte-for-byte the app's answer, in order on a
pipelined connection, and out of the way of every request it must not take (other Hosts, browsers, bodies)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import tomllib
from pathlib import Path

import pytest
import uvicorn
from conftest import ROOT, ServerProcess, running_server
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from corral.http import fastlane
from corral.http.coalesce import HeadWithBody
from corral.http.fastlane import FastLane, protocol_class
from corral.store.store import Store


class RawConnection:
    """One keep-alive TCP connection that sends requests as given and reads responses one by one."""

    def __init__(self, server: ServerProcess) -> None:
        host, port = server.host.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.file = self.sock.makefile("rb")

    def send(self, *requests: bytes) -> None:
        self.sock.sendall(b"".join(requests))

    def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        status = int(self.file.readline().split()[1])
        headers: dict[str, str] = {}
        while (line := self.file.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if head_only:
            return status, headers, b""
        if headers.get("transfer-encoding") == "chunked":
            chunks = []
            while size := int(self.file.readline().split(b";")[0], 16):
                chunks.append(self.file.read(size + 2)[:-2])
            self.file.readline()
            return status, headers, b"".join(chunks)
        return status, headers, self.file.read(int(headers.get("content-length", "0")))

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def get(path: str, host: str, extra: str = "", method: str = "GET", version: str = "1.1") -> bytes:
    return f"{method} {path} HTTP/{version}\r\nHost: {host}\r\n{extra}\r\n".encode()


@pytest.fixture
def conn(server: ServerProcess) -> RawConnection:
    c = RawConnection(server)
    yield c
    c.close()


@pytest.mark.e2e
def test_same_status_headers_and_body_as_the_app(server: ServerProcess, conn: RawConnection) -> None:
    for path in ("/api/tags", "/api/version"):
        conn.send(get(path, server.host), get(path + "?via=app", server.host))
        fast, routed = conn.response(), conn.response()
        assert fast[0] == routed[0] == 200
        assert fast[2] == routed[2]
        assert sorted(fast[1]) == sorted(routed[1])  # date, server, content-type, content-length
        assert fast[1]["content-type"] == "application/json"
    conn.send(get("/api/tags", server.host, method="HEAD"))
    status, headers, _ = conn.response(head_only=True)
    assert status == 200 and int(headers["content-length"]) > 0
    conn.send(get("/api/version", server.host))  # nothing stray was written after the HEAD answer
    assert json.loads(conn.response()[2])["version"]


@pytest.mark.e2e
def test_pipelined_requests_are_answered_in_order(server: ServerProcess, conn: RawConnection) -> None:
    show = json.dumps({"model": "smollm2:135m"}).encode()
    conn.send(
        get("/api/tags", server.host),
        f"POST /api/show HTTP/1.1\r\nHost: {server.host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(show)}\r\n\r\n".encode() + show,
        get("/api/version", server.host),  # behind a routed request: must wait for it, not overtake it
        get("/api/nothing-here", server.host),
        get("/api/tags", server.host),
    )
    answers = [conn.response() for _ in range(5)]
    assert [a[0] for a in answers] == [200, 200, 200, 404, 200]
    assert "models" in json.loads(answers[0][2]) and "modelfile" in json.loads(answers[1][2])
    assert "version" in json.loads(answers[2][2]) and "models" in json.loads(answers[4][2])


@pytest.mark.e2e
def test_many_polls_on_one_connection_and_a_log_line_each(server: ServerProcess, conn: RawConnection) -> None:
    before = server.log_text().count('path="/api/version" status=200')
    for _ in range(50):
        conn.send(get("/api/version", server.host))
        assert conn.response()[0] == 200
    deadline = time.monotonic() + 10  # each line is written just after its answer: the last may trail a little
    while server.log_text().count('path="/api/version" status=200') < before + 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.log_text().count('path="/api/version" status=200') >= before + 50


@pytest.mark.e2e
def test_requests_it_must_not_take_get_the_apps_answer(server: ServerProcess, conn: RawConnection) -> None:
    conn.send(get("/api/tags", "evil.example.com"))  # DNS rebinding: the Host check still refuses it
    assert conn.response()[0] == 403
    conn.send(get("/api/tags", server.host, "Origin: http://localhost:5173\r\n"))  # a browser: CORS headers
    status, headers, _ = conn.response()
    assert status == 200 and headers["access-control-allow-origin"] == "http://localhost:5173"
    conn.send(get("/api/tags", server.host, "Origin: https://evil.example.com\r\n"))
    assert conn.response()[0] == 403
    conn.send(get("/api/tags", "evil.example.com", f"Host: {server.host}\r\n"))  # a second Host does not help
    assert conn.response()[0] in (400, 403)
    conn.send(get("/api/tags", server.host, method="DELETE"))
    assert conn.response()[0] == 405


@pytest.mark.e2e
def test_answers_the_app_gives_with_a_held_head_arrive_whole(server: ServerProcess, conn: RawConnection) -> None:
    """Through the real server: a HEAD answer (no body write to carry its head) and a body answer behind it."""
    conn.send(get("/", server.host, method="HEAD"), get("/api/version?via=app", server.host, method="HEAD"),
              get("/api/version?via=app", server.host))
    assert conn.response(head_only=True)[0] == 200
    status, headers, _ = conn.response(head_only=True)
    assert status == 200 and int(headers["content-length"]) > 0
    status, _, body = conn.response()
    assert status == 200 and json.loads(body)["version"]


@pytest.mark.e2e
def test_http_1_0_is_answered_and_closed(server: ServerProcess) -> None:
    c = RawConnection(server)
    try:
        c.send(get("/api/version", server.host, version="1.0"))
        status, _, body = c.response()
        assert status == 200 and json.loads(body)["version"]
        assert c.file.read() == b""  # the server closed the connection
    finally:
        c.close()


@pytest.mark.parametrize(("method", "url", "headers", "taken"), [
    (b"GET", b"/api/tags", [(b"host", b"127.0.0.1:11434")], True),
    (b"HEAD", b"/api/version", [(b"host", b"localhost")], True),
    (b"GET", b"/api/tags", [], True),  # no Host header: the HostCheck lets it through too
    (b"POST", b"/api/tags", [(b"host", b"localhost")], False),
    (b"GET", b"/api/tags?x=1", [(b"host", b"localhost")], False),
    (b"GET", b"/api/tags/", [(b"host", b"localhost")], False),
    (b"GET", b"/api/%74ags", [(b"host", b"localhost")], False),
    (b"GET", b"http://localhost/api/tags", [(b"host", b"localhost")], False),
    (b"GET", b"/api/tags", [(b"host", b"attacker.example")], False),
    (b"GET", b"/api/tags", [(b"host", b"attacker.example"), (b"host", b"localhost")], False),
    (b"GET", b"/api/tags", [(b"host", b"localhost"), (b"host", b"localhost")], False),
    (b"GET", b"/api/tags", [(b"host", b"localhost"), (b"origin", b"http://localhost")], False),
    (b"GET", b"/api/tags", [(b"host", b"localhost"), (b"content-length", b"3")], False),
    (b"GET", b"/api/tags", [(b"host", b"localhost"), (b"transfer-encoding", b"chunked")], False),
    (b"GET", b"/api/version", [(b"host", b"localhost"), (b"expect", b"100-continue")], False),
])
def test_which_requests_the_lane_takes(tmp_path: Path, method: bytes, url: bytes,
                                       headers: list[tuple[bytes, bytes]], taken: bool) -> None:
    lane = FastLane(Store(tmp_path / "models"), check_host=True)
    body = lane.body_for(method, url, headers)
    assert (body is not None) == taken
    if body is not None:
        assert json.loads(body)


def test_without_the_host_rule_any_host_is_taken(tmp_path: Path) -> None:
    lane = FastLane(Store(tmp_path / "models"), check_host=False)  # bound beyond loopback: no Host check
    assert lane.body_for(b"GET", b"/api/tags", [(b"host", b"corral.lan:11434")]) == b'{"models":[]}'


class _Transport(asyncio.Transport):
    """Collects what the protocol writes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 11434)}.get(name, default)

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_the_lane_answers_inside_the_protocol(tmp_path: Path) -> None:
    """Answered while the bytes are parsed, before any task could run: the lane is in use with this uvicorn (the
    answers alone could not tell, since the app gives the same ones)."""
    loop = asyncio.new_event_loop()
    try:
        lane = FastLane(Store(tmp_path / "models"), check_host=True)

        async def app(scope: object, receive: object, send: object) -> None:
            raise AssertionError("the app must not be called")

        protocol = protocol_class(lane)(config=uvicorn.Config(app, log_level="warning", access_log=False),
                                        server_state=ServerState(), app_state={}, _loop=loop)
        transport = _Transport()
        protocol.connection_made(transport)
        protocol.data_received(b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\n\r\n"
                               b"HEAD /api/version HTTP/1.1\r\nHost: localhost\r\n\r\n")
        first, second = transport.written.split(b"HTTP/1.1 200 OK\r\n")[1:]
        assert first.endswith(b'\r\n\r\n{"models":[]}') and b"content-type: application/json" in first
        assert second.endswith(b"\r\nvary: Origin\r\n\r\n")  # HEAD: no body
        protocol.connection_lost(None)
    finally:
        loop.close()


def test_a_failing_body_goes_to_the_app(tmp_path: Path) -> None:
    """An error while building the answer is the app's to report (status, log), not a parser error."""
    loop = asyncio.new_event_loop()
    try:
        lane = FastLane(Store(tmp_path / "models"), check_host=False)

        def broken() -> bytes:
            raise OSError("store unreadable")

        lane.bodies[b"/api/tags"] = broken
        called: list[str] = []

        async def app(scope: dict[str, object], receive: object, send: object) -> None:
            called.append(str(scope["path"]))

        protocol = protocol_class(lane)(config=uvicorn.Config(app, log_level="warning", access_log=False),
                                        server_state=ServerState(), app_state={}, _loop=loop)
        transport = _Transport()
        protocol.connection_made(transport)
        protocol.data_received(b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert transport.written == b""  # not a 400 "Invalid HTTP request"
        loop.run_until_complete(asyncio.sleep(0.05))  # the app's task runs
        assert called == ["/api/tags"]
        assert isinstance(protocol.cycle.transport, HeadWithBody)  # the app's answers get their heads coalesced
        protocol.connection_lost(None)
    finally:
        loop.close()


# -- the lane lives on uvicorn's internals: the versions and names it was tested with ---------------------------------


def test_uvicorn_internals_the_lane_uses_are_there() -> None:
    """Every private name of uvicorn's (and parser method of httptools') that the lane and the coalescer use, and
    the versions, as ``corral serve`` checks them at start. A failure here names what moved; until it is fixed
    the server runs without the lane (see test_server_without_the_lane_when_uvicorn_moved)."""
    problems = fastlane.hook_problems()
    assert not problems, "uvicorn/httptools internals moved under corral/http/fastlane.py: " + "; ".join(problems)


def test_tested_ranges_are_the_pinned_ones() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {d.split(">=")[0]: d for d in deps if d.startswith(("uvicorn", "httptools"))}
    for name, ((a, b), (c, d)) in (("uvicorn", fastlane.TESTED_UVICORN), ("httptools", fastlane.TESTED_HTTPTOOLS)):
        assert pins[name] == f"{name}>={a}.{b},<{c}.{d}", f"pyproject.toml and fastlane.TESTED_* disagree on {name}"


class _MovedProtocol:
    """A protocol class as a uvicorn release might reshape it: ``pipeline`` renamed, no ``on_response_complete``."""

    def __init__(self) -> None:
        self.parser = self.url = self.headers = self.cycle = self.flow = None
        self.access_log = self.server_state = self.transport = self.loop = self.client = None
        self.queued: list[object] = []

    def on_message_begin(self) -> None: ...
    def on_headers_complete(self) -> None: ...
    def on_body(self, body: bytes) -> None: ...
    def on_message_complete(self) -> None: ...


def test_the_check_names_what_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    assert fastlane.hook_problems(_MovedProtocol) == [
        "_MovedProtocol.pipeline", "_MovedProtocol.on_response_complete()"]
    monkeypatch.setattr(uvicorn, "__version__", "0.56.0")
    assert fastlane.hook_problems() == ["uvicorn 0.56.0 is outside the tested range >=0.30,<0.56"]


def test_the_server_falls_back_when_the_check_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    lane = FastLane(Store(tmp_path / "models"), check_host=True)
    chosen = fastlane.server_protocol(lane)
    assert isinstance(chosen, type) and issubclass(chosen, HttpToolsProtocol)
    monkeypatch.setattr(fastlane, "hook_problems", lambda: ["HttpToolsProtocol.pipeline"])
    with caplog.at_level(logging.WARNING):
        assert fastlane.server_protocol(lane) == "auto"  # uvicorn's own protocol: every request through the app
    assert [r.getMessage() for r in caplog.records] == [
        "fast lane and coalesced heads off, every request goes through the app: HttpToolsProtocol.pipeline"]


@pytest.mark.e2e
def test_server_without_the_lane_when_uvicorn_moved(server: ServerProcess, tmp_path: Path) -> None:
    """A real server whose uvicorn reports a release past the tested range (set by a sitecustomize in the server's
    interpreter) starts, says so in one warning line, and answers through the app; the usual server has no such
    line."""
    assert "fast lane and coalesced heads off" not in server.log_text()
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import uvicorn\nuvicorn.__version__ = '0.56.0'\n")
    with running_server(tmp_path / "srv", {"PYTHONPATH": str(site), "CORRAL_NOBUNDLED": "1"}) as srv:
        c = RawConnection(srv)
        try:
            for path in ("/api/tags", "/api/version", "/api/tags?via=app"):
                c.send(get(path, srv.host))
                status, headers, body = c.response()
                assert status == 200 and headers["content-type"] == "application/json" and json.loads(body)
        finally:
            c.close()
        warnings = [line for line in srv.log_text().splitlines() if "fast lane and coalesced heads off" in line]
        assert len(warnings) == 1 and "level=WARNING" in warnings[0]
        assert "uvicorn 0.56.0 is outside the tested range >=0.30,<0.56" in warnings[0]
