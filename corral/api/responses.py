"""OpenAI's Responses API, ``POST /v1/responses``: stateless, the subset Ollama's ``openai/responses.go`` serves.

The input items become native chat messages and one ``InferenceRequest`` (as ``/v1/chat/completions`` builds), so
templates, capabilities and scheduling behave identically; the pieces are shaped into a Response object or its typed
SSE events (``event: <type>`` + ``data: {..., "sequence_number": n}``). Where Corral differs from Ollama on purpose
(status ``incomplete`` on the token limit, ``tool_choice`` enforced, text kept next to tool calls), the docstring says
so.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from corral.api import openai_schemas as o
from corral.api.shared import (
    SSE,
    check_capabilities,
    choose_tools,
    decode_base64,
    dumps,
    family_route,
    fold,
    join_parts,
    openai_error,
    openai_think,
    openai_tool_calls,
    openai_tool_choice,
    parse_arguments,
    prompt_tokens,
    resolve_model,
    service_of,
    sse_response,
    store_of,
    token_limit,
    tool_message,
)
from corral.errors import APIError
from corral.inference import options
from corral.inference.request import Final, InferenceRequest, Piece
from corral.inference.service import InferenceService

router = APIRouter(route_class=family_route(openai_error), tags=["openai"])

_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": o.ErrorResponse} for code in (400, 404, 500, 503)}
_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {SSE: {"schema": {"type": "string", "description":
                                       "with stream: event: <type> / data: {type, sequence_number, ...} events, "
                                       "ending with response.completed, response.incomplete or response.failed"}}}},
    **_ERRORS,
}


# -- request: input items to native messages ------------------------------------------------------------------------


def _image(url: str | None) -> str | None:
    """A data-URI image's base64 payload. ``file_id`` images (no URL) are skipped, as Ollama skips them."""
    if not url:
        return None
    if url.startswith(("http://", "https://")):
        raise APIError(400, "image URLs are not currently supported, please use base64 encoded data instead")
    head, sep, data = url.partition(",")
    if not sep or not head.startswith("data:") or not head.endswith(";base64"):
        raise APIError(400, "invalid image input")
    return decode_base64(data, "invalid image input")


def _content(parts: str | list[o.ResponsesContent] | None) -> tuple[str, list[str]]:
    """Text and images of a content list. Texts are concatenated without a separator, as Ollama does."""
    if parts is None:
        return "", []
    if isinstance(parts, str):
        return parts, []
    pieces: list[str | None] = []  # texts, and None where an image was
    images: list[str] = []
    for part in parts:
        if part.type in ("input_text", "output_text"):
            pieces.append(part.text or "")
        elif part.type == "input_image":
            image = _image(part.image_url)
            if image is not None:
                images.append(image)
                pieces.append(None)
        elif part.type == "input_file":
            raise APIError(400, "file inputs are not currently supported")
        else:
            raise APIError(400, f"unknown content type: {part.type}")
    return join_parts(pieces, ""), images


