"""Structured output on a thinking model: think first, then answer under the format's grammar, as Ollama does.

A grammar from the first token would forbid the thinking tags, so a thinking model's JSON would land inside its
thinking and the answer would be empty. Ollama runs such a request twice: without the format until the model
leaves its thinking, then again with the format, the thinking kept in the prompt. Corral does the same on the
rendered path: the first pass streams the thinking and stops as soon as the answer starts; the second continues the
prompt after the closing tag under the grammar. The first pass's tokens are counted in ``eval_count``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

from corral.inference import streams
from corral.inference.prompting import COMPLETION, EngineCall
from corral.inference.request import Final, InferenceRequest, Piece
from corral.inference.runner.client import RunnerClient
from corral.parsers.thinking import infer_thinking_tags


def applies(call: EngineCall, has_format: bool) -> bool:
    return (has_format and call.endpoint == COMPLETION and call.think and call.forced_names is None
            and call.template is not None and infer_thinking_tags(call.template) is not None
            and "grammar" in call.body)


async def pieces(client: RunnerClient, call: EngineCall, req: InferenceRequest) -> AsyncIterator[Piece | Final]:
    assert call.template is not None
    tags = infer_thinking_tags(call.template)
    assert tags is not None
    free = dataclasses.replace(call, body={k: v for k, v in call.body.items() if k != "grammar"})
    thinking: list[str] = []
    first = streams.pieces(client, free, req)
    final: Final | None = None
    try:
        async for item in first:
            if isinstance(item, Final):
                final = item
                break
            if item.thinking or item.logprobs:
                thinking.append(item.thinking)
                yield Piece(thinking=item.thinking, logprobs=item.logprobs if not item.content else None)
            if item.content or item.tool_calls:
                break  # the answer begins: it is written again, under the grammar
    finally:
        await first.aclose()  # type: ignore[attr-defined]
    if final is not None:  # the model never left its thinking: there is no answer to constrain
        yield final
        return
    thought = "".join(thinking)
    opened = call.prompt.rstrip().endswith(tags[0])
    prompt = call.prompt + ("" if opened else tags[0] + "\n") + thought + tags[1] + "\n\n"
    thought_tokens = len(await client.tokenize(thought, add_special=False)) if thought else 0
    answer = EngineCall(COMPLETION, {**call.body, "prompt": prompt}, prompt, call.template, False, None)
    async for item in streams.pieces(client, answer, req):
        if isinstance(item, Final):
            item.eval_count += thought_tokens
        yield item
