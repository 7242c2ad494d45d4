"""Reranking through the real server and engine: /api/rerank and /v1/rerank.

No reranker GGUF is available offline, so the test builds one: the bundled all-MiniLM-L6-v2 BERT weights, converted
to GGUF by Corral's own converter, with pooling type RANK and a classification head (``cls.weight``/``cls.bias``, a
pooler dense layer, and ``cls.output.weight``/``cls.output.bias``, one output) of fixed pseudo-random weights. The
engine runs it exactly as it runs a real cross-encoder (llama.cpp's BERT rank graph: the [CLS] state of
``[CLS] query [SEP] [SEP] document [SEP]`` through the head), so the plumbing is real end to end; its scores carry
no meaning, so only properties that hold for any reranker are asserted, never that a relevant document wins.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import gguf
import httpx
import numpy as np
import pytest
from conftest import MINILM_DIR, bundled_file

from corral.authoring.bundled import add_gguf_model
from corral.convert import convert_directory
from corral.inference.runner.process import server_flags
from corral.inference.runner.spec import LaunchSpec
from corral.store.gguf_info import read_gguf_info
from corral.store.store import Store
from tests.conftest import ServerProcess, running_server

RERANKER = "tiny-reranker"
EMBEDDER = "minilm-embed"
QUERY = "how do cats sleep"
DOCS = [
    "Cats sleep for twelve to sixteen hours a day.",
    "The stock market closed lower on Friday.",
    "Cats sleep for twelve to sixteen hours a day.",  # a duplicate of 0: the same pair must score the same
    "Bread is baked from flour, water, salt and yeast.",
    "",
]


def write_reranker(src: Path, dst: Path, seed: int = 1234) -> None:
    """Copy a BERT embedding GGUF to ``dst`` as a reranker: pooling RANK plus a deterministic classifier head."""
    reader = gguf.GGUFReader(src)  # a file Corral's converter just wrote: well-formed
    arch = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(dst, arch)
    for key, fld in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        if key == f"{arch}.pooling_type":
            writer.add_uint32(key, int(gguf.PoolingType.RANK))
        elif fld.types[0] == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, fld.contents(), fld.types[0], sub_type=fld.types[-1])
        else:
            writer.add_key_value(key, fld.contents(), fld.types[0])
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, np.asarray(tensor.data), raw_dtype=tensor.tensor_type)
    n = int(reader.fields[f"{arch}.embedding_length"].contents())
    rng = np.random.default_rng(seed)
    writer.add_tensor("cls.weight", (rng.standard_normal((n, n)) / math.sqrt(n)).astype(np.float32))
    writer.add_tensor("cls.bias", np.zeros(n, np.float32))
    writer.add_tensor("cls.output.weight", rng.standard_normal((1, n)).astype(np.float32))
    writer.add_tensor("cls.output.bias", np.zeros(1, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def rr_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    source = bundled_file(*MINILM_DIR)
    tmp = tmp_path_factory.mktemp("rerank")
    embedder, reranker = tmp / "minilm.gguf", tmp / "reranker.gguf"
    convert_directory(source, embedder)
    write_reranker(embedder, reranker)
    store = Store(tmp / "models")
    add_gguf_model(store, EMBEDDER, embedder)
    add_gguf_model(store, RERANKER, reranker)
    with running_server(tmp, {"CORRAL_NOBUNDLED": "1"}, models=tmp / "models") as srv:
        yield srv


def _rerank(srv: ServerProcess, **body: object) -> httpx.Response:
    return httpx.post(srv.url + "/api/rerank", json={"model": RERANKER, **body}, timeout=120)


@pytest.mark.e2e
def test_reranker_metadata_and_capabilities(rr_server: ServerProcess, tmp_path: Path) -> None:
    with rr_server.client() as c:
        assert c.post("/api/show", json={"model": RERANKER}).json()["capabilities"] == ["rerank"]
        assert c.post("/api/show", json={"model": EMBEDDER}).json()["capabilities"] == ["embedding"]


@pytest.mark.e2e
def test_native_rerank_orders_and_scores_every_document(rr_server: ServerProcess) -> None:
    r = _rerank(rr_server, query=QUERY, documents=DOCS)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == RERANKER  # as the client named it
    results = body["results"]
    assert sorted(x["index"] for x in results) == list(range(len(DOCS)))
    scores = [x["relevance_score"] for x in results]
    assert all(math.isfinite(x) for x in scores)
    assert scores == sorted(scores, reverse=True)
    assert len(set(scores)) >= 3  # the head separates different pairs
    by_index = {x["index"]: x["relevance_score"] for x in results}
    assert math.isclose(by_index[0], by_index[2], rel_tol=1e-5, abs_tol=1e-5)
    assert all("document" not in x for x in results)
    assert body["prompt_eval_count"] > 10 and body["total_duration"] > 0

    # The same pair scores the same alone as in a batch.
    for index in (1, 3):
        alone = _rerank(rr_server, query=QUERY, documents=[DOCS[index]]).json()["results"]
        assert [x["index"] for x in alone] == [0]
        assert math.isclose(alone[0]["relevance_score"], by_index[index], rel_tol=1e-3, abs_tol=1e-3)

    top = _rerank(rr_server, query=QUERY, documents=DOCS, top_n=2, return_documents=True).json()["results"]
    assert [x["index"] for x in top] == [x["index"] for x in results[:2]]
    assert [x["document"] for x in top] == [DOCS[x["index"]] for x in top]
    for top_n in (0, 99):  # below 1 or past the end: every document
        assert len(_rerank(rr_server, query=QUERY, documents=DOCS[:2], top_n=top_n).json()["results"]) == 2


@pytest.mark.e2e
def test_v1_rerank_jina_cohere_shape(rr_server: ServerProcess) -> None:
    docs: list[object] = [DOCS[0], {"text": DOCS[1]}, {"text": DOCS[3]}]
    r = httpx.post(rr_server.url + "/v1/rerank", timeout=120,
                   json={"model": RERANKER, "query": QUERY, "documents": docs, "top_n": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == RERANKER and body["id"]
    assert body["usage"]["total_tokens"] > 0
    results = body["results"]
    assert len(results) == 2
    texts = [DOCS[0], DOCS[1], DOCS[3]]
    for x in results:
        assert x["document"] == {"text": texts[x["index"]]}
    assert results[0]["relevance_score"] >= results[1]["relevance_score"]
    native = _rerank(rr_server, query=QUERY, documents=texts).json()["results"]
    assert [x["index"] for x in results] == [x["index"] for x in native[:2]]
    bare = httpx.post(rr_server.url + "/v1/rerank", timeout=120, json={
        "model": RERANKER, "query": QUERY, "documents": texts, "return_documents": False}).json()
    assert len(bare["results"]) == 3 and all("document" not in x for x in bare["results"])


@pytest.mark.e2e
def test_long_pairs_are_cut_or_refused(rr_server: ServerProcess) -> None:
    long = "cats and dogs " * 200  # ~600 tokens, past the model's 512
    ok = _rerank(rr_server, query=QUERY, documents=[long, DOCS[1]])
    assert ok.status_code == 200, ok.text
    assert all(math.isfinite(x["relevance_score"]) for x in ok.json()["results"])
    long_query = _rerank(rr_server, query=long, documents=[long, DOCS[1]])
    assert long_query.status_code == 200, long_query.text
    refused = _rerank(rr_server, query=QUERY, documents=[long], truncate=False)
    assert refused.status_code == 400
    assert refused.json() == {"error": "the input length exceeds the context length"}


@pytest.mark.e2e
def test_errors_in_each_family_shape(rr_server: ServerProcess) -> None:
    with rr_server.client() as c:
        missing = c.post("/api/rerank", json={"model": "nope", "query": "q", "documents": ["d"]})
        assert missing.status_code == 404 and missing.json() == {"error": "model 'nope' not found"}
        v1_missing = c.post("/v1/rerank", json={"model": "nope", "query": "q", "documents": ["d"]})
        assert v1_missing.status_code == 404
        assert v1_missing.json()["error"]["message"] == "model 'nope' not found"
        assert v1_missing.json()["error"]["type"] == "not_found_error"

        not_reranker = c.post("/api/rerank", json={"model": EMBEDDER, "query": "q", "documents": ["d"]})
        assert not_reranker.status_code == 400
        assert not_reranker.json() == {"error": f'"{EMBEDDER}:latest" does not support rerank'}
        v1_not = c.post("/v1/rerank", json={"model": EMBEDDER, "query": "q", "documents": ["d"]})
        assert v1_not.status_code == 400 and v1_not.json()["error"]["type"] == "invalid_request_error"

        empty = c.post("/api/rerank", json={"model": RERANKER, "query": "q", "documents": []})
        assert empty.status_code == 400 and empty.json() == {"error": "documents must be a non-empty list"}
        v1_empty = c.post("/v1/rerank", json={"model": RERANKER, "query": "q", "documents": []})
        assert v1_empty.status_code == 400 and "non-empty" in v1_empty.json()["error"]["message"]
        bad = c.post("/api/rerank", json={"model": RERANKER, "query": "q", "documents": "d"})
        assert bad.status_code == 400 and "error" in bad.json()

        # A reranker's output is a score, not a vector; nor does it chat.
        embed = c.post("/api/embed", json={"model": RERANKER, "input": "hello"})
        assert embed.status_code == 400 and "does not support embeddings" in embed.json()["error"]
        chat = c.post("/api/chat", json={"model": RERANKER, "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 400 and "does not support chat" in chat.json()["error"]


@pytest.mark.e2e
def test_openapi_documents_rerank(rr_server: ServerProcess) -> None:
    spec = httpx.get(rr_server.url + "/openapi.json", timeout=10).json()
    native = spec["paths"]["/api/rerank"]["post"]
    assert native["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/RerankRequest")
    v1 = spec["paths"]["/v1/rerank"]["post"]
    assert v1["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/V1RerankResponse")
    assert {"query", "documents"} <= set(spec["components"]["schemas"]["RerankRequest"]["required"])


def test_launch_spec_enables_reranking(tmp_path: Path) -> None:
    spec = LaunchSpec(model="m.gguf", num_ctx=512, parallel=1, embedding=True, reranking=True)
    args = server_flags(spec, "llama-server", "/run/engine.sock")
    assert "--reranking" in args and "--embedding" in args
    assert "--reranking" not in server_flags(LaunchSpec(model="m.gguf", num_ctx=512, parallel=1), "x", "e.sock")

    import xllamacpp

    from corral.inference.runner.wheel import build_params

    params = build_params({**spec.to_json(), "api_key": "key", "port": 0})
    assert params.embedding is True
    assert params.pooling_type == xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_RANK


def test_reranker_detection(tmp_path: Path) -> None:
    source = bundled_file(*MINILM_DIR)
    embedder, reranker = tmp_path / "e.gguf", tmp_path / "r.gguf"
    convert_directory(source, embedder)
    write_reranker(embedder, reranker)
    assert not read_gguf_info(embedder).is_reranker
    info = read_gguf_info(reranker)
    assert info.is_reranker and info.pooling_type == 4 and info.is_embedding
