"""The OpenAI-compatible API: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``.

Each route translates the OpenAI body into one ``InferenceRequest`` (the same one ``/api/chat`` and
``/api/generate`` build), runs it on the inference service and shapes the pieces into OpenAI's objects or its SSE
chunks. Mapping rules follow Ollama's ``openai/openai.go`` and ``middleware/openai.go`` (COMPAT §3); where Corral
differs on purpose, the docstring says so. Errors use OpenAI's envelope, ``{"error": {"message", "type", "param",
"code"}}``, with Ollama's status codes, so the official SDKs raise the matching exception class.
"""

from __future__ import annotations

import base64
import logging
import random
import struct
import time
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from corral.api import openai_schemas as o
from corral.api.shared import (
    SSE,
    call_id,
    check_capabilities,
    choose_tools,
    decode_base64,
    dumps,
    family_route,
    fold,
    join_parts,
    normalize,
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
)
from corral.errors import APIError, InvalidModelName, ModelNotFound
from corral.inference import options
from corral.inference.request import Final, InferenceRequest, Piece
from corral.inference.service import InferenceService
from corral.store.names import parse_name

log = logging.getLogger("corral.api")


# -- OpenAI ---------------------------------------------------------------------------------------------------------


def _stream_error(status: int, message: str) -> str:
    return f"data: {dumps(openai_error(status, message))}\n\n"


router = APIRouter(route_class=family_route(openai_error), tags=["openai"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": o.ErrorResponse}, 404: {"model": o.ErrorResponse}, 500: {"model": o.ErrorResponse},
    503: {"model": o.ErrorResponse},
}


def _sse_doc(model: type[Any]) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {SSE: {"schema": {"type": "string", "description":
                                                f"with stream: data: <{model.__name__}>... then data: [DONE]"}}}},
            **_ERRORS}


def _stop(stop: Any) -> list[str] | None:
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop]
    out = []
    for s in stop:
        if not isinstance(s, str):
            raise APIError(400, f"invalid type for 'stop' field: {type(s).__name__}")
        out.append(s)
    return out


def _chat_options(body: o.ChatCompletionRequest) -> dict[str, Any]:
    """Ollama's defaults for /v1: temperature and top_p are 1.0 when absent (OpenAI's defaults), overriding the
    Modelfile. ``max_completion_tokens`` (OpenAI's current name) is honoured as well as ``max_tokens``."""
    opts: dict[str, Any] = {
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "top_p": 1.0 if body.top_p is None else body.top_p,
    }
    stop = _stop(body.stop)
    if stop is not None:
        opts["stop"] = stop
    limit = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    if limit is not None:
        opts["num_predict"] = token_limit(limit, "max_completion_tokens" if body.max_completion_tokens is not None
                                          else "max_tokens")
    for key in ("seed", "frequency_penalty", "presence_penalty"):
        value = getattr(body, key)
        if value is not None:
            opts[key] = value
    return options.validate(opts)


def _format(fmt: o.ResponseFormat | None) -> Any:
    if fmt is None:
        return None
    kind = fmt.type.strip().lower()
    if kind == "json_object":
        return "json"
    if kind == "json_schema" and fmt.json_schema is not None:
        return fmt.json_schema.schema_
    return None


def _think(body: o.ChatCompletionRequest) -> bool | str | None:
    return openai_think(body.reasoning.effort if body.reasoning is not None else body.reasoning_effort)


def _image(part: o.ContentPart) -> str:
    url = part.image_url.url if isinstance(part.image_url, o.ImageURL) else part.image_url
    if not isinstance(url, str):
        raise APIError(400, "invalid message format")
    if url.startswith(("http://", "https://")):
        raise APIError(400, "image URLs are not currently supported, please use base64 encoded data instead")
    head, sep, data = url.partition(",")
    if sep and (head == "data:;base64" or (head.startswith("data:image/") and head.endswith(";base64"))):
        return decode_base64(data, "invalid image input")  # what the bytes are is judged by inference.images
    raise APIError(400, "invalid image input")


