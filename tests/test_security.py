"""Exposure controls through the real server: Host check, CORS, body limit."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from corral.api.security import host_allowed, origin_regex
from tests.conftest import MODEL, ServerProcess, running_server


@pytest.mark.parametrize("host", ["evil.example.com", "attacker.com:11434", "1.2.3.4", "localhost.evil.com"])
def test_foreign_host_header_is_403(server: ServerProcess, host: str) -> None:
    r = httpx.get(server.url + "/api/tags", headers={"Host": host})
    assert r.status_code == 403 and r.content == b""


@pytest.mark.parametrize("host", ["localhost", "localhost:11434", "127.0.0.1:9", "[::1]:11434", "box.local",
                                  "app.localhost", "10.0.0.5", "192.168.1.2:80"])
def test_local_host_headers_are_allowed(server: ServerProcess, host: str) -> None:
    assert httpx.get(server.url + "/api/version", headers={"Host": host}).status_code == 200


def test_host_rules_unit() -> None:
    assert host_allowed("", "myhost", set())
    assert host_allowed("MyHost:1234", "myhost", set())
    assert not host_allowed("example.org", "myhost", set())
    assert host_allowed("203.0.113.9", "myhost", {"203.0.113.9"})
    assert not host_allowed("203.0.113.9", "myhost", set())


def test_cors_allows_local_origins_only(server: ServerProcess) -> None:
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    ok = httpx.options(server.url + "/api/chat", headers={"Origin": "http://localhost:3000", **pre})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://localhost:3000"
    bad = httpx.options(server.url + "/api/chat", headers={"Origin": "https://evil.example.com", **pre})
    assert "access-control-allow-origin" not in bad.headers
    get = httpx.get(server.url + "/api/tags", headers={"Origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in get.headers


def test_configured_origins_and_wildcards(tmp_path: Path) -> None:
    with running_server(tmp_path, {"OLLAMA_ORIGINS": "https://*.example.org,chrome-extension://abc"}) as srv:
        for origin in ("https://app.example.org", "chrome-extension://abc"):
            r = httpx.get(srv.url + "/api/version", headers={"Origin": origin})
            assert r.headers.get("access-control-allow-origin") == origin
        r = httpx.get(srv.url + "/api/version", headers={"Origin": "https://example.org.evil.com"})
        assert "access-control-allow-origin" not in r.headers


def test_origin_regex_escapes_dots() -> None:
    import re

    rx = re.compile(origin_regex(["http://localhost:*"]))
    assert rx.match("http://localhost:8080") and not rx.match("http://localhostX8080")


def test_oversized_body_is_413(tmp_path: Path) -> None:
    with running_server(tmp_path, {"CORRAL_MAX_BODY": "10000"}) as srv:
        big = {"model": MODEL, "prompt": "x" * 20000}
        r = httpx.post(srv.url + "/api/generate", json=big)
        assert r.status_code == 413 and "too large" in r.json()["error"]

        def chunks():  # no Content-Length: the limit is enforced while reading
            for _ in range(20):
                yield b" " * 1000

        r = httpx.post(srv.url + "/api/generate", content=chunks())
        assert r.status_code == 413 and "too large" in r.json()["error"]
        assert httpx.get(srv.url + "/").status_code == 200
