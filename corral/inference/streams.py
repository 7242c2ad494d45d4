"""Stream shaping: the engine's server-sent events in, Ollama-shaped :class:`Piece` and :class:`Final` out.

On ``/completion`` (the rendered path) the raw text is split into thinking, content and tool calls by parsers
inferred from the template, or read as a forced call's JSON; on ``/v1/chat/completions`` (the native path) the
engine has parsed them already and its deltas are regrouped. Either way the last item is one :class:`Final` with the
engine's own counts and timings, in Ollama's nanosecond fields.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from corral.inference import logprobs
from corral.inference.prompting import CHAT, EngineCall
from corral.inference.request import Final, InferenceRequest, Piece
from corral.inference.runner.client import RunnerClient
from corral.parsers.forced import ForcedCallReader
from corral.parsers.shaping import OutputShaper, tool_call_id


def pieces(client: RunnerClient, call: EngineCall, req: InferenceRequest) -> AsyncIterator[Piece | Final]:
    """Run the call and yield its output pieces, then one Final."""
    if call.endpoint == CHAT:
        return _chat(client, call, req)
    return _completion(client, call, req)


def _ns(ms: float | int | None) -> int:
    return int((ms or 0) * 1_000_000)


def _final(done_reason: str, timings: dict[str, Any], stop_sequence: str | None = None) -> Final:
    return Final(
        done_reason=done_reason,
        # The whole prompt, as Ollama counts it: the engine's prompt_n is only what it evaluated past the cache.
        prompt_eval_count=int(timings.get("prompt_n", 0)) + int(timings.get("cache_n", 0)),
        prompt_eval_duration=_ns(timings.get("prompt_ms")),
        eval_count=int(timings.get("predicted_n", 0)),
        eval_duration=_ns(timings.get("predicted_ms")),
        prompt_cached_count=int(timings.get("cache_n", 0)),
        stop_sequence=stop_sequence,
    )


async def _completion(client: RunnerClient, call: EngineCall, req: InferenceRequest) -> AsyncIterator[Piece | Final]:
    body = dict(call.body)
    final: dict[str, Any] | None = None
    texts: list[str] = []
    # ``context`` = the prompt's tokens + the output's, as the engine sampled them: the prompt is tokenized while
    # the output streams, so the last line leaves with the last token instead of after one more round trip.
    context = req.want_context and not req.raw
    out_tokens: list[int] = []
    prompt_tokens: asyncio.Task[list[int]] | None = None
    if context:
        body["return_tokens"] = True
    forced = ForcedCallReader(call.forced_names) if call.forced_names is not None else None
    shaper = None if forced is not None else OutputShaper.for_request(
        call.template, call.prompt, think=call.think, tools=req.tools)
    limit = CallLimit(req.parallel_tool_calls)
    call_id = ""
    probs = _Probs(req)
    if probs.reader is not None:
        body.update(logprobs.completion_fields(req.top_logprobs))
    async for event in client.stream("/completion", body):
        text = event.get("content", "")
        if context:
            out_tokens += event.get("tokens") or ()
        if probs.reader is not None:
            probs.pending += probs.reader.completion(event)
        if text:
            if req.want_context:
                texts.append(text)
            if forced is not None:
                name, fragment = forced.add(text)
                if name is not None:
                    call_id = tool_call_id()
                    if req.tool_call_deltas:
                        yield probs.attach(Piece(tool_call_delta={"index": 0, "id": call_id, "name": name}))
                if fragment and req.tool_call_deltas:
                    yield probs.attach(Piece(tool_call_delta={"index": 0, "arguments": fragment}))
            elif shaper is None:
                yield probs.attach(Piece(content=text))
            else:
                piece = limit.apply(_piece(*shaper.add(text)))
                if piece is not None:
                    yield probs.attach(piece)
        if event.get("stop"):
            final = event
        if context and prompt_tokens is None:
            # Only now, after the first piece went out (a generator runs on when asked for the next item):
            # started earlier, its connect and write ran before the first chunk's and delayed every TTFT.
            prompt_tokens = asyncio.create_task(client.tokenize(call.prompt, add_special=True))
            prompt_tokens.add_done_callback(_quiet)  # if the client leaves first, nobody awaits it
    if forced is not None:
        whole = forced.finish()
        if whole is not None:
            yield probs.attach(Piece(tool_calls=[{"id": call_id or tool_call_id(), **whole}]))
        elif forced.text and not (req.tool_call_deltas and forced.name is not None):
            # cut short by the token limit before the call was under way
            yield probs.attach(Piece(content=forced.text))
    if shaper is not None:
        piece = limit.apply(_piece(*shaper.finish()))
        if piece is not None:
            yield probs.attach(piece)
    rest = probs.rest()
    if rest is not None:
        yield rest
    stop_type = (final or {}).get("stop_type", "eos")
    stop_word = (final or {}).get("stopping_word") or None if stop_type == "word" else None
    out = _final("length" if stop_type == "limit" else "stop", (final or {}).get("timings", {}), stop_word)
    if context:
        out.context = await _context(client, call.prompt, "".join(texts), prompt_tokens, out_tokens, stop_type)
    yield out


async def _context(client: RunnerClient, prompt: str, output: str, prompt_tokens: asyncio.Task[list[int]] | None,
                   out_tokens: list[int], stop_type: str) -> list[int]:
    """Prompt tokens + sampled tokens; the end-of-generation token is not part of the text, so not of the
    context. A stop string may end inside a token: then the text is tokenized again, as Ollama always does."""
    if prompt_tokens is None or stop_type == "word":
        if prompt_tokens is not None:
            prompt_tokens.cancel()
        return await client.tokenize(prompt + output, add_special=True)
    if stop_type == "eos" and out_tokens:
        out_tokens = out_tokens[:-1]
    return await prompt_tokens + out_tokens


async def _chat(client: RunnerClient, call: EngineCall, req: InferenceRequest) -> AsyncIterator[Piece | Final]:
    """The native path: the engine applied the GGUF's Jinja template and parsed thinking and tool calls."""
    finish = "stop"
    timings: dict[str, Any] = {}
    calls: dict[int, dict[str, Any]] = {}  # the engine streams each tool call's arguments in fragments
    probs = _Probs(req)
    body = call.body if probs.reader is None else {**call.body, **logprobs.chat_fields(req.top_logprobs)}
    async for event in client.stream(CHAT, body):
        for choice in event.get("choices", []):
            if probs.reader is not None:
                probs.pending += probs.reader.chat(choice)
            delta = choice.get("delta") or {}
            content = delta.get("content") or ""
            thinking = delta.get("reasoning_content") or ""
            if content or thinking:
                yield probs.attach(Piece(content=content, thinking=thinking))
            for frag in delta.get("tool_calls") or ():
                for piece in _call_fragment(calls, frag, req):
                    yield probs.attach(piece)
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
        if event.get("timings"):
            timings = event["timings"]
    if calls:
        yield probs.attach(Piece(tool_calls=[_ollama_call(i, c) for i, c in sorted(calls.items())]))
    rest = probs.rest()
    if rest is not None:
        yield rest
    yield _final("length" if finish == "length" else "stop", timings)


