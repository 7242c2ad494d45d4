"""Optional API-key authentication through the real server, with every client family: httpx, the OpenAI, Anthropic
and ollama SDKs, and the ``corral`` CLI; and ``CORRAL_REQUIRE_AUTH`` refusing an unprotected wide bind."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import ollama
import openai
import pytest
from conftest import MODEL, ServerProcess, free_port, running_server

from corral import config
from corral.http.auth import INVALID, MISSING, key_matches, presented_keys

KEY = "corral-test-key-" + os.urandom(8).hex()
BEARER = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"CORRAL_API_KEY": KEY, "CORRAL_CONTEXT_LENGTH": "512", "CORRAL_NUM_PARALLEL": "1"}  # a quick load
    with running_server(tmp_path_factory.mktemp("auth"), env) as srv:
        yield srv


# -- the rule, route by route ---------------------------------------------------------------------------------------

# Bodies that end quickly once let in (unknown model, refused name): the point is only whether they are let in.
ROUTES = [
    ("GET", "/api/tags", None), ("GET", "/api/version", None), ("GET", "/api/ps", None),
    ("POST", "/api/show", {"model": MODEL}), ("POST", "/api/chat", {"model": "absent", "messages": []}),
    ("POST", "/api/generate", {"model": "absent"}), ("POST", "/api/embed", {"model": "absent", "input": "x"}),
    ("DELETE", "/api/delete", {"model": "absent"}), ("POST", "/api/pull", {"model": "../x"}),
    ("POST", "/api/create", {"model": "../x", "from": MODEL}), ("HEAD", "/api/blobs/sha256:" + "0" * 64, None),
    ("GET", "/openapi.json", None), ("GET", "/docs", None), ("GET", "/api/nonexistent", None),
]


@pytest.mark.e2e
@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_native_routes_need_the_key(locked: ServerProcess, method: str, path: str, body: object) -> None:
    with locked.client() as client:
        for headers, message in (({}, MISSING), ({"Authorization": "Bearer wrong"}, INVALID),
                                 ({"Authorization": f"Basic {KEY}"}, MISSING), ({"x-api-key": KEY[:-1]}, INVALID)):
            r = client.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, (headers, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer")
            if method != "HEAD":
                assert r.json() == {"error": message}
        for headers in (BEARER, {"Authorization": f"bearer  {KEY}"}, {"x-api-key": KEY}):
            r = client.request(method, path, json=body, headers=headers)
            assert r.status_code != 401, (headers, r.text)


@pytest.mark.e2e
def test_root_and_cors_preflight_stay_open(locked: ServerProcess) -> None:
    assert httpx.get(locked.url + "/").text == "Ollama is running"
    assert httpx.head(locked.url + "/").status_code == 200
    assert httpx.post(locked.url + "/", json={}).status_code == 401  # only GET and HEAD of / are open
    pre = {"Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization,x-api-key,content-type"}
    r = httpx.options(locked.url + "/v1/chat/completions", headers=pre)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert "X-Api-Key" in r.headers["access-control-allow-headers"]
    # a refused request from an allowed origin still carries CORS headers, so a web app can read the error
    r = httpx.get(locked.url + "/api/tags", headers={"Origin": "http://localhost:5173"})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "http://localhost:5173"


@pytest.mark.e2e
def test_refused_upload_stores_nothing(locked: ServerProcess) -> None:
    data = os.urandom(4096)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert httpx.post(f"{locked.url}/api/blobs/{digest}", content=data).status_code == 401
    assert httpx.head(f"{locked.url}/api/blobs/{digest}", headers=BEARER).status_code == 404
    assert not (locked.models / "blobs" / digest.replace(":", "-")).exists()


@pytest.mark.e2e
def test_openai_and_anthropic_routes_answer_in_their_shapes(locked: ServerProcess) -> None:
    r = httpx.get(locked.url + "/v1/models", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert r.json() == {"error": {"message": "unauthorized: invalid API key", "type": "invalid_request_error",
                                  "param": None, "code": "invalid_api_key"}}
    r = httpx.post(locked.url + "/v1/messages", json={})
    assert r.status_code == 401
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert body["error"]["message"].startswith("unauthorized: ")


# -- real clients ----------------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_openai_sdk(locked: ServerProcess) -> None:
    good = openai.OpenAI(base_url=locked.url + "/v1", api_key=KEY, max_retries=0)
    assert MODEL in [m.id for m in good.models.list()]
    answer = good.chat.completions.create(model=MODEL, max_tokens=2, temperature=0,
                                          messages=[{"role": "user", "content": "Say hi"}])
    assert answer.usage is not None and answer.usage.completion_tokens >= 1
    bad = openai.OpenAI(base_url=locked.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.chat.completions.create(model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 401 and "invalid API key" in caught.value.message


@pytest.mark.e2e
def test_anthropic_sdk(locked: ServerProcess) -> None:
    for good in (anthropic.Anthropic(base_url=locked.url, api_key=KEY, max_retries=0),  # x-api-key
                 anthropic.Anthropic(base_url=locked.url, auth_token=KEY, max_retries=0)):  # Bearer
        answer = good.messages.create(model=MODEL, max_tokens=2,
                                      messages=[{"role": "user", "content": "Say hi"}])
        assert answer.type == "message" and answer.usage.output_tokens >= 1  # the text may be blank: 2 tokens
    bad = anthropic.Anthropic(base_url=locked.url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        bad.messages.create(model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 401 and "invalid API key" in str(caught.value)


@pytest.mark.e2e
def test_ollama_client_with_a_header(locked: ServerProcess) -> None:
    assert MODEL in [m.model for m in ollama.Client(host=locked.url, headers=BEARER).list().models]
    with pytest.raises(ollama.ResponseError) as caught:
        ollama.Client(host=locked.url).list()
    assert caught.value.status_code == 401 and "requires an API key" in caught.value.error


@pytest.mark.e2e
def test_cli_sends_corral_api_key(locked: ServerProcess) -> None:
    def corral(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "corral", *args], env=env, capture_output=True, text=True,
                              timeout=60, check=False)

    with_key = corral(locked.env, "list")
    assert with_key.returncode == 0, with_key.stderr
    assert MODEL in with_key.stdout
    without = {k: v for k, v in locked.env.items() if k != "CORRAL_API_KEY"}
    refused = corral(without, "list")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith("Error: unauthorized: this server requires an API key")
    wrong = corral({**locked.env, "CORRAL_API_KEY": "wrong"}, "list")
    assert wrong.returncode == 1 and "Error: unauthorized: invalid API key" in wrong.stderr
    # Ollama's OLLAMA_API_KEY is an ollama.com credential: never sent to, nor required by, a Corral server
    ollama_named = corral({**without, "OLLAMA_API_KEY": KEY}, "list")
    assert ollama_named.returncode == 1


# -- CORRAL_REQUIRE_AUTH ---------------------------------------------------------------------------------------------


def _serve(tmp: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    tmp.mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "CORRAL_"))}
    base.update({"CORRAL_MODELS": str(tmp / "models"), "CORRAL_HOME": str(tmp / "home"), "CORRAL_NOBUNDLED": "1"})
    return subprocess.Popen([sys.executable, "-m", "corral", "serve"], env={**base, **env}, cwd=tmp,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.e2e
@pytest.mark.parametrize("host_var", ["CORRAL_HOST", "OLLAMA_HOST"])
@pytest.mark.parametrize("address", ["0.0.0.0", "[::]", "192.0.2.10"])
def test_require_auth_refuses_a_wide_bind_without_a_key(tmp_path: Path, host_var: str, address: str) -> None:
    proc = _serve(tmp_path, {"CORRAL_REQUIRE_AUTH": "1", host_var: f"{address}:{free_port()}"})
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: CORRAL_REQUIRE_AUTH is set and the server would listen on ")
    assert lines[0].endswith("but CORRAL_API_KEY is not set")
    assert not (tmp_path / "models").exists()  # refused before touching anything


@pytest.mark.e2e
def test_require_auth_allows_loopback_and_a_keyed_wide_bind(tmp_path: Path) -> None:
    # on loopback the requirement does not apply
    with running_server(tmp_path / "lo", {"CORRAL_REQUIRE_AUTH": "1", "CORRAL_NOBUNDLED": "1"}) as srv:
        assert httpx.get(srv.url + "/api/version").status_code == 200
    # bound to every interface with a key: it starts, and wants the key
    port = free_port()
    proc = _serve(tmp_path / "wide", {"CORRAL_REQUIRE_AUTH": "true", "CORRAL_API_KEY": KEY,
                                      "CORRAL_HOST": f"0.0.0.0:{port}"})
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(url + "/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        assert httpx.get(url + "/api/version").status_code == 401
        assert httpx.get(url + "/api/version", headers=BEARER).status_code == 200
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


# -- units -----------------------------------------------------------------------------------------------------------


def test_presented_keys_and_comparison() -> None:
    headers = [(b"authorization", b"Bearer  abc "), (b"x-api-key", b"def"), (b"authorization", b"Basic xyz"),
               (b"x-api-key", b"  ")]
    assert presented_keys(headers) == [b"abc", b"def"]
    assert key_matches([b"nope", b"def"], b"def")
    assert not key_matches([b"de", b"deff", b""], b"def")
    assert not key_matches([], b"def")


def test_only_corral_api_key_configures_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_API_KEY", raising=False)
    monkeypatch.setenv("OLLAMA_API_KEY", "for-ollama-com")
    assert config.api_key() is None
    monkeypatch.setenv("CORRAL_API_KEY", ' "quoted" ')
    assert config.api_key() == "quoted"
    monkeypatch.setenv("CORRAL_REQUIRE_AUTH", "false")
    assert not config.require_auth()
    monkeypatch.setenv("CORRAL_REQUIRE_AUTH", "1")
    assert config.require_auth()
