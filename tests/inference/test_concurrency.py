"""Parallel slots, the queue, the prefix cache and KV persistence, through the real server."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import MODEL, ServerProcess, long_request, running_server

pytestmark = pytest.mark.e2e

GREEDY = {"temperature": 0, "num_predict": 24}
PROMPTS = ["Name a fruit.", "What is 2+2?", "Say hello in French.", "Name a planet."]


def _generate(url: str, prompt: str, **extra: object) -> dict:
    body = {"model": MODEL, "prompt": prompt, "stream": False, "options": GREEDY, **extra}
    r = httpx.post(url + "/api/generate", json=body, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def test_parallel_requests_match_sequential_greedy_output(server: ServerProcess) -> None:
    sequential = [_generate(server.url, p)["response"] for p in PROMPTS]
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        parallel = list(pool.map(lambda p: _generate(server.url, p)["response"], PROMPTS))
    assert parallel == sequential
    # The session's server may also hold this model's embedding runner (tests/api/test_embed.py), one slot wide.
    entries = [m for m in httpx.get(server.url + "/api/ps").json()["models"] if m["model"] == MODEL]
    assert max(m["parallel"] for m in entries) == 4


def test_cancelling_one_stream_does_not_disturb_another(server: ServerProcess) -> None:
    expected = _generate(server.url, PROMPTS[0])["response"]
    result: dict[str, str] = {}

    def survivor() -> None:
        result["text"] = _generate(server.url, PROMPTS[0])["response"]

    with httpx.stream("POST", server.url + "/api/generate", timeout=120, json=long_request(500)) as r:
        lines = r.iter_lines()
        next(lines)
        t = threading.Thread(target=survivor)
        t.start()
        next(lines)
    t.join(timeout=120)
    assert result["text"] == expected


def test_queue_full_is_503(tmp_path: Path) -> None:
    env = {"CORRAL_MAX_QUEUE": "1", "CORRAL_NUM_PARALLEL": "1"}
    with running_server(tmp_path, env) as srv:
        httpx.post(srv.url + "/api/generate", json={"model": MODEL}, timeout=120)
        waiting: dict[str, int] = {}

        def queued() -> None:
            waiting["status"] = httpx.post(srv.url + "/api/generate", timeout=300, json={
                "model": MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 2}}).status_code

        with httpx.stream("POST", srv.url + "/api/generate", timeout=120, json=long_request(2000)) as r:
            lines = r.iter_lines()  # kept referenced: dropping the iterator would close the stream
            assert "error" not in next(lines)  # the only slot is busy
            t = threading.Thread(target=queued)
            t.start()
            time.sleep(1.0)  # ordering only: let the second request take the one queue place
            third = httpx.post(srv.url + "/api/generate", timeout=60, json={"model": MODEL, "prompt": "Hi"})
        t.join(timeout=120)
        # One of the two waiting requests got the queue place, the other was refused (which one is a race).
        assert sorted([third.status_code, waiting["status"]]) == [200, 503]
        if third.status_code == 503:
            assert third.json() == {"error": "server busy, please try again.  maximum pending requests exceeded"}


def test_second_turn_pays_only_for_new_tokens(server: ServerProcess) -> None:
    history = [{"role": "user", "content": "Tell me about the ocean. " * 20}]
    first = httpx.post(server.url + "/api/chat", timeout=120, json={
        "model": MODEL, "messages": history, "stream": False, "options": GREEDY}).json()
    history += [first["message"], {"role": "user", "content": "And rivers?"}]
    second = httpx.post(server.url + "/api/chat", timeout=120, json={
        "model": MODEL, "messages": history, "stream": False, "options": GREEDY}).json()
    assert first["prompt_eval_count"] > 100
    # Only the new turn (its template tokens and the few words) is evaluated; the count is the whole prompt.
    assert second["prompt_eval_count"] - second["prompt_eval_cached_count"] < 40
    assert second["prompt_eval_count"] > first["prompt_eval_count"]


def test_kv_cache_is_restored_after_reload(tmp_path: Path) -> None:
    system = "You are a careful assistant. " + " ".join(f"Rule {i}: answer item {i} politely." for i in range(80))
    with running_server(tmp_path) as srv:
        def ask(question: str, **extra: object) -> dict:
            return httpx.post(srv.url + "/api/chat", timeout=300, json={
                "model": MODEL, "stream": False, "options": GREEDY, **extra,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}]}).json()

        cold = ask("Hi")
        assert cold["prompt_eval_count"] > 500
        # keep_alive 0 unloads after the request, saving the slot's KV under CORRAL_HOME.
        httpx.post(srv.url + "/api/chat", json={"model": MODEL, "messages": [], "keep_alive": 0}, timeout=60)
        assert httpx.get(srv.url + "/api/ps").json()["models"] == []
        saved = list((srv.home / "kvcache").glob("*/slot-*.bin"))
        assert saved and all(p.stat().st_size > 0 for p in saved)
        warm = ask("Hello")
        assert warm["load_duration"] > 0  # it really was reloaded
        assert warm["prompt_eval_count"] - warm["prompt_eval_cached_count"] < 40
        assert "restored KV cache" in srv.log_text()


def test_kv_cache_is_not_reused_with_other_options(tmp_path: Path) -> None:
    system = "You are brief. " + " ".join(f"Fact {i} is true." for i in range(120))
    with running_server(tmp_path) as srv:
        body = {"model": MODEL, "stream": False,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": "Hi"}]}
        httpx.post(srv.url + "/api/chat", json={**body, "options": GREEDY}, timeout=300)
        httpx.post(srv.url + "/api/chat", json={"model": MODEL, "messages": [], "keep_alive": 0}, timeout=60)
        other = httpx.post(srv.url + "/api/chat", timeout=300,
                           json={**body, "options": {**GREEDY, "num_ctx": 2048}}).json()
        # a different num_ctx is a different cache
        assert other["prompt_eval_count"] - other["prompt_eval_cached_count"] > 500
        assert json.dumps(other).count("error") == 0
