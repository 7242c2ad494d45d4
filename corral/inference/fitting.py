"""``truncate`` and ``shift``: what happens when a prompt, or a prompt and its answer, outgrow ``num_ctx``.

As Ollama does: with ``truncate`` (the default) a chat's oldest messages are dropped to fit (``prompting``), and a
prompt still too long is cut in the middle, keeping its first ``num_keep`` tokens and its end; without it, an
oversized prompt is the client's error (the engine's 400, which names both sizes). With ``shift`` (the default) the
engine makes room as the answer grows by dropping old context; without it, generation stops with ``done_reason:
length`` when the context is full.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from corral.inference import prompting
from corral.inference.prompting import COMPLETION, EngineCall
from corral.inference.request import InferenceRequest
from corral.inference.runner.client import RunnerClient

log = logging.getLogger("corral.inference.fitting")


async def fit(client: RunnerClient, call: EngineCall, req: InferenceRequest, num_ctx: int, num_keep: int,
              think: bool | str | None) -> EngineCall:
    """The call with its prompt cut to the context (``truncate``) and its length capped (no ``shift``)."""
    body: dict[str, Any] = call.body
    tokens: list[int] | None = None
    text = body.get("prompt") if call.endpoint == COMPLETION else None
    if isinstance(text, str) and req.truncate and len(text.encode()) + 2 > num_ctx:
        tokens = await client.tokenize(text, add_special=True)
        if len(tokens) >= num_ctx:
            keep = max(0, min(num_keep, num_ctx // 2))
            tail = num_ctx - 1 - keep  # one place left for the first generated token
            log.warning("truncating input prompt: limit %d, prompt %d, keep %d", num_ctx, len(tokens), keep)
            tokens = tokens[:keep] + tokens[len(tokens) - tail:]
            body = {**body, "prompt": tokens}
    if not req.shift:
        if tokens is None:
            if isinstance(text, str):
                tokens = await client.tokenize(text, add_special=True)
            else:
                tokens = await client.tokenize(await prompting.native_prompt(client, req, think), add_special=True)
        room = max(num_ctx - len(tokens), 0)
        key = "n_predict" if call.endpoint == COMPLETION else "max_tokens"
        limit = int(body.get(key, -1))
        body = {**body, key: room if limit < 0 else min(limit, room)}
    return call if body is call.body else dataclasses.replace(call, body=body)
