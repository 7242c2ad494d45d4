"""The Anthropic-compatible API: ``POST /v1/messages``, so Claude Code and the ``anthropic`` SDK can use local models.

The Messages body becomes one chat ``InferenceRequest``; the engine's pieces become Anthropic content blocks, or its SSE
event sequence when streaming (``message_start``, ``ping``, ``content_block_start/delta/stop``, ``message_delta``,
``message_stop``). Mapping rules follow Ollama's ``anthropic/anthropic.go`` and ``middleware/anthropic.go`` (COMPAT
§4). Errors use Anthropic's envelope, ``{"type": "error", "error": {"type", "message"}, "request_id"}``. The API key
and ``anthropic-version`` header are accepted and not checked. Ollama has no ``/v1/messages/count_tokens``, nor does
Corral.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from corral.api import anthropic_schemas as a
from corral.api.shared import (
    call_id,
    check_capabilities,
    choose_tools,
    decode_base64,
    dumps,
    family_route,
    fold,
    join_parts,
    prompt_tokens,
    resolve_model,
    service_of,
    sse_response,
    store_of,
    tool_message,
)
from corral.errors import APIError
from corral.inference import options
from corral.inference.request import Final, InferenceRequest, Piece
from corral.inference.service import InferenceService
from corral.store.model import Model

log = logging.getLogger("corral.api")

_KINDS = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 429: "rate_limit_error", 503: "overloaded_error", 529: "overloaded_error"}


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": _KINDS.get(status, "api_error"), "message": message},
            "request_id": f"req_{secrets.token_hex(12)}"}


def _stream_error(status: int, message: str) -> str:
    body = {"type": "error", "error": {"type": _KINDS.get(status, "api_error"), "message": message}}
    return f"event: error\ndata: {dumps(body)}\n\n"


router = APIRouter(route_class=family_route(anthropic_error), tags=["anthropic"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": a.ErrorResponse}, 404: {"model": a.ErrorResponse}, 500: {"model": a.ErrorResponse},
    503: {"model": a.ErrorResponse},
}


def _text_of(blocks: str | list[a.ContentBlock] | None) -> str:
    """Text blocks joined by a blank line (Ollama concatenates them with nothing between, gluing sentences)."""
    if blocks is None:
        return ""
    if isinstance(blocks, str):
        return blocks
    return "\n\n".join(b.text for b in blocks if b.type == "text" and b.text)


def _image(block: a.ContentBlock) -> str:
    source = block.source
    if source is None:
        raise APIError(400, "invalid image source")
    if source.type != "base64":
        raise APIError(400, f"invalid image source type: {source.type}. Only base64 images are supported.")
    return decode_base64(source.data or "", "invalid base64 image data")


def _messages(body: a.MessagesRequest) -> list[dict[str, Any]]:
    """Anthropic messages to native ones. A user turn's ``tool_result`` blocks become ``tool`` messages placed
    before the turn's own text, since they answer the assistant turn just before (Ollama puts them after)."""
    out: list[dict[str, Any]] = []
    system = _text_of(body.system)
    if system:
        out.append({"role": "system", "content": system})
    names: dict[str, str] = {}
    for msg in body.messages:
        role = msg.role.lower()
        if isinstance(msg.content, str):
            out.append({"role": role, "content": msg.content})
            continue
        pieces: list[str | None] = []  # texts, and None where an image was
        images: list[str] = []
        calls: list[dict[str, Any]] = []
        thinking = ""
        for block in msg.content:
            if block.type == "text":
                if block.text:
                    pieces.append(block.text)
            elif block.type == "image":
                images.append(_image(block))
                pieces.append(None)
            elif block.type == "tool_use":
                if not block.id:
                    raise APIError(400, "tool_use block missing required 'id' field")
                if not block.name:
                    raise APIError(400, "tool_use block missing required 'name' field")
                names[block.id] = block.name
                arguments = block.input if isinstance(block.input, dict) else {}
                calls.append({"id": block.id, "function": {"name": block.name, "arguments": arguments}})
            elif block.type == "tool_result":
                parts = block.content if isinstance(block.content, list) else []
                shown = [_image(b) for b in parts if b.type == "image"]
                out.append(tool_message(_text_of(block.content), shown, block.tool_use_id, names))
            elif block.type == "thinking":
                thinking = block.thinking or ""
            # other blocks (redacted_thinking, document, server tool results...) carry nothing a local model can use
        if pieces or calls or thinking:
            native: dict[str, Any] = {"role": role, "content": join_parts(pieces, "\n\n")}
            if images:
                native["images"] = images
            if calls:
                native["tool_calls"] = calls
            if thinking:
                native["thinking"] = thinking
            out.append(native)
    return out


