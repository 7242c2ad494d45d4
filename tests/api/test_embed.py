"""Embeddings through the real server: /api/embed and the legacy /api/embeddings."""

from __future__ import annotations

import math

import httpx
import ollama
import pytest

from tests.conftest import MODEL, ServerProcess

pytestmark = pytest.mark.e2e


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_embed_batch_is_normalized_and_meaningful(server: ServerProcess) -> None:
    r = ollama.Client(host=server.url).embed(model=MODEL, input=[
        "The cat sits on the mat.", "A cat is sitting on a mat.", "Stock markets fell sharply today."])
    a, b, c = r.embeddings
    assert len(a) == 576
    for v in (a, b, c):
        assert math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-6)
    assert _cos(a, b) > _cos(a, c)
    assert r.prompt_eval_count and r.prompt_eval_count > 10


def test_embed_dimensions_and_empty_input(server: ServerProcess) -> None:
    client = ollama.Client(host=server.url)
    short = client.embed(model=MODEL, input="hello", dimensions=16).embeddings[0]
    assert len(short) == 16 and math.isclose(sum(x * x for x in short), 1.0, rel_tol=1e-6)
    r = httpx.post(server.url + "/api/embed", json={"model": MODEL, "input": ""}, timeout=120).json()
    assert r == {"model": MODEL, "embeddings": []}


def test_legacy_embeddings_are_not_normalized(server: ServerProcess) -> None:
    vec = ollama.Client(host=server.url).embeddings(model=MODEL, prompt="hello").embedding
    assert len(vec) == 576
    assert not math.isclose(sum(x * x for x in vec), 1.0, rel_tol=1e-3)
    r = httpx.post(server.url + "/api/embeddings", json={"model": MODEL, "prompt": ""}).json()
    assert r == {"embedding": []}


def test_truncate_false_refuses_long_input(server: ServerProcess) -> None:
    long = "word " * 3000
    r = httpx.post(server.url + "/api/embed", timeout=120, json={
        "model": MODEL, "input": long, "truncate": False, "options": {"num_ctx": 512}})
    assert r.status_code == 400 and r.json()["error"] == "the input length exceeds the context length"
    ok = httpx.post(server.url + "/api/embed", timeout=120, json={
        "model": MODEL, "input": long, "options": {"num_ctx": 512}})
    assert ok.status_code == 200 and len(ok.json()["embeddings"][0]) == 576
    assert ok.json()["prompt_eval_count"] <= 512


def test_embed_bad_input_type_is_400(server: ServerProcess) -> None:
    r = httpx.post(server.url + "/api/embed", json={"model": MODEL, "input": 42})
    assert r.status_code == 400 and "error" in r.json()


def test_bundled_minilm_is_an_embedding_model(server: ServerProcess) -> None:
    client = ollama.Client(host=server.url)
    show = client.show("all-minilm")
    assert show.capabilities == ["embedding"]
    assert show.details.family == "bert"
    r = client.embed(model="all-minilm", input=[
        "How do I bake bread?", "What is a good bread recipe?", "The stock market closed lower."])
    a, b, c = r.embeddings
    assert len(a) == 384
    assert _cos(a, b) > 0.5 > _cos(a, c)
    chat = httpx.post(server.url + "/api/chat", json={"model": "all-minilm",
                                                      "messages": [{"role": "user", "content": "hi"}]})
    assert chat.status_code == 400 and "does not support chat" in chat.json()["error"]