def _chat_messages(messages: list[o.ChatMessage]) -> list[dict[str, Any]]:
    """OpenAI messages to native ones. The parts of an array ``content`` become one message: texts joined by a blank
    line, images attached. (Ollama makes one message per part and its template merges them the same way; one
    message also suits Jinja templates that insist on alternating roles.)"""
    names = {tc.id: tc.function.name for m in messages for tc in m.tool_calls or () if tc.id}
    out: list[dict[str, Any]] = []
    for msg in messages:
        role = msg.role.lower()
        native: dict[str, Any] = {"role": role}
        content = msg.content
        if content is None:
            if msg.tool_calls is None:
                raise APIError(400, "invalid message content type: <nil>")
            native["content"] = ""
        elif isinstance(content, str):
            native["content"] = content
        else:
            pieces: list[str | None] = []  # texts, and None where an image was
            images: list[str] = []
            for part in content:
                if part.type == "text":
                    if part.text is None:
                        raise APIError(400, "invalid message format")
                    pieces.append(part.text)
                elif part.type == "image_url":
                    images.append(_image(part))
                    pieces.append(None)
                elif part.type == "input_audio":
                    raise APIError(400, "audio input is not supported")
                else:
                    raise APIError(400, "invalid message format")
            native["content"] = join_parts(pieces, "\n\n")
            if images:
                native["images"] = images
        thinking = msg.reasoning or msg.reasoning_content
        if thinking:
            native["thinking"] = thinking
        if msg.tool_calls:
            native["tool_calls"] = [
                {**({"id": tc.id} if tc.id else {}), "function": {"name": tc.function.name,
                                                                   "arguments": parse_arguments(tc.function.arguments)}}
                for tc in msg.tool_calls
            ]
        if msg.tool_call_id:
            native["tool_call_id"] = msg.tool_call_id
        if role == "tool":
            tool_name = msg.name or names.get(msg.tool_call_id or "", "")
            if tool_name:
                native["tool_name"] = tool_name
        out.append(native)
    return out


def _tools(body: o.ChatCompletionRequest) -> tuple[list[dict[str, Any]] | None, dict[str, Any]]:
    """Function tools in the native shape, and the ``InferenceRequest`` fields that enforce ``tool_choice`` and
    ``parallel_tool_calls`` (see :func:`choose_tools`; Ollama ignores both)."""
    mode, names, only_named = openai_tool_choice(body.tool_choice)
    out = []
    for tool in body.tools or ():
        if tool.type != "function":
            raise APIError(400, f"unsupported tool type: {tool.type!r}")
        out.append({"type": "function", "function": tool.function.model_dump(exclude_none=True)})
    return choose_tools(out, mode, names, only_named=only_named, parallel=body.parallel_tool_calls is not False)


def _finish_reason(reason: str, tool_calls: bool) -> str:
    return "tool_calls" if tool_calls and reason == "stop" else reason


def _usage(final: Final) -> dict[str, int]:
    prompt = prompt_tokens(final)
    return {"prompt_tokens": prompt, "completion_tokens": final.eval_count, "total_tokens": prompt + final.eval_count}


def _new_id(prefix: str) -> str:
    return f"{prefix}-{random.randrange(1_000_000_000)}"


@router.post("/v1/chat/completions", response_model=o.ChatCompletion, responses=_sse_doc(o.ChatCompletionChunk),
             summary="Chat completion (OpenAI)")
async def chat_completions(request: Request, body: o.ChatCompletionRequest) -> Response:
    if not body.messages:
        raise APIError(400, "[] is too short - 'messages'")
    messages = _chat_messages(body.messages)
    opts = _chat_options(body)
    fmt = _format(body.response_format)
    think = _think(body)
    tools, choice = _tools(body)
    model = resolve_model(store_of(request), body.model)
    check_capabilities(model, tools=bool(tools), think=think, images=any("images" in m for m in messages))
    inference = InferenceRequest(model=model, messages=messages, options=opts, format=fmt, think=think, tools=tools,
                          tool_call_deltas=bool(body.stream), **choice)
    service = service_of(request)
    ident = _new_id("chatcmpl")

    if not body.stream:
        answer = await fold(service, inference)
        content, thinking, calls, final = answer.content, answer.thinking, answer.tool_calls, answer.final
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking:
            message["reasoning"] = thinking
        if calls:
            message["tool_calls"] = openai_tool_calls(calls)
        return JSONResponse({
            "id": ident, "object": "chat.completion", "created": int(time.time()), "model": body.model,
            "system_fingerprint": "fp_ollama",
            "choices": [{"index": 0, "message": message,
                         "finish_reason": _finish_reason(final.done_reason, bool(calls))}],
            "usage": _usage(final),
        })

    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return await sse_response(_chat_events(service, inference, ident, body.model, include_usage), openai_error,
                              _stream_error)