def _tools(body: a.MessagesRequest) -> tuple[list[dict[str, Any]] | None, dict[str, Any]]:
    """Client tools as native function tools, and the ``InferenceRequest`` fields that enforce ``tool_choice`` (Ollama
    ignores it; see ``corral.api.shared.choose_tools``): ``none`` drops the tools, ``auto`` lets the model decide,
    ``any`` forces a call, ``tool`` forces a call to the named tool; ``disable_parallel_tool_use`` keeps only the
    first call. Server-side web search tools need ollama.com: dropped."""
    choice = body.tool_choice
    kind = choice.type if choice is not None else "auto"
    names: list[str] | None = None
    if kind == "tool":
        if choice is None or not choice.name:
            raise APIError(400, "tool_choice.name is required when tool_choice.type is \"tool\"")
        names = [choice.name]
    elif kind not in ("none", "auto", "any"):
        raise APIError(400, f'invalid tool_choice.type: "{kind}" (must be "auto", "any", "tool" or "none")')
    mode = {"none": "none", "auto": "auto"}.get(kind, "required")
    if mode == "none":
        return None, {}
    out = []
    for tool in body.tools or ():
        if tool.type and tool.type.startswith("web_search"):
            log.warning("tool %r (%s) dropped: server-side web search is not available", tool.name, tool.type)
            continue
        out.append({"type": "function", "function": {
            "name": tool.name, "description": tool.description or "",
            "parameters": tool.input_schema or {"type": "object", "properties": {}},
        }})
    parallel = not (choice is not None and choice.disable_parallel_tool_use)
    return choose_tools(out or None, mode, names, parallel=parallel)


_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "max": "max", "xhigh": "high"}


def _think(body: a.MessagesRequest, model: Model) -> bool | str | None:
    """``thinking`` wins over ``output_config.effort``. A model that cannot think is asked not to, rather than
    failing the request (Ollama's relaxed thinking for this API: Claude Code asks for thinking by default)."""
    think: bool | str | None = None
    if body.thinking is not None:
        kind = body.thinking.type
        think = True if kind in ("enabled", "adaptive") else False if kind == "disabled" else None
    elif body.output_config is not None and body.output_config.effort:
        think = _EFFORTS.get(body.output_config.effort)
    if think not in (None, False) and "thinking" not in model.capabilities():
        return None
    return think


def _options(body: a.MessagesRequest) -> dict[str, Any]:
    opts: dict[str, Any] = {"num_predict": body.max_tokens}
    for key in ("temperature", "top_p", "top_k"):
        value = getattr(body, key)
        if value is not None:
            opts[key] = value
    if body.stop_sequences:
        opts["stop"] = list(body.stop_sequences)
    return options.validate(opts)


def stop_reason(final: Final, tool_calls: bool) -> str:
    if tool_calls:
        return "tool_use"
    if final.stop_sequence:  # set once the engine reports which stop string ended generation
        return "stop_sequence"
    return {"stop": "end_turn", "length": "max_tokens"}.get(final.done_reason, "stop_sequence")


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    fn = call.get("function") or {}
    return {"type": "tool_use", "id": call.get("id") or call_id(), "name": fn.get("name", ""),
            "input": fn.get("arguments") or {}}


