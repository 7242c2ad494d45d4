"""Prompt paths, request overrides, history fitting and load failures, through the real server."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import ollama
import pytest

from corral.store import manifest as mf
from corral.store.store import Store
from tests.conftest import MODEL, ServerProcess, derive, running_server

pytestmark = pytest.mark.e2e

GREEDY = {"temperature": 0, "num_predict": 20}


def test_native_path_uses_the_ggufs_jinja_template(server: ServerProcess) -> None:
    """Without a TEMPLATE layer the engine applies the GGUF's chat template; the answer has the same shape."""
    from corral.authoring.bundled import builtin_template

    derive(server, "native-smol", drop=(mf.MEDIA_TEMPLATE, mf.MEDIA_SYSTEM))
    # The same chat as a Go template: ChatML with the default system prompt the GGUF's template adds.
    derive(server, "chatml-smol", add={
        mf.MEDIA_TEMPLATE: builtin_template("chatml")[0].encode(),
        mf.MEDIA_SYSTEM: b"You are a helpful AI assistant named SmolLM, trained by Hugging Face"})
    client = ollama.Client(host=server.url)
    show = client.show("native-smol")
    assert "{% for message in messages %}" in (show.template or "")
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    native = client.chat(model="native-smol", messages=msgs, options=GREEDY)
    rendered = client.chat(model="chatml-smol", messages=msgs, options=GREEDY)
    assert native.message.content.strip()
    assert native.done_reason == "length" and native.eval_count == 20
    # Both paths give the engine the same prompt, so greedy decoding yields the same text.
    assert native.message.content == rendered.message.content
    streamed = list(client.chat(model="native-smol", messages=msgs, options=GREEDY, stream=True))
    assert "".join(c.message.content for c in streamed) == native.message.content


def test_system_and_template_overrides(server: ServerProcess) -> None:
    with server.client() as c:
        base = {"model": MODEL, "prompt": "Who are you?", "stream": False, "options": GREEDY}
        plain = c.post("/api/generate", json=base).json()["response"]
        pirate = c.post("/api/generate", json={**base, "system": "You are a pirate. Always say Arr."}).json()
        assert pirate["response"] != plain
        custom = c.post("/api/generate", json={
            **base, "template": "<|im_start|>user\n{{ range .Messages }}{{ .Content }} {{ end }}<|im_end|>\n"
                                "<|im_start|>assistant\n"}).json()
        assert custom["response"]
        bad = c.post("/api/generate", json={**base, "template": "{{ .Prompt "})
        assert bad.status_code == 400 and bad.json()["error"].startswith("template error:")


def test_suffix_needs_insert_capability(server: ServerProcess) -> None:
    r = httpx.post(server.url + "/api/generate", json={"model": MODEL, "prompt": "def f(", "suffix": "return x"})
    assert r.status_code == 400 and "does not support insert" in r.json()["error"]


def test_images_need_vision(server: ServerProcess) -> None:
    r = httpx.post(server.url + "/api/chat", json={
        "model": MODEL, "messages": [{"role": "user", "content": "what is this?", "images": ["aGVsbG8="]}]})
    assert r.status_code == 400 and "does not support images" in r.json()["error"]


def test_legacy_context_continues_a_conversation(server: ServerProcess) -> None:
    with server.client() as c:
        first = c.post("/api/generate", json={"model": MODEL, "prompt": "My name is Ada.", "stream": False,
                                               "options": GREEDY}).json()
        assert first["context"]
        second = c.post("/api/generate", json={"model": MODEL, "prompt": "Hello again.", "stream": False,
                                                "context": first["context"], "options": GREEDY}).json()
        # The earlier turn is replayed from the token ids, so the second prompt is longer than the first.
        assert len(second["context"]) > len(first["context"])


def test_long_history_is_truncated_to_fit(server: ServerProcess) -> None:
    filler = "The quick brown fox jumps over the lazy dog. " * 30
    history = []
    for i in range(12):
        history += [{"role": "user", "content": f"Turn {i}: {filler}"}, {"role": "assistant", "content": "OK."}]
    history.append({"role": "user", "content": "Say hi."})
    r = httpx.post(server.url + "/api/chat", timeout=120, json={
        "model": MODEL, "messages": history, "stream": False, "options": {**GREEDY, "num_ctx": 1024}}).json()
    assert r["done"] and r["prompt_eval_count"] <= 1024


def test_one_message_longer_than_the_context_is_not_a_crash(server: ServerProcess) -> None:
    huge = "word " * 3000
    r = httpx.post(server.url + "/api/chat", timeout=120, json={
        "model": MODEL, "messages": [{"role": "user", "content": huge}], "stream": False,
        "options": {**GREEDY, "num_ctx": 512}})
    assert r.status_code in (200, 400), r.text
    assert "error" in r.json() or r.json()["done"]
    # The server and its runner still answer.
    ok = httpx.post(server.url + "/api/generate", timeout=120, json={
        "model": MODEL, "prompt": "Hi", "stream": False, "options": {**GREEDY, "num_ctx": 512}})
    assert ok.status_code == 200


