"""Exposure controls through the real server: Host check, Origin check and CORS, body limit; and the checks behind
entries of docs/security.md that no other test file holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.http.security import host_allowed, origin_regex
from tests.conftest import MODEL, ServerProcess, running_server


@pytest.mark.e2e
@pytest.mark.parametrize("host", ["evil.example.com", "attacker.com:11434", "1.2.3.4", "localhost.evil.com"])
def test_foreign_host_header_is_403(server: ServerProcess, host: str) -> None:
    r = httpx.get(server.url + "/api/tags", headers={"Host": host})
    assert r.status_code == 403 and r.content == b""


@pytest.mark.parametrize("host", ["localhost", "localhost:11434", "127.0.0.1:9", "[::1]:11434", "box.local",
                                  "app.localhost", "10.0.0.5", "192.168.1.2:80"])
@pytest.mark.e2e
def test_local_host_headers_are_allowed(server: ServerProcess, host: str) -> None:
    assert httpx.get(server.url + "/api/version", headers={"Host": host}).status_code == 200


def test_host_rules_unit() -> None:
    assert host_allowed("", "myhost", set())
    assert host_allowed("MyHost:1234", "myhost", set())
    assert not host_allowed("example.org", "myhost", set())
    assert host_allowed("203.0.113.9", "myhost", {"203.0.113.9"})
    assert not host_allowed("203.0.113.9", "myhost", set())


@pytest.mark.e2e
def test_cors_allows_local_origins_only(server: ServerProcess) -> None:
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    ok = httpx.options(server.url + "/api/chat", headers={"Origin": "http://localhost:3000", **pre})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://localhost:3000"
    bad = httpx.options(server.url + "/api/chat", headers={"Origin": "https://evil.example.com", **pre})
    assert "access-control-allow-origin" not in bad.headers
    get = httpx.get(server.url + "/api/tags", headers={"Origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in get.headers


@pytest.mark.e2e
def test_blind_cross_origin_posts_are_refused(server: ServerProcess) -> None:
    """A page may send a "simple" POST (text/plain) cross-origin without a preflight; CORS alone only hides the
    answer. Like Ollama (gin-contrib/cors), Corral refuses a disallowed Origin outright, so the copy never happens."""
    copy = json.dumps({"source": MODEL, "destination": "stolen-by-page"})
    for origin in ("https://evil.example.com", "null", "http://localhost.evil.com"):
        r = httpx.post(server.url + "/api/copy", content=copy, headers={"Origin": origin, "Content-Type": "text/plain"})
        assert r.status_code == 403 and r.content == b"", origin
    names = [m["name"] for m in httpx.get(server.url + "/api/tags").json()["models"]]
    assert "stolen-by-page:latest" not in names
    # allowed origins, and a same-origin fetch() (Origin equals this server), are served
    for origin in ("http://localhost:3000", server.url):
        r = httpx.get(server.url + "/api/version", headers={"Origin": origin})
        assert r.status_code == 200, origin


@pytest.mark.e2e
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


@pytest.mark.e2e
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


# -- CVE-2024-39719 / -39721 / -39722: the API never opens a server-side path a client names ----------------------


@pytest.mark.parametrize(("present", "absent"), [("/etc/passwd", "/etc/no-such-file"), ("/root", "/no-such-dir"),
                                                 ("/dev/random", "/dev/no-such-device")])
@pytest.mark.e2e
def test_create_and_push_never_reveal_whether_a_path_exists(server: ServerProcess, present: str,
                                                            absent: str) -> None:
    """Ollama's create once answered differently for existing and missing files (a file-existence oracle), and
    hung reading a device file. Corral's /api/create takes blobs by digest and bases by model name only."""
    zero = "sha256:" + "0" * 64

    def answers(path: str) -> list[tuple[int, str]]:
        bodies = [{"model": "x", "from": path}, {"model": "x", "files": {path: zero}},
                  {"model": "x", "from": MODEL, "adapters": {path: zero}},
                  {"model": "x", "from": MODEL, "draft_files": {path: zero}}]
        out = []
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for body in bodies:
                r = client.post("/api/create", json={**body, "stream": False})
                out.append((r.status_code, r.json()["error"].replace(path, "<path>")))
            r = client.post("/api/push", json={"model": path, "stream": False})
            out.append((r.status_code, r.json()["error"].replace(path, "<path>")))
        return out

    seen = answers(present)
    assert seen == answers(absent)
    assert all(status == 400 for status, _ in seen), seen


