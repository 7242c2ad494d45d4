"""``/ui`` as HTTP: content types, the security and caching headers, the API-key exemption (exactly the page's own
files), the Origin rule for the page's POSTs, and the ``corral ui`` command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from conftest import ServerProcess, free_port, stop_auto_started_servers
from fastapi.testclient import TestClient

from corral.api import ui
from corral.cli.webui import page_url
from corral.config import HostPort

UI_DIR = Path(ui.__file__).resolve().parent.parent / "ui"
KEY = "route-test-key"


@pytest.fixture
def app_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    from corral.http.app import create_app

    monkeypatch.delenv("CORRAL_API_KEY", raising=False)
    yield TestClient(create_app(tmp_path / "models"), base_url="http://127.0.0.1:11434")


@pytest.fixture
def locked_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    from corral.http.app import create_app

    monkeypatch.setenv("CORRAL_API_KEY", KEY)
    yield TestClient(create_app(tmp_path / "models"), base_url="http://127.0.0.1:11434")


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text.append(data)


def test_page_and_files_have_types_and_security_headers(app_client: TestClient) -> None:
    r = app_client.get("/ui")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    csp = {d.split()[0]: d.split()[1:] for d in r.headers["content-security-policy"].split("; ")}
    assert csp["default-src"] == ["'self'"] and csp["script-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'"] and csp["frame-ancestors"] == ["'none'"]
    assert not any("unsafe" in v for values in csp.values() for v in values)
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-cache" and re.fullmatch(r'"[0-9a-f]{20}"', r.headers["etag"])
    for element in ("model", "prompt", "send", "stop", "messages"):
        assert f'id="{element}"' in r.text

    types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
    files = sorted(p.name for p in UI_DIR.iterdir() if p.name != "index.html")
    assert files and set(files) == set(ui.ASSETS) - {"index.html"}
    for name in files:
        r = app_client.get(f"/ui/{name}")
        assert r.status_code == 200, name
        assert r.headers["content-type"] == types[Path(name).suffix], name
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert r.content == (UI_DIR / name).read_bytes()


def test_page_has_no_inline_script_and_loads_only_its_own_files(app_client: TestClient) -> None:
    page = Tags()
    page.feed(app_client.get("/ui").text)
    scripts = [attrs for tag, attrs in page.tags if tag == "script"]
    assert scripts and all(attrs.get("src") for attrs in scripts)
    assert "".join(page.script_text).strip() == ""
    for tag, attrs in page.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        assert "style" not in attrs, (tag, attrs)  # the CSP allows no inline style either
        for name in ("src", "href"):
            url = attrs.get(name)
            if url:
                assert url.startswith("ui/"), url  # relative: works behind a reverse proxy's path prefix
                assert app_client.get("/" + url).status_code == 200, url
    # Every module the page imports is served.
    for name in ui.ASSETS:
        if name.endswith(".js"):
            for imported in re.findall(r'from "\./([\w.-]+)"', (UI_DIR / name).read_text()):
                assert imported in ui.ASSETS, (name, imported)
    # Model output must never become HTML.
    for name in ("app.js", "markdown.js", "api.js", "chats.js"):
        source = (UI_DIR / name).read_text()
        assert "innerHTML" not in source and "insertAdjacentHTML" not in source and "document.write" not in source


def test_caching_head_redirect_and_unknown_paths(app_client: TestClient) -> None:
    first = app_client.get("/ui/app.js")
    again = app_client.get("/ui/app.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == first.headers["etag"]
    assert app_client.get("/ui/app.js", headers={"If-None-Match": '"other"'}).status_code == 200
    head = app_client.head("/ui")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(app_client.get("/ui").content))
    r = app_client.get("/ui/", follow_redirects=False)
    assert r.status_code == 308 and r.headers["location"] == "../ui"
    for path in ("/ui/nope.js", "/ui/index.html", "/ui/..%2Fapi%2Fui.py", "/ui/%2e%2e/app.py"):
        assert app_client.get(path).status_code == 404, path
    assert app_client.get("/").text == "Ollama is running"
    paths = app_client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/ui")]  # a page, not an API: left out of the schema


def test_api_key_exempts_exactly_the_pages_files(locked_client: TestClient) -> None:
    for path in ["/ui", *(f"/ui/{name}" for name in ui.ASSETS if name != "index.html")]:
        assert locked_client.get(path).status_code == 200, path
        assert locked_client.head(path).status_code == 200, path
    assert locked_client.get("/ui/", follow_redirects=False).status_code == 308
    for method, path in (("GET", "/ui/nope.js"), ("POST", "/ui"), ("PUT", "/ui/app.js"), ("DELETE", "/ui"),
                         ("GET", "/api/tags"), ("GET", "/api/ps"), ("POST", "/api/chat"), ("GET", "/uix"),
                         ("GET", "/ui/app.js/x"), ("GET", "/openapi.json")):
        assert locked_client.request(method, path).status_code == 401, (method, path)
    assert locked_client.get("/api/version", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1:11434", "localhost:11434", "192.168.1.20:11434", "[::1]:11434"])
def test_the_pages_own_origin_may_post(app_client: TestClient, host: str) -> None:
    # A browser sends Origin on every POST, same-origin ones included; the page's own origin must pass.
    headers = {"Host": host, "Origin": f"http://{host}"}
    r = app_client.post("/api/show", json={"model": "absent"}, headers=headers)
    assert r.status_code == 404 and "not found" in r.json()["error"]
    assert app_client.get("/ui", headers=headers).status_code == 200
    evil = app_client.post("/api/show", json={"model": "absent"}, headers={"Host": host,
                                                                         "Origin": "http://evil.example"})
    assert evil.status_code == 403


def test_page_url_names_a_reachable_address() -> None:
    assert page_url(HostPort("http", "127.0.0.1", 11434)) == "http://127.0.0.1:11434/ui"
    assert page_url(HostPort("http", "0.0.0.0", 8080)) == "http://127.0.0.1:8080/ui"
    assert page_url(HostPort("http", "::", 8080)) == "http://[::1]:8080/ui"
    assert page_url(HostPort("https", "box.local", 443)) == "https://box.local:443/ui"


# -- corral ui -------------------------------------------------------------------------------------------------------


def corral(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "corral", *args], env=env, text=True, capture_output=True,
                          timeout=120)


def no_display(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER")}


@pytest.mark.e2e
def test_corral_ui_prints_or_opens_the_url(server: ServerProcess, tmp_path: Path) -> None:
    url = server.url + "/ui"
    r = corral(server.env, "ui", "--no-browser")
    assert (r.returncode, r.stdout) == (0, url + "\n"), r.stderr
    r = corral(no_display(server.env), "ui")  # no browser to open here: the URL instead
    assert (r.returncode, r.stdout) == (0, url + "\n"), r.stderr
    # With a browser (BROWSER names one, as on a desktop), the URL goes to it.
    seen = tmp_path / "opened"
    fake = tmp_path / "browser.sh"
    fake.write_text(f'#!/bin/sh\nprintf "%s" "$1" > {seen}\n')
    fake.chmod(0o755)
    r = corral({**no_display(server.env), "BROWSER": str(fake)}, "ui")
    assert r.returncode == 0, r.stderr
    assert seen.read_text() == url
    assert r.stdout == "" and url in r.stderr
    assert httpx.get(seen.read_text()).status_code == 200


@pytest.mark.e2e
def test_corral_ui_starts_the_server(tmp_path: Path) -> None:
    port = free_port()
    home = tmp_path / "home"
    env = {k: v for k, v in no_display(dict(os.environ)).items() if not k.startswith(("OLLAMA_", "CORRAL_"))}
    env.update({"CORRAL_HOST": f"127.0.0.1:{port}", "CORRAL_HOME": str(home),
                "CORRAL_MODELS": str(tmp_path / "models"), "CORRAL_NUM_THREADS": "1"})
    try:
        r = corral(env, "ui", "--no-browser")
        assert r.returncode == 0, r.stderr
        assert r.stdout == f"http://127.0.0.1:{port}/ui\n"
        assert "server" in r.stderr.lower()
        page = httpx.get(r.stdout.strip())
        assert page.status_code == 200 and 'id="prompt"' in page.text
    finally:
        stop_auto_started_servers(home)