def test_corrupt_weights_give_a_clear_load_error(server: ServerProcess) -> None:
    store = Store(server.models)
    record = store.read_manifest(store.resolve(MODEL))
    real = store.blob_path(record.manifest.layers[0].digest).read_bytes()
    derive(server, "broken-smol", weights=real[: len(real) // 3])
    r = httpx.post(server.url + "/api/generate", timeout=120,
                   json={"model": "broken-smol", "prompt": "Hi", "stream": False})
    assert r.status_code == 500
    assert "failed to load model" in r.json()["error"] or "invalid" in r.json()["error"].lower()
    assert httpx.get(server.url + "/").status_code == 200


def test_runners_die_with_a_killed_server(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv:
        httpx.post(srv.url + "/api/generate", json={"model": MODEL}, timeout=120)
        [runner] = srv.runner_pids()
        os.kill(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(runner):
            time.sleep(0.1)
        assert not _alive(runner)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_max_loaded_models_evicts_least_recently_used(tmp_path: Path) -> None:
    with running_server(tmp_path, {"CORRAL_MAX_LOADED_MODELS": "1"}) as srv:
        store = Store(srv.models)
        real = store.blob_path(store.read_manifest(store.resolve(MODEL)).manifest.layers[0].digest).read_bytes()
        # Different weights bytes (trailing padding) make a different model: one runner per weights digest.
        derive(srv, "second-smol", weights=real + b"\0" * 64)
        client = ollama.Client(host=srv.url)
        client.generate(model=MODEL, prompt="Hi", options={"num_predict": 2})
        assert [m.model for m in client.ps().models] == [MODEL]
        client.generate(model="second-smol", prompt="Hi", options={"num_predict": 2})
        assert [m.model for m in client.ps().models] == ["second-smol:latest"]
        assert len(srv.runner_pids()) == 1


@pytest.mark.parametrize("keep_alive", [-1, "-1m"])
def test_negative_keep_alive_is_forever(fresh_server: ServerProcess, keep_alive: object) -> None:
    httpx.post(fresh_server.url + "/api/generate", json={"model": MODEL, "keep_alive": keep_alive}, timeout=120)
    [entry] = httpx.get(fresh_server.url + "/api/ps").json()["models"]
    assert entry["expires_at"].startswith("2316")


def test_memory_budget_evicts_then_refuses(tmp_path: Path) -> None:
    # One slot: about 98 MB of weights, 94 MB of KV cache at num_ctx 4096 and as much again for the engine's prompt
    # cache: ~286 MB. Two do not fit in 400 MiB; one with num_ctx 8192 (~474 MB) does not fit alone.
    env = {"CORRAL_NUM_PARALLEL": "1", "CORRAL_MEMORY_LIMIT": str(400 << 20)}
    with running_server(tmp_path, env) as srv:
        store = Store(srv.models)
        real = store.blob_path(store.read_manifest(store.resolve(MODEL)).manifest.layers[0].digest).read_bytes()
        derive(srv, "second-smol", weights=real + b"\0" * 64)
        client = ollama.Client(host=srv.url)
        client.generate(model=MODEL, prompt="Hi", options={"num_predict": 2})
        client.generate(model="second-smol", prompt="Hi", options={"num_predict": 2})
        # Both would not fit in 400 MiB, so the idle one was evicted although MAX_LOADED_MODELS is 3.
        assert [m.model for m in client.ps().models] == ["second-smol:latest"]
        # A context that alone needs more than the budget is refused with a clear error, and nothing crashes.
        r = httpx.post(srv.url + "/api/generate", timeout=60, json={
            "model": MODEL, "prompt": "Hi", "options": {"num_ctx": 8192}})
        assert r.status_code == 500
        assert r.json()["error"].startswith("model requires more system memory")
        assert httpx.get(srv.url + "/").status_code == 200


def test_sigterm_ends_streams_with_an_error_and_stops_runners(tmp_path: Path) -> None:
    import json

    from tests.conftest import long_request

    with running_server(tmp_path) as srv:
        with httpx.stream("POST", srv.url + "/api/generate", timeout=60, json=long_request(3000)) as r:
            lines = r.iter_lines()
            assert json.loads(next(lines))["done"] is False
            runners = srv.runner_pids()
            assert runners
            srv.proc.send_signal(signal.SIGTERM)
            rest = [json.loads(line) for line in lines if line]
        assert rest[-1] == {"error": "server shutting down"}
        assert srv.proc.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in runners):
            time.sleep(0.1)
        assert not any(_alive(p) for p in runners)