# -- CVE-2024-12886: registry answers are read with a bound, decompression included ---------------------------------


def _gzip_bomb(decoded: int) -> list[bytes]:
    """``decoded`` zero bytes, gzip-compressed (about 1000:1), in 1 KiB network-sized pieces."""
    import zlib

    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    data = b"".join(packer.compress(zeros) for _ in range(decoded >> 20)) + packer.flush()
    return [data[i:i + 1024] for i in range(0, len(data), 1024)]


def test_registry_reads_are_bounded_against_gzip_bombs() -> None:
    import asyncio
    import tracemalloc

    from corral.errors import RegistryError
    from corral.registry.auth import Challenge, Credentials, fetch_token
    from corral.registry.client import MAX_MANIFEST_BYTES, RegistryClient
    from corral.registry.endpoint import Endpoint
    from corral.store.names import parse_name

    pieces = _gzip_bomb(256 << 20)

    async def bomb(request: httpx.Request) -> httpx.Response:
        async def body() -> Any:
            for piece in pieces:
                yield piece

        return httpx.Response(200, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
                              content=body())

    async def attack() -> list[str]:
        messages = []
        async with httpx.AsyncClient(transport=httpx.MockTransport(bomb)) as http:
            try:
                await fetch_token(http, Challenge("bearer", realm="https://r.example/token"),
                                  httpx.URL("https://r.example/v2/"), Credentials(), "test")
            except RegistryError as exc:
                messages.append(str(exc))
        client = RegistryClient(Endpoint(parse_name("r.example/library/bomb:latest"), "https://r.example"))
        await client.aclose()
        client._http = httpx.AsyncClient(transport=httpx.MockTransport(bomb))
        try:
            await client.get_manifest()
        except RegistryError as exc:
            messages.append(str(exc))
        await client.aclose()
        return messages

    tracemalloc.start()
    try:
        messages = asyncio.run(attack())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert messages == ["registry response is larger than 1048576 bytes",
                        f"registry response is larger than {MAX_MANIFEST_BYTES} bytes"]
    assert peak < 32 << 20, f"{peak} bytes allocated while refusing a 256 MiB bomb"


# -- the engine behind the server is not a second, unguarded API -------------------------------------------------------


@pytest.mark.e2e
def test_runner_refuses_requests_without_its_key(server: ServerProcess) -> None:
    """Each runner listens on loopback (or a Unix socket) behind a random per-runner key, so no other local program can
    use the engine directly, bypassing Corral's limits, logs and API key."""
    import re

    with server.client() as client:
        assert client.post("/api/generate", json={"model": MODEL, "prompt": "hi", "stream": False,
                                                  "options": {"num_predict": 1}}).status_code == 200
    urls = re.findall(r"runner pid=\d+ serving \S+ on (\S+)", server.log_text())
    assert urls, "no runner address in the server log"
    url = urls[-1]
    if url.startswith("unix://"):
        engine = httpx.Client(transport=httpx.HTTPTransport(uds=url[len("unix://"):]), base_url="http://engine")
    else:
        engine = httpx.Client(base_url=url)
    with engine:
        for headers in ({}, {"Authorization": "Bearer guessed"}):
            r = engine.post("/completion", json={"prompt": "hi", "n_predict": 1}, headers=headers, timeout=30)
            assert r.status_code == 401, (headers, r.status_code, r.text[:200])