def _messages(body: o.ResponsesRequest) -> list[dict[str, Any]]:
    """Ollama's FromResponsesRequest: ``instructions`` lead as a system message; a ``reasoning`` item's text goes
    to the next assistant message; ``function_call`` items join the preceding assistant message. ``developer``
    becomes ``system`` (chat templates know only the latter)."""
    out: list[dict[str, Any]] = []
    if body.instructions:
        out.append({"role": "system", "content": body.instructions})
    if isinstance(body.input, str):
        if body.input:
            out.append({"role": "user", "content": body.input})
        return out
    names: dict[str, str] = {}
    pending = ""
    for i, item in enumerate(body.input):
        kind = item.type or ("message" if item.role else "")
        if kind == "reasoning":
            pending = item.encrypted_content or "".join(s.text for s in item.summary or ())
        elif kind == "message":
            role = (item.role or "user").lower()
            text, images = _content(item.content)
            msg: dict[str, Any] = {"role": "system" if role == "developer" else role, "content": text}
            if images:
                msg["images"] = images
            if role == "assistant" and pending:
                msg["thinking"], pending = pending, ""
            out.append(msg)
        elif kind == "function_call":
            name = item.name or ""
            call: dict[str, Any] = {"function": {"name": name, "arguments": parse_arguments(item.arguments or "")}}
            if item.call_id:
                call["id"] = item.call_id
                names[item.call_id] = name
            if not out or out[-1]["role"] != "assistant":
                out.append({"role": "assistant", "content": ""})
            out[-1].setdefault("tool_calls", []).append(call)
            if pending:
                out[-1]["thinking"], pending = pending, ""
        elif kind == "function_call_output":
            text, images = _content(item.output)
            out.append(tool_message(text, images, item.call_id, names))
        elif not kind:
            raise APIError(400, f"input[{i}]: input item missing required 'type' field")
        else:
            raise APIError(400, f'input[{i}]: unknown input item type: "{kind}"')
    if pending:
        out.append({"role": "assistant", "content": "", "thinking": pending})
    return out


def _options(body: o.ResponsesRequest) -> dict[str, Any]:
    """As Ollama: temperature 1.0 when absent; top_p only when given (so the Modelfile's stays in force)."""
    opts: dict[str, Any] = {"temperature": 1.0 if body.temperature is None else body.temperature}
    if body.top_p is not None:
        opts["top_p"] = body.top_p
    if body.max_output_tokens is not None:
        opts["num_predict"] = token_limit(body.max_output_tokens, "max_output_tokens")
    return options.validate(opts)


def _think(body: o.ResponsesRequest) -> bool | str | None:
    return openai_think(body.reasoning.effort if body.reasoning is not None else None)


def _format(body: o.ResponsesRequest) -> Any:
    fmt = body.text.format if body.text is not None else None
    if fmt is None:
        return None
    if fmt.type == "json_schema":
        return fmt.schema_
    return "json" if fmt.type == "json_object" else None


def _tools(body: o.ResponsesRequest) -> tuple[list[dict[str, Any]] | None, dict[str, Any]]:
    """Flat Responses tools to native ones, and the ``InferenceRequest`` fields that enforce ``tool_choice`` and
    ``parallel_tool_calls`` (``corral.api.shared.choose_tools``; Ollama ignores both)."""
    mode, names, only_named = openai_tool_choice(body.tool_choice)
    out = []
    for tool in body.tools or ():
        if tool.type != "function":
            raise APIError(400, f"unsupported tool type: {tool.type!r}")
        if not tool.name:
            raise APIError(400, "tool name is required")
        fn: dict[str, Any] = {"name": tool.name}
        if tool.description:
            fn["description"] = tool.description
        if tool.parameters is not None:
            fn["parameters"] = tool.parameters
        out.append({"type": "function", "function": fn})
    return choose_tools(out, mode, names, only_named=only_named, parallel=body.parallel_tool_calls is not False)


# -- response shaping ---------------------------------------------------------------------------------------------


def _new_id(prefix: str) -> str:
    return f"{prefix}_{random.randrange(1_000_000_000)}"


