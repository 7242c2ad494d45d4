"""The server logs every request, and never what a user typed unless debug logging is on."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest
from conftest import MODEL, ServerProcess, running_server

pytestmark = pytest.mark.e2e

EMBED = "all-minilm:latest"


def _marker(tag: str) -> str:
    return f"SECRET-{tag}-{os.urandom(6).hex()}"


def _wait_for(server: ServerProcess, text: str, count: int = 1, timeout: float = 10.0) -> str:
    """The server log once ``text`` occurs ``count`` times in it (request lines are written as responses end)."""
    deadline = time.monotonic() + timeout
    while True:
        log = server.log_text()
        if log.count(text) >= count or time.monotonic() > deadline:
            return log
        time.sleep(0.1)


def test_default_log_has_one_line_per_request_and_no_content(server: ServerProcess) -> None:
    markers: list[str] = []

    def mark(tag: str) -> str:
        markers.append(_marker(tag))
        return markers[-1]

    one = {"num_predict": 1, "temperature": 0}
    with server.client() as client:
        before = server.log_text().count("source=corral.http msg=request ")
        sent = [
            client.post("/api/generate", json={"model": MODEL, "prompt": mark("prompt"), "system": mark("system"),
                                               "stream": False, "options": one}),
            client.post("/api/chat", json={"model": MODEL, "options": one, "messages": [
                {"role": "system", "content": mark("chat-system")}, {"role": "user", "content": mark("chat")}]}),
            client.post("/v1/chat/completions", json={"model": MODEL, "max_tokens": 1, "stream": True,
                                                      "messages": [{"role": "user", "content": mark("openai")}]}),
            client.post("/v1/completions", json={"model": MODEL, "max_tokens": 1, "prompt": mark("completion")}),
            client.post("/v1/messages", json={"model": MODEL, "max_tokens": 1, "system": mark("anthropic-system"),
                                              "messages": [{"role": "user", "content": mark("anthropic")}]}),
            client.post("/api/embed", json={"model": EMBED, "input": [mark("embed")]}),
            client.post("/api/tokenize", json={"model": MODEL, "content": mark("tokenize")}),
            # failures: an unknown model, a bad option value, a body that is not JSON, a template that fails
            client.post("/api/chat", json={"model": "absent", "messages": [{"role": "user", "content": mark("404")}]}),
            client.post("/api/generate", json={"model": MODEL, "prompt": mark("bad-option"),
                                               "options": {"num_predict": mark("option-value")}}),
            client.post("/api/generate", content=b'{"model": "' + mark("broken-json").encode() + b'", "prompt": '),
            client.post("/api/generate", json={"model": MODEL, "prompt": "x", "template": "{{ .Nope " + mark("tpl"),
                                               "stream": False}),
        ]
        statuses = [r.status_code for r in sent]
    assert statuses[:7] == [200] * 7, [r.text[:200] for r in sent]
    assert all(s >= 400 for s in statuses[7:]), statuses
    log = _wait_for(server, "source=corral.http msg=request ", before + len(sent))
    for marker in markers:
        assert marker not in log, f"{marker} leaked into the server log"
    for path in ("/api/generate", "/api/chat", "/v1/chat/completions", "/v1/completions", "/v1/messages",
                 "/api/embed", "/api/tokenize"):
        assert f'msg=request method=POST path="{path}" status=200 duration=' in log, path
    assert 'path="/api/chat" status=404' in log
    assert "Traceback" not in log


def test_request_lines_cannot_forge_log_lines(server: ServerProcess) -> None:
    forged = "level=ERROR source=corral.http.server msg=forged"
    r = httpx.get(server.url + "/api/%0A" + forged.replace(" ", "%20"))
    assert r.status_code == 404
    log = _wait_for(server, "forged")
    assert not any(line.startswith(forged) for line in log.splitlines())
    assert json.dumps("/api/\n" + forged) in log  # the path is logged JSON-quoted, newline escaped


def test_debug_logs_request_bodies(tmp_path: Path) -> None:
    marker = _marker("debug")
    with running_server(tmp_path, {"CORRAL_DEBUG": "1", "CORRAL_NOBUNDLED": "1"}) as srv, srv.client() as client:
        r = client.post("/api/chat", json={"model": "absent", "messages": [{"role": "user", "content": marker}]})
        assert r.status_code == 404
        big = client.post("/api/generate", json={"model": "absent", "prompt": "y" * (200 << 10)})
        assert big.status_code == 404
        log = _wait_for(srv, 'path="/api/generate" status=404')
    assert marker in log
    body_line = next(line for line in log.splitlines() if marker in line)
    assert 'level=DEBUG source=corral.http msg=request body POST "/api/chat"' in body_line
    cut = next(line for line in log.splitlines() if 'request body POST "/api/generate"' in line)
    assert "(first 65536 of " in cut and len(cut) < 70_000  # a huge body is cut, not copied whole
