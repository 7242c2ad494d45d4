"""Reranking: a cross-encoder scores how relevant each document is to a query.

The engine does the work: a reranker GGUF (pooling type RANK) is loaded with llama-server's ``--reranking``, and its
``/rerank`` endpoint formats every (query, document) pair as the model expects (the GGUF's
``tokenizer.chat_template.rerank`` prompt, or ``[BOS]query[EOS][SEP]document[EOS]``), evaluates the pairs across the
runner's slots and returns one relevance score per document. Corral's part is the same as for embeddings: lease the
runner from the scheduler, keep each pair inside one batch (the engine refuses longer ones), and order the scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from corral.errors import InferenceError, RequestError
from corral.inference.runner.client import RunnerClient
from corral.store.model import Model

# Special tokens around a pair when the GGUF has no rerank prompt: BOS, EOS, SEP, EOS.
PAIR_OVERHEAD = 4
# Slack for a detokenized cut that tokenizes back a little longer than it was cut.
MARGIN = 4


@dataclass(slots=True)
class Ranking:
    """Documents best first, as ``(index into the request's documents, relevance score)``."""

    results: list[tuple[int, float]]
    prompt_eval_count: int
    load_duration: int
    total_duration: int


async def score(client: RunnerClient, model: Model, query: str, documents: list[str], limit: int,
                truncate: bool) -> tuple[list[tuple[int, float]], int]:
    """Every document scored against ``query`` (best first), and the prompt tokens the engine evaluated."""
    query, documents = await _fit_pairs(client, model, query, documents, limit, truncate)
    data = await client.post("/rerank", {"query": query, "documents": documents, "top_n": len(documents)})
    return _scores(data, len(documents)), int((data.get("usage") or {}).get("prompt_tokens", 0))


def _scores(data: Any, count: int) -> list[tuple[int, float]]:
    """The engine's results, checked: every document scored once with a finite number; best first, ties by index."""
    rows = data.get("results") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise InferenceError("the engine returned no rerank results")
    scores: dict[int, float] = {}
    for row in rows:
        index, score = row.get("index"), row.get("relevance_score")
        if not isinstance(index, int) or not 0 <= index < count or not isinstance(score, int | float):
            raise InferenceError(f"the engine returned a malformed rerank result: {str(row)[:200]}")
        if not math.isfinite(score):
            raise InferenceError("the reranker produced a non-finite score")
        scores[index] = float(score)
    if len(scores) != count:
        raise InferenceError(f"the engine scored {len(scores)} of {count} documents")
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


async def _fit_pairs(client: RunnerClient, model: Model, query: str, documents: list[str], limit: int,
                     truncate: bool) -> tuple[str, list[str]]:
    """Each pair must fit one batch. A pair that does not is cut (the document keeps at least half the room, the
    query the rest), or refused when ``truncate`` is false. Short pairs skip tokenizing: for the tokenizers
    llama.cpp runs, a token covers at least one byte, so byte counts bound token counts from above."""
    overhead = await _prompt_overhead(client, model)
    room = limit - overhead - MARGIN
    query_bytes = len(query.encode())
    if all(query_bytes + len(doc.encode()) <= room for doc in documents):
        return query, documents
    if room < 2:
        raise RequestError("the context is too small for a query and a document")
    query_tokens = await client.tokenize(query, add_special=False)
    out: list[str] = []
    new_query = query
    for doc in documents:
        if query_bytes + len(doc.encode()) <= room:
            out.append(doc)
            continue
        doc_tokens = await client.tokenize(doc, add_special=False)
        if len(query_tokens) + len(doc_tokens) <= room:
            out.append(doc)
            continue
        if not truncate:
            raise RequestError("the input length exceeds the context length")
        keep_doc = max(room - len(query_tokens), min(len(doc_tokens), room // 2))
        keep_query = room - keep_doc
        if keep_query < len(query_tokens):
            # The query is the same for every pair: cut it once, to the shortest any document needs.
            shorter = await client.detokenize(query_tokens[:keep_query])
            if len(shorter) < len(new_query):
                new_query = shorter
        out.append(await client.detokenize(doc_tokens[:keep_doc]) if keep_doc < len(doc_tokens) else doc)
    return new_query, out


async def _prompt_overhead(client: RunnerClient, model: Model) -> int:
    """Tokens a pair costs beyond its query and document: the rerank prompt's own text, or the special tokens."""
    template = model.info.get("tokenizer.chat_template.rerank")
    if not isinstance(template, str):
        return PAIR_OVERHEAD
    bare = template.replace("{query}", "").replace("{document}", "")
    return len(await client.tokenize(bare, add_special=False)) + 1