async def _chat_events(service: InferenceService, inference: InferenceRequest, ident: str, model: str,
                       include_usage: bool) -> AsyncGenerator[str, None]:
    """SSE chunks, built as strings: the per-token path. Reasoning and content of one piece go out as two chunks
    (reasoning first); the finish reason comes in a chunk of its own with an empty delta, then usage if asked.

    A tool call the engine streams (a forced call, or any call on the native path) goes out in OpenAI's incremental
    form: a first delta with its index, id, type, name and empty arguments, then deltas with only the index and the
    next piece of the arguments. A call parsed whole (the rendered path's ToolCallParser) comes in one delta."""
    created = int(time.time())
    usage_null = ',"usage":null' if include_usage else ""
    head = (f'data: {{"id":"{ident}","object":"chat.completion.chunk","created":{created},'
            f'"model":{dumps(model)},"system_fingerprint":"fp_ollama","choices":[{{"index":0,"delta":{{')
    open_tail = f'}},"finish_reason":null}}]{usage_null}}}\n\n'
    role = '"role":"assistant",'
    calls_sent = 0
    streamed: set[int] = set()  # indexes of calls whose arguments went out in deltas
    async for item in service.generate(inference):
        if isinstance(item, Piece):
            if item.thinking:
                yield f'{head}{role}"reasoning":{dumps(item.thinking)}{open_tail}'
                role = ""
            if item.content:
                yield f'{head}{role}"content":{dumps(item.content)}{open_tail}'
                role = ""
            delta = item.tool_call_delta
            if delta is not None:
                index = int(delta.get("index", 0))
                if "name" in delta:
                    streamed.add(index)
                    calls_sent += 1
                    call = {"index": index, "id": delta.get("id") or call_id(), "type": "function",
                            "function": {"name": delta["name"], "arguments": ""}}
                else:
                    call = {"index": index, "function": {"arguments": delta.get("arguments", "")}}
                yield f'{head}{role}"tool_calls":[{dumps(call)}]{open_tail}'
                role = ""
            if item.tool_calls:
                calls = [c for c in openai_tool_calls(item.tool_calls, calls_sent) if c["index"] not in streamed]
                calls_sent += len(calls)
                if calls:
                    yield f'{head}{role}"content":"","tool_calls":{dumps(calls)}{open_tail}'
                    role = ""
            continue
        reason = dumps(_finish_reason(item.done_reason, calls_sent > 0))
        yield f'{head}{role.rstrip(",")}}},"finish_reason":{reason}}}]{usage_null}}}\n\n'
        if include_usage:
            yield (f'data: {{"id":"{ident}","object":"chat.completion.chunk","created":{created},'
                   f'"model":{dumps(model)},"system_fingerprint":"fp_ollama","choices":[],'
                   f'"usage":{dumps(_usage(item))}}}\n\n')
        yield "data: [DONE]\n\n"


# -- legacy completions -----------------------------------------------------------------------------------------------


def _completion_options(body: o.CompletionRequest) -> dict[str, Any]:
    """As Ollama's FromCompleteRequest: temperature 1.0 when absent, top_p 0 or absent means 1.0, penalties always
    sent (0 by default)."""
    opts: dict[str, Any] = {
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "top_p": body.top_p or 1.0,
        "frequency_penalty": body.frequency_penalty or 0.0,
        "presence_penalty": body.presence_penalty or 0.0,
    }
    stop = _stop(body.stop)
    if stop is not None:
        opts["stop"] = stop
    if body.max_tokens is not None:
        opts["num_predict"] = token_limit(body.max_tokens, "max_tokens")
    if body.seed is not None:
        opts["seed"] = body.seed
    return options.validate(opts)


def _prompt(prompt: str | list[str]) -> str:
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1:
        return prompt[0]  # what the SDKs send for a single prompt given as a list
    raise APIError(400, "prompt must be a single string")


@router.post("/v1/completions", response_model=o.Completion, responses=_sse_doc(o.Completion),
             summary="Text completion (OpenAI, legacy)")