def _usage(final: Final) -> dict[str, Any]:
    prompt = prompt_tokens(final)
    return {"input_tokens": prompt, "output_tokens": final.eval_count, "total_tokens": prompt + final.eval_count,
            "input_tokens_details": {"cached_tokens": int(final.prompt_cached_count or 0)},
            "output_tokens_details": {"reasoning_tokens": 0}}


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(ident: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {"id": ident, "type": "message", "status": status, "role": "assistant",
            "content": [_text_part(text)] if status == "completed" else []}


def _reasoning_item(ident: str, thinking: str) -> dict[str, Any]:
    """Thinking as the summary, and as ``encrypted_content`` in plain text, so a client that sends the item back
    (as the SDKs do) restores it as the assistant's thinking."""
    return {"id": ident, "type": "reasoning", "summary": [{"type": "summary_text", "text": thinking}],
            "encrypted_content": thinking}


def _call_items(calls: list[dict[str, Any]], start: int = 0) -> list[dict[str, Any]]:
    return [{"id": _new_id("fc"), "type": "function_call", "status": "completed", "call_id": c["id"],
             "name": c["function"]["name"], "arguments": c["function"]["arguments"]}
            for c in openai_tool_calls(calls, start)]


class _Shape:
    """What the request echoes into every Response object (Ollama's ToResponse / buildResponseObject)."""

    def __init__(self, body: o.ResponsesRequest) -> None:
        self.body = body
        self.id = _new_id("resp")
        self.created_at = int(time.time())

    def response(self, status: str, output: list[dict[str, Any]], final: Final | None = None,
                 error: dict[str, str] | None = None) -> dict[str, Any]:
        """A Response object; ``status`` is ``incomplete`` (with the reason) when the token limit cut the answer,
        where Ollama always says ``completed``."""
        body = self.body
        fmt = body.text.format if body.text is not None else None
        reasoning = body.reasoning
        incomplete = None
        if final is not None and final.done_reason == "length":
            status, incomplete = "incomplete", {"reason": "max_output_tokens"}
        return {
            "id": self.id, "object": "response", "created_at": self.created_at,
            "completed_at": int(time.time()) if status in ("completed", "incomplete") else None,
            "status": status, "incomplete_details": incomplete, "model": body.model,
            "previous_response_id": None, "instructions": body.instructions or None, "output": output,
            "error": error, "tools": [t.model_dump(exclude_none=True) for t in body.tools or ()],
            "tool_choice": body.tool_choice if body.tool_choice is not None else "auto",
            "truncation": body.truncation or "disabled",
            "parallel_tool_calls": body.parallel_tool_calls is not False,
            "text": {"format": fmt.model_dump(by_alias=True, exclude_none=True) if fmt else {"type": "text"}},
            "top_p": 1.0 if body.top_p is None else body.top_p, "presence_penalty": 0, "frequency_penalty": 0,
            "top_logprobs": 0, "temperature": 1.0 if body.temperature is None else body.temperature,
            "reasoning": ({"effort": reasoning.effort, "summary": reasoning.summary}
                          if reasoning and (reasoning.effort or reasoning.summary) else None),
            "usage": _usage(final) if final is not None else None,
            "max_output_tokens": body.max_output_tokens, "max_tool_calls": None, "store": False,
            "background": False, "service_tier": "default", "metadata": {}, "safety_identifier": None,
            "prompt_cache_key": None,
        }


# -- the route ------------------------------------------------------------------------------------------------------


@router.post("/v1/responses", response_model=o.ResponseObject, responses=_DOC, summary="Create a response (OpenAI)")
async def create_response(request: Request, body: o.ResponsesRequest) -> Response:
    """Stateless: nothing is stored, so ``previous_response_id`` is refused rather than silently ignored."""
    if body.previous_response_id:
        raise APIError(400, "previous_response_id is not supported: send the whole conversation in input")
    messages = _messages(body)
    if not any(m["role"] != "system" for m in messages):
        raise APIError(400, "input is required")
    opts = _options(body)
    think = _think(body)
    tools, choice = _tools(body)
    fmt = _format(body)
    model = resolve_model(store_of(request), body.model)
    check_capabilities(model, tools=bool(tools), think=think, images=any("images" in m for m in messages))
    inference = InferenceRequest(model=model, messages=messages, options=opts, format=fmt, think=think, tools=tools,
                          tool_call_deltas=bool(body.stream), **choice)
    service = service_of(request)
    shape = _Shape(body)

    if not body.stream:
        answer = await fold(service, inference)
        content, thinking, calls, final = answer.content, answer.thinking, answer.tool_calls, answer.final
        output: list[dict[str, Any]] = []
        if thinking:
            output.append(_reasoning_item(_new_id("rs"), thinking))
        if content or not calls:
            output.append(_message_item(_new_id("msg"), content))
        output.extend(_call_items(calls))
        return JSONResponse(shape.response("completed", output, final))

    stream = _EventStream(shape)
    return await sse_response(stream.events(service, inference), openai_error, stream.failed)


class _EventStream:
    """The typed SSE events, in Ollama's order: a reasoning item (summary deltas), then a message item (content
    part, text deltas), function calls (added, arguments deltas and done, done), then the final
    ``response.completed`` (``response.incomplete`` at the token limit). Text after tool calls opens a new message
    item rather than being dropped, as Ollama drops it. A call the engine streams (a forced call, or any call on the
    native path) has its arguments in one delta per piece generated; a call parsed whole, in one delta."""

    def __init__(self, shape: _Shape) -> None:
        self.shape = shape
        self.seq = 0
        self.output: list[dict[str, Any]] = []  # finished items, for the final Response
        self.thinking: list[str] | None = None  # the open reasoning item's text
        self.reasoning_id = ""
        self.text: list[str] | None = None  # the open message item's text
        self.message_id = ""
        self.calls = 0
        self.open_calls: dict[int, dict[str, Any]] = {}  # streamed calls by index: the item so far, its arguments

    def event(self, kind: str, data: dict[str, Any]) -> str:
        payload = {"type": kind, "sequence_number": self.seq, **data}
        self.seq += 1
        return f"event: {kind}\ndata: {dumps(payload)}\n\n"

    def failed(self, status: int, message: str) -> str:
        """A failure after the stream began: ``response.failed`` with the error, as OpenAI ends such a stream."""
        code = "server_error" if status >= 500 else "invalid_request"
        return self.event("response.failed", {"response": self.shape.response(
            "failed", self.output, error={"code": code, "message": message})})

    @property
    def index(self) -> int:
        return len(self.output)

    def close_reasoning(self) -> list[str]:
        if self.thinking is None:
            return []
        text, self.thinking = "".join(self.thinking), None
        item = _reasoning_item(self.reasoning_id, text)
        events = [self.event("response.reasoning_summary_text.done", {
            "item_id": self.reasoning_id, "output_index": self.index, "summary_index": 0, "text": text}),
            self.event("response.output_item.done", {"output_index": self.index, "item": item})]
        self.output.append(item)
        return events

    def close_text(self) -> list[str]:
        if self.text is None:
            return []
        text, self.text = "".join(self.text), None
        where = {"item_id": self.message_id, "output_index": self.index, "content_index": 0}
        item = _message_item(self.message_id, text)
        events = [self.event("response.output_text.done", {**where, "text": text, "logprobs": []}),
                  self.event("response.content_part.done", {**where, "part": _text_part(text)}),
                  self.event("response.output_item.done", {"output_index": self.index, "item": item})]
        self.output.append(item)
        return events

    def open_text(self) -> list[str]:
        self.text, self.message_id = [], _new_id("msg")
        return [self.event("response.output_item.added", {
                    "output_index": self.index, "item": _message_item(self.message_id, "", "in_progress")}),
                self.event("response.content_part.added", {
                    "item_id": self.message_id, "output_index": self.index, "content_index": 0,
                    "part": _text_part("")})]

    def piece(self, piece: Piece) -> list[str]:
        events: list[str] = []
        if piece.thinking:
            if self.thinking is None:
                events += self.close_text()  # thinking after text is unusual; keep items in order if it happens
                self.thinking, self.reasoning_id = [], _new_id("rs")
                events.append(self.event("response.output_item.added", {
                    "output_index": self.index, "item": {"id": self.reasoning_id, "type": "reasoning",
                                                         "summary": []}}))
            self.thinking.append(piece.thinking)
            events.append(self.event("response.reasoning_summary_text.delta", {
                "item_id": self.reasoning_id, "output_index": self.index, "summary_index": 0,
                "delta": piece.thinking}))
        if piece.content:
            events += self.close_reasoning()
            if self.text is None:
                events += self.open_text()
            assert self.text is not None
            self.text.append(piece.content)
            events.append(self.event("response.output_text.delta", {
                "item_id": self.message_id, "output_index": self.index, "content_index": 0,
                "delta": piece.content, "logprobs": []}))
        if piece.tool_call_delta is not None:
            events += self.call_delta(piece.tool_call_delta)
        if piece.tool_calls:
            events += self.close_reasoning() + self.close_text()
            for item in _call_items(piece.tool_calls, self.calls):
                self.calls += 1
                index = next((i for i, c in self.open_calls.items() if c["item"]["call_id"] == item["call_id"]),
                             None)
                if index is not None:  # its arguments went out in deltas: close it with the text they made
                    item = self.open_calls.pop(index)["item"]
                    item["status"] = "completed"
                    where = {"item_id": item["id"], "output_index": self.index}
                    events.append(self.event("response.function_call_arguments.done",
                                             {**where, "arguments": item["arguments"]}))
                    events.append(self.event("response.output_item.done",
                                             {"output_index": self.index, "item": item}))
                    self.output.append(item)
                    continue
                where = {"item_id": item["id"], "output_index": self.index}
                events.append(self.event("response.output_item.added", {
                    "output_index": self.index, "item": {**item, "status": "in_progress", "arguments": ""}}))
                events.append(self.event("response.function_call_arguments.delta",
                                          {**where, "delta": item["arguments"]}))
                events.append(self.event("response.function_call_arguments.done",
                                          {**where, "arguments": item["arguments"]}))
                events.append(self.event("response.output_item.done", {"output_index": self.index, "item": item}))
                self.output.append(item)
        return events

    def call_delta(self, delta: dict[str, Any]) -> list[str]:
        """A streamed call: its first delta opens the item, later ones add to its arguments."""
        index = int(delta.get("index", 0))
        if "name" in delta:
            events = self.close_reasoning() + self.close_text()
            item = {"id": _new_id("fc"), "type": "function_call", "status": "in_progress",
                    "call_id": delta.get("id") or _new_id("call"), "name": delta["name"], "arguments": ""}
            self.open_calls[index] = {"item": item}
            events.append(self.event("response.output_item.added", {"output_index": self.index, "item": dict(item)}))
            return events
        call = self.open_calls.get(index)
        fragment = delta.get("arguments", "")
        if call is None or not fragment:
            return []
        call["item"]["arguments"] += fragment
        return [self.event("response.function_call_arguments.delta",
                           {"item_id": call["item"]["id"], "output_index": self.index, "delta": fragment})]

    def finish(self, final: Final) -> list[str]:
        events = self.close_reasoning()
        for call in self.open_calls.values():  # a streamed call the token limit cut short
            item = {**call["item"], "status": "incomplete"}
            events.append(self.event("response.output_item.done", {"output_index": self.index, "item": item}))
            self.output.append(item)
        self.open_calls.clear()
        if self.text is None and not any(item["type"] != "reasoning" for item in self.output):
            events += self.open_text()  # an empty answer still gets its (empty) message, as non-streaming does
        events += self.close_text()
        response = self.shape.response("completed", self.output, final)
        events.append(self.event(f"response.{response['status']}", {"response": response}))
        return events

    async def events(self, service: InferenceService, inference: InferenceRequest) -> AsyncGenerator[str, None]:
        """Nothing goes out before the engine's first item, so a load failure keeps its HTTP status."""
        started = False
        async for item in service.generate(inference):
            if not started:
                started = True
                created = self.shape.response("in_progress", [])
                yield self.event("response.created", {"response": created})
                yield self.event("response.in_progress", {"response": created})
            for event in self.piece(item) if isinstance(item, Piece) else self.finish(item):
                yield event