def _call_fragment(calls: dict[int, dict[str, Any]], frag: dict[str, Any], req: InferenceRequest) -> list[Piece]:
    """Fold one streamed tool-call fragment into ``calls``; the deltas to send when the request streams them."""
    index = int(frag.get("index", len(calls)))
    if calls and not req.parallel_tool_calls and index != min(calls):
        return []
    call = calls.setdefault(index, {"id": "", "name": "", "args": "", "started": False})
    fn = frag.get("function") or {}
    call["id"] = frag.get("id") or call["id"]
    call["name"] += fn.get("name") or ""
    call["args"] += fn.get("arguments") or ""
    if not (req.tool_call_deltas and call["name"]):
        return []
    if not call["started"]:
        call["started"] = True
        call["id"] = call["id"] or tool_call_id()
        out = [Piece(tool_call_delta={"index": index, "id": call["id"], "name": call["name"]})]
        if call["args"]:
            out.append(Piece(tool_call_delta={"index": index, "arguments": call["args"]}))
        return out
    if fn.get("arguments"):
        return [Piece(tool_call_delta={"index": index, "arguments": fn["arguments"]})]
    return []


class _Probs:
    """Token logprobs read off the engine's events, held until the next piece goes out (a parser may hold text
    back), so every token's entry leaves with, or before, the text it made."""

    def __init__(self, req: InferenceRequest) -> None:
        self.reader = logprobs.Reader(req.top_logprobs) if req.logprobs else None
        self.pending: list[dict[str, Any]] = []

    def attach(self, piece: Piece) -> Piece:
        if self.pending:
            piece.logprobs, self.pending = self.pending, []
        return piece

    def rest(self) -> Piece | None:
        """What no piece carried (text a stop string or a parser swallowed), in a piece of its own."""
        return self.attach(Piece()) if self.pending else None


class CallLimit:
    """``parallel_tool_calls: false`` on the rendered path: the first call passes, later ones are dropped."""

    def __init__(self, parallel: bool) -> None:
        self.one = not parallel
        self.seen = 0

    def apply(self, piece: Piece | None) -> Piece | None:
        if piece is None or not self.one or not piece.tool_calls:
            return piece
        keep = piece.tool_calls[:max(0, 1 - self.seen)]
        self.seen += len(piece.tool_calls)
        if keep:
            piece.tool_calls = keep
            return piece
        piece.tool_calls = None
        return piece if piece.content or piece.thinking else None


def _quiet(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _piece(thinking: str, content: str, calls: list[dict[str, Any]]) -> Piece | None:
    if not (thinking or content or calls):
        return None
    return Piece(content=content, thinking=thinking, tool_calls=calls or None)


def _ollama_call(index: int, call: dict[str, Any]) -> dict[str, Any]:
    try:
        arguments = json.loads(call["args"]) if call["args"] else {}
    except json.JSONDecodeError:
        arguments = {}
    if not isinstance(arguments, dict):
        arguments = {}
    out: dict[str, Any] = {"function": {"index": index, "name": call["name"], "arguments": arguments}}
    if call["id"]:
        out["id"] = call["id"]
    return out