async def completions(request: Request, body: o.CompletionRequest) -> Response:
    prompt = _prompt(body.prompt)
    opts = _completion_options(body)
    model = resolve_model(store_of(request), body.model)
    check_capabilities(model, what="generate")
    if body.suffix and "insert" not in model.capabilities():
        raise APIError(400, f'"{model.display_name}" does not support insert')
    inference = InferenceRequest(model=model, prompt=prompt, suffix=body.suffix, options=opts)
    service = service_of(request)
    ident = _new_id("cmpl")

    if not body.stream:
        answer = await fold(service, inference)
        text, final = answer.content, answer.final
        return JSONResponse({
            "id": ident, "object": "text_completion", "created": int(time.time()), "model": body.model,
            "system_fingerprint": "fp_ollama",
            "choices": [{"text": text, "index": 0, "finish_reason": final.done_reason}],
            "usage": _usage(final),
        })

    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return await sse_response(_completion_events(service, inference, ident, body.model, include_usage),
                              openai_error, _stream_error)


async def _completion_events(service: InferenceService, inference: InferenceRequest, ident: str, model: str,
                             include_usage: bool) -> AsyncGenerator[str, None]:
    created = int(time.time())
    usage_null = ',"usage":null' if include_usage else ""
    head = f'data: {{"id":"{ident}","object":"text_completion","created":{created},"choices":[{{"text":'
    tail = f',"model":{dumps(model)},"system_fingerprint":"fp_ollama"{usage_null}}}\n\n'
    async for item in service.generate(inference):
        if isinstance(item, Piece):
            if item.content:
                yield f'{head}{dumps(item.content)},"index":0,"finish_reason":null}}]{tail}'
            continue
        yield f'{head}"","index":0,"finish_reason":{dumps(item.done_reason)}}}]{tail}'
        if include_usage:
            yield (f'data: {{"id":"{ident}","object":"text_completion","created":{created},"choices":[],'
                   f'"model":{dumps(model)},"system_fingerprint":"fp_ollama",'
                   f'"usage":{dumps(_usage(item))}}}\n\n')
        yield "data: [DONE]\n\n"


# -- models ------------------------------------------------------------------------------------------------------


@router.get("/v1/models", response_model=o.ModelList, responses=_ERRORS, summary="List models (OpenAI)")
def list_models(request: Request) -> Response:
    """The store's models; ``created`` is the manifest's modification time, ``owned_by`` its namespace."""
    data = [{"id": r.name.display_shortest(), "object": "model", "created": int(r.modified_at.timestamp()),
             "owned_by": r.name.namespace} for r in store_of(request).list_models()]
    return JSONResponse({"object": "list", "data": data})


@router.get("/v1/models/{model:path}", response_model=o.ModelObject, responses=_ERRORS,
            summary="Retrieve a model (OpenAI)")
def retrieve_model(request: Request, model: str) -> Response:
    """One model, ``id`` as the client spelled it. Names with a namespace (``ns/model:tag``) work too; Ollama's
    route takes a single path segment only."""
    store = store_of(request)
    try:
        name = parse_name(model)
        record = store.read_manifest(store.resolve(name))
    except ModelNotFound:
        raise APIError(404, f"model '{model}' not found") from None
    except InvalidModelName:
        raise APIError(400, "invalid model name") from None
    return JSONResponse({"id": model, "object": "model", "created": int(record.modified_at.timestamp()),
                         "owned_by": name.namespace})



# -- embeddings ----------------------------------------------------------------------------------------------------


@router.post("/v1/embeddings", response_model=o.EmbeddingList, responses=_ERRORS, summary="Embeddings (OpenAI)")
async def create_embeddings(request: Request, body: o.EmbeddingRequest) -> Response:
    """L2-normalized vectors, as Ollama serves them; ``base64`` is little-endian float32, as the OpenAI SDK decodes."""
    inputs = [body.input] if isinstance(body.input, str) else list(body.input)
    if not inputs or any(text == "" for text in inputs):
        raise APIError(400, "invalid input")
    model = resolve_model(store_of(request), body.model)
    result = await service_of(request).embed(model, inputs, opts={}, keep_alive=None)
    data = []
    for i, vector in enumerate(result.vectors):
        unit = normalize(vector, body.dimensions)
        encoded: list[float] | str = unit
        if body.encoding_format == "base64":
            encoded = base64.b64encode(struct.pack(f"<{len(unit)}f", *unit)).decode()
        data.append({"object": "embedding", "embedding": encoded, "index": i})
    tokens = result.prompt_eval_count
    return JSONResponse({"object": "list", "data": data, "model": body.model,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
