"""Embeddings: inputs fitted to one batch, then the engine's raw vectors for all of them in one request."""

from __future__ import annotations

from typing import Any

from corral.errors import RequestError
from corral.inference.runner.client import RunnerClient


async def fit_inputs(client: RunnerClient, inputs: list[str], limit: int, truncate: bool) -> list[Any]:
    """Inputs longer than the context are cut to it (or refused when ``truncate`` is false).

    Only inputs with more UTF-8 bytes than ``limit`` can have more tokens, so the rest skip tokenizing."""
    out: list[Any] = []
    for text in inputs:
        if len(text.encode()) + 2 <= limit:
            out.append(text)
            continue
        tokens = await client.tokenize(text, add_special=False)
        room = limit - 4  # the engine adds BOS/CLS and EOS/SEP; the context must not be filled to the brim
        if len(tokens) <= room:
            out.append(text)
        elif not truncate:
            raise RequestError("the input length exceeds the context length")
        else:
            out.append(await client.detokenize(tokens[:room]))
    return out


async def vectors(client: RunnerClient, inputs: list[Any]) -> tuple[list[list[float]], int]:
    """Raw (unnormalized) vectors in input order, and the prompt tokens the engine evaluated."""
    data = await client.post("/v1/embeddings", {"input": inputs, "embd_normalize": -1})
    rows = sorted(data.get("data", []), key=lambda d: int(d.get("index", 0)))
    count = int((data.get("usage") or {}).get("prompt_tokens", 0))
    return [[float(x) for x in row["embedding"]] for row in rows], count
