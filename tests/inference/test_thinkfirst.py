"""Structured output on a thinking model: the thinking is free, the answer is under the grammar (Ollama's two
requests), checked against a scripted engine that records what it was asked."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

from corral.inference import prompting, thinkfirst
from corral.inference.request import Final, InferenceRequest, Piece
from corral.store.model import parse_template

TEMPLATE = parse_template("""{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ if $.Think }}<think>
{{ end }}""")
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


class Engine:
    """Answers each /completion with the next script; records bodies."""

    def __init__(self, *scripts: list[str]) -> None:
        self.scripts = list(scripts)
        self.bodies: list[dict[str, Any]] = []
        self.closed = 0

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        self.bodies.append(body)
        texts = self.scripts.pop(0)
        try:
            for text in texts:
                yield {"content": text}
            yield {"content": "", "stop": True, "stop_type": "eos",
                   "timings": {"prompt_n": 9, "predicted_n": len(texts)}}
        finally:
            self.closed += 1

    async def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        return list(range(len(text.split())))


def run(engine: Engine) -> list[Piece | Final]:
    req = InferenceRequest(model=SimpleNamespace(messages=[], system="", capabilities=lambda: ["thinking"]),  # type: ignore[arg-type]
                           messages=[{"role": "user", "content": "Who?"}], format=SCHEMA, think=True)
    settings = prompting.Settings(sampling={"n_predict": 50, "grammar": "root ::= x"}, template=TEMPLATE,
                                  think=True, forced_names=None, schema=SCHEMA)

    async def go() -> list[Piece | Final]:
        call = await prompting.build(engine, req, settings, 4096)  # type: ignore[arg-type]
        assert thinkfirst.applies(call, True)
        return [item async for item in thinkfirst.pieces(engine, call, req)]  # type: ignore[arg-type]

    return asyncio.run(go())


def test_the_thinking_is_free_and_the_answer_is_constrained() -> None:
    engine = Engine(["Hmm, ", "a name.", "</think>", "\n\n", "{\"na"], ['{"name": "Ada"}'])
    items = run(engine)
    first, second = engine.bodies
    assert "grammar" not in first and second["grammar"] == "root ::= x"
    assert second["prompt"] == first["prompt"] + "Hmm, a name.</think>\n\n"
    assert engine.closed == 2  # the first pass was stopped once the answer began
    pieces = [i for i in items if isinstance(i, Piece)]
    assert "".join(p.thinking for p in pieces) == "Hmm, a name."
    assert json.loads("".join(p.content for p in pieces)) == {"name": "Ada"}
    final = items[-1]
    assert isinstance(final, Final) and final.eval_count == 1 + 3  # the answer's token and the thought's


def test_a_model_that_never_stops_thinking_gets_no_second_pass() -> None:
    engine = Engine(["still ", "thinking"])
    items = run(engine)
    assert len(engine.bodies) == 1
    assert "".join(i.thinking for i in items if isinstance(i, Piece)) == "still thinking"
    assert isinstance(items[-1], Final)
