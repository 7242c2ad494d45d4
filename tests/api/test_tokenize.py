"""/api/tokenize and /api/detokenize (beyond Ollama), checked against the GGUF's own vocabulary."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.store.gguf_info import read_gguf_info
from corral.store.store import Store
from tests.conftest import MODEL, ServerProcess

pytestmark = pytest.mark.e2e


def _vocab(server: ServerProcess) -> list[str]:
    import gguf

    store = Store(server.models)
    path = store.blob_path(store.read_manifest(store.resolve(MODEL)).manifest.layers[0].digest)
    assert read_gguf_info(path).architecture == "llama"
    field = gguf.GGUFReader(path).fields["tokenizer.ggml.tokens"]
    return [bytes(field.parts[i]).decode("utf-8") for i in field.data]


def test_tokenize_matches_the_vocabulary(server: ServerProcess) -> None:
    vocab = _vocab(server)
    r = httpx.post(server.url + "/api/tokenize", json={"model": MODEL, "content": "Hello world"}, timeout=120)
    tokens = r.json()["tokens"]
    assert [vocab[t] for t in tokens] == ["Hello", "Ġworld"]  # GPT-2 byte-level BPE spells a space as Ġ
    back = httpx.post(server.url + "/api/detokenize", json={"model": MODEL, "tokens": tokens}).json()
    assert back == {"content": "Hello world"}


def test_special_tokens_are_single_ids(server: ServerProcess) -> None:
    vocab = _vocab(server)
    tokens = httpx.post(server.url + "/api/tokenize", json={"model": MODEL, "content": "<|im_start|>user"},
                        timeout=120).json()["tokens"]
    assert vocab[tokens[0]] == "<|im_start|>"


# Assigned BMP characters: the engine's detokenizer turns rare astral-plane byte sequences into U+FFFD.
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Co", "Cn"), max_codepoint=0xFFFF),
               max_size=80)


@settings(max_examples=25, deadline=None)
@given(TEXT)
def test_round_trip(server: ServerProcess, text: str) -> None:
    tokens = httpx.post(server.url + "/api/tokenize", json={"model": MODEL, "content": text},
                        timeout=120).json()["tokens"]
    back = httpx.post(server.url + "/api/detokenize", json={"model": MODEL, "tokens": tokens}).json()["content"]
    assert back == text


def test_bad_token_ids_are_400(server: ServerProcess) -> None:
    r = httpx.post(server.url + "/api/detokenize", json={"model": MODEL, "tokens": [10**9]})
    assert r.status_code == 400 and "invalid token id" in r.json()["error"]
    r = httpx.post(server.url + "/api/detokenize", json={"model": MODEL, "tokens": ["x"]})
    assert r.status_code == 400