def _estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """``message_start`` must carry input_tokens before the engine has counted them: about four bytes a token.
    The exact count follows in ``message_delta``."""
    return max(1, sum(len(str(m.get("content", "")).encode()) for m in messages) // 4)


@router.post("/v1/messages", response_model=a.MessagesResponse, summary="Create a message (Anthropic)",
             responses={200: {"content": {"text/event-stream": {"schema": {"type": "string", "description":
                        "with stream: message_start, ping, content_block_*, message_delta, message_stop"}}}},
                        **_ERRORS})
async def messages(request: Request, body: a.MessagesRequest) -> Response:
    if not body.model:
        raise APIError(400, "model is required")
    if body.max_tokens <= 0:
        raise APIError(400, "max_tokens is required and must be positive")
    if not body.messages:
        raise APIError(400, "messages is required")
    msgs = _messages(body)
    opts = _options(body)
    tools, choice = _tools(body)
    model = resolve_model(store_of(request), body.model)
    think = _think(body, model)
    check_capabilities(model, tools=bool(tools), think=think, images=any("images" in m for m in msgs))
    inference = InferenceRequest(model=model, messages=msgs, options=opts, think=think, tools=tools,
                          tool_call_deltas=bool(body.stream), **choice)
    service = service_of(request)
    ident = f"msg_{secrets.token_hex(12)}"

    if not body.stream:
        answer = await fold(service, inference)
        text, thinking, calls, final = answer.content, answer.thinking, answer.tool_calls, answer.final
        content: list[dict[str, Any]] = []
        if thinking:
            content.append({"type": "thinking", "thinking": thinking, "signature": ""})
        if text:
            content.append({"type": "text", "text": text})
        content.extend(_tool_use(c) for c in calls)
        return JSONResponse({
            "id": ident, "type": "message", "role": "assistant", "model": body.model, "content": content,
            "stop_reason": stop_reason(final, bool(calls)), "stop_sequence": final.stop_sequence,
            "usage": {"input_tokens": prompt_tokens(final), "output_tokens": final.eval_count},
        })

    return await sse_response(_events(service, inference, ident, body.model, _estimate_tokens(msgs)),
                              anthropic_error, _stream_error)


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {dumps(data)}\n\n"


async def _events(service: InferenceService, inference: InferenceRequest, ident: str, model: str,
                  estimate: int) -> AsyncGenerator[str, None]:
    """Anthropic's event sequence. Thinking and text deltas are built as strings (the per-token path); a block is
    closed when the next kind starts. A tool call the engine streams (a forced call, or any call on the native
    path) is a ``tool_use`` block whose input arrives in ``input_json_delta`` pieces as it is generated; a call
    parsed whole is a block with its input in one delta."""
    index = -1
    open_kind = ""  # "", "thinking" or "text"
    calls = 0
    started = False
    open_uses: dict[str, int] = {}  # streamed tool_use blocks still open: call id -> block index
    use_blocks: dict[int, int] = {}  # streamed call index -> block index
    async for item in service.generate(inference):
        if not started:  # only now: a failure before the first item keeps its HTTP status
            started = True
            yield _event("message_start", {"type": "message_start", "message": {
                "id": ident, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": estimate, "output_tokens": 0}}})
            yield 'event: ping\ndata: {"type":"ping"}\n\n'
        if isinstance(item, Piece):
            for kind, text in (("thinking", item.thinking), ("text", item.content)):
                if not text:
                    continue
                if open_kind != kind:
                    if open_kind:
                        yield f'event: content_block_stop\ndata: {{"type":"content_block_stop","index":{index}}}\n\n'
                    index += 1
                    open_kind = kind
                    block = {"type": "thinking", "thinking": "", "signature": ""} if kind == "thinking" else {
                        "type": "text", "text": ""}
                    yield _event("content_block_start",
                                 {"type": "content_block_start", "index": index, "content_block": block})
                yield (f'event: content_block_delta\ndata: {{"type":"content_block_delta","index":{index},'
                       f'"delta":{{"type":"{kind}_delta","{kind}":{dumps(text)}}}}}\n\n')
            delta = item.tool_call_delta
            if delta is not None and "name" in delta:
                if open_kind:
                    yield f'event: content_block_stop\ndata: {{"type":"content_block_stop","index":{index}}}\n\n'
                    open_kind = ""
                index += 1
                use_id = delta.get("id") or call_id()
                open_uses[use_id] = use_blocks[int(delta.get("index", 0))] = index
                yield _event("content_block_start", {"type": "content_block_start", "index": index, "content_block": {
                    "type": "tool_use", "id": use_id, "name": delta["name"], "input": {}}})
            elif delta is not None and delta.get("arguments"):
                at = use_blocks.get(int(delta.get("index", 0)))
                if at is not None:
                    yield _event("content_block_delta", {"type": "content_block_delta", "index": at, "delta": {
                        "type": "input_json_delta", "partial_json": delta["arguments"]}})
            for call in item.tool_calls or ():
                at = open_uses.pop(str(call.get("id", "")), None)
                if at is not None:  # streamed: its input is complete
                    calls += 1
                    yield f'event: content_block_stop\ndata: {{"type":"content_block_stop","index":{at}}}\n\n'
                    continue
                if open_kind:
                    yield f'event: content_block_stop\ndata: {{"type":"content_block_stop","index":{index}}}\n\n'
                    open_kind = ""
                index += 1
                calls += 1
                use = _tool_use(call)
                yield _event("content_block_start", {"type": "content_block_start", "index": index,
                                                     "content_block": {**use, "input": {}}})
                yield _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {
                    "type": "input_json_delta", "partial_json": dumps(use["input"])}})
                yield f'event: content_block_stop\ndata: {{"type":"content_block_stop","index":{index}}}\n\n'
            continue
        if open_kind:
            yield f'event: content_block_stop\ndata: {{"type":"content_block_stop","index":{index}}}\n\n'
        for at in open_uses.values():  # a streamed call the token limit cut short
            yield f'event: content_block_stop\ndata: {{"type":"content_block_stop","index":{at}}}\n\n'
        yield _event("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason(item, calls > 0),
                      "stop_sequence": item.stop_sequence},
            "usage": {"input_tokens": prompt_tokens(item), "output_tokens": item.eval_count}})
        yield 'event: message_stop\ndata: {"type":"message_stop"}\n\n'
