"""The OpenAI-compatible API: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``.

Each route translates the OpenAI body into one ``Inference`` (the same one ``/api/chat`` and ``/api/generate`` build),
runs it on the shared ``Engine`` and shapes the pieces into OpenAI's objects or its SSE chunks. Mapping rules follow
Ollama's ``openai/openai.go`` and ``middleware/openai.go`` (COMPAT §3); where Corral differs on purpose, the
docstring says so. Errors use OpenAI's envelope, ``{"error": {"message", "type", "param", "code"}}``, with Ollama's
status codes, so the official SDKs raise the matching exception class.

The helpers in the first section (model lookup, capability checks, the error-catching route class and the SSE
response) are shared with ``corral.api.anthropic``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import random
import string
import struct
import time
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute

from corral.api import openai_schemas as o
from corral.api.native import normalize
from corral.api.shared import engine_of, resolve_model, store_of
from corral.http.errors import APIError, status_for
from corral.http.reqlog import log_unhandled
from corral.inference import options
from corral.inference.service import Engine, Final, Inference, Piece
from corral.parsers.forced import tool_name
from corral.store.model import Model
from corral.store.names import InvalidModelName, parse_name
from corral.store.store import ModelNotFound

log = logging.getLogger("corral.api")

SSE = "text/event-stream"

# -- shared by the /v1 API families ----------------------------------------------------------------------------------


def dumps(value: Any) -> str:
    """Compact JSON, as Go's encoder writes it: every byte counts on the per-token path."""
    return json.dumps(value, separators=(",", ":"))


def check_capabilities(model: Model, *, tools: bool = False, think: Any = None, images: bool = False,
                       what: str = "chat") -> None:
    """Ollama's capability rules (COMPAT §12), worded as ``/api/chat`` words them."""
    caps = model.capabilities()
    name = model.display_name
    if "completion" not in caps:
        raise APIError(400, f'"{name}" does not support {what}')
    if tools and "tools" not in caps:
        raise APIError(400, f'"{name}" does not support tools')
    if think not in (None, False) and "thinking" not in caps:
        raise APIError(400, f'"{name}" does not support thinking')
    if images and "vision" not in caps:
        raise APIError(400, f'"{name}" does not support images')


def validation_message(exc: RequestValidationError) -> str:
    """One line naming the first bad field, like the Go decoder's message, without pydantic's URL noise."""
    errors = exc.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    kind = first.get("type")
    if kind == "json_invalid":
        return f"invalid JSON: {first.get('ctx', {}).get('error', first.get('msg'))}"
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if kind == "missing" and not loc:
        return "missing request body"
    return f"{'.'.join(loc)}: {first.get('msg')}" if loc else str(first.get("msg"))


ErrorShape = Callable[[int, str], dict[str, Any]]


def family_route(shape: ErrorShape) -> type[APIRoute]:
    """A route class whose every failure (body validation included) answers in one API family's error shape.

    The app-wide handlers in ``errors.py`` answer in Ollama's ``{"error": "..."}``; an OpenAI or Anthropic SDK would
    not find its message there, so these routes catch errors before those handlers see them.
    """

    class FamilyRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            inner = super().get_route_handler()

            async def handler(request: Request) -> Response:
                try:
                    return await inner(request)
                except RequestValidationError as exc:
                    status, message = 400, validation_message(exc)
                except Exception as exc:
                    status, message = status_for(exc)
                    if message.startswith("internal error"):
                        log_unhandled(log, exc, request.url.path)
                return JSONResponse(shape(status, message), status_code=status)

            return handler

    return FamilyRoute


async def sse_response(events: AsyncGenerator[str, None], shape: ErrorShape,
                       stream_error: Callable[[int, str], str]) -> Response:
    """Stream SSE events, but only once the first exists: a failure before it (unknown model, a load error, a full
    queue) keeps its HTTP status and family-shaped JSON body; one after it becomes a final in-band error event."""
    try:
        first = await anext(events)
    except StopAsyncIteration:
        return Response(b"", media_type=SSE)
    except Exception as exc:
        await events.aclose()
        status, message = status_for(exc)
        return JSONResponse(shape(status, message), status_code=status)

    async def body() -> AsyncGenerator[bytes, None]:
        yield first.encode()
        try:
            async for event in events:
                yield event.encode()
        except Exception as exc:
            status, message = status_for(exc)
            log.warning("stream ended with error: %s", message)
            yield stream_error(status, message).encode()
        finally:
            await events.aclose()

    return StreamingResponse(body(), media_type=SSE, headers={"Cache-Control": "no-cache"})


async def run_to_end(engine: Engine, inference: Inference) -> tuple[str, str, list[dict[str, Any]], Final]:
    """A non-streamed answer: content, thinking, tool calls and the final metrics."""
    content: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    final = Final(done_reason="stop")
    async for item in engine.generate(inference):
        if isinstance(item, Piece):
            content.append(item.content)
            thinking.append(item.thinking)
            calls.extend(item.tool_calls or ())
        else:
            final = item
    return "".join(content), "".join(thinking), calls, final


def prompt_tokens(final: Final) -> int:
    """The whole prompt's tokens for usage, cached prefix included once the engine reports it separately
    (``prompt_cached_count``); the engine's ``prompt_n`` alone counts only the tokens it had to evaluate."""
    return final.prompt_eval_count + int(getattr(final, "prompt_cached_count", 0) or 0)


def call_id() -> str:
    """Ollama's tool-call id shape, for calls the engine's parser left without one."""
    return "call_" + "".join(random.choices(string.ascii_lowercase + string.digits, k=8))


def decode_base64(data: str, message: str) -> str:
    """Check that ``data`` is base64 (Ollama decodes images on the way in); returns it unchanged."""
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, message) from None
    return data


def choose_tools(tools: list[dict[str, Any]] | None, mode: str, names: list[str] | None = None, *,
                 only_named: bool = False, parallel: bool = True) -> tuple[list[dict[str, Any]] | None, dict[str, Any]]:
    """Apply a tool_choice already read into ``mode`` (``none``, ``auto`` or ``required``) and the tool ``names`` it
    allows: the tools to offer the model and the ``Inference`` fields that enforce the choice (Ollama ignores
    tool_choice). ``none`` drops the tools; ``required`` forces one call, to one of ``names`` when given, by
    constrained decoding; ``only_named`` (OpenAI's ``allowed_tools``) also hides the other tools from the model.
    A forced call without tools, or a name that is not among the tools, is 400."""
    if mode == "none":
        return None, {}
    if not tools:
        if mode == "required":
            raise APIError(400, "tool_choice requires a tool to call, but no tools were given")
        return None, {}
    offered = {tool_name(t) for t in tools}
    for name in names or ():
        if name not in offered:
            raise APIError(400, f'tool_choice names a tool that is not among the tools: "{name}"')
    if names is not None and only_named:
        tools = [t for t in tools if tool_name(t) in names]
    fields: dict[str, Any] = {} if parallel else {"parallel_tool_calls": False}
    if mode == "required":
        fields.update(tool_choice="required", tool_choice_names=names)
    return tools, fields


def openai_tool_choice(choice: str | dict[str, Any] | None) -> tuple[str, list[str] | None, bool]:
    """OpenAI's ``tool_choice`` (the chat completions and Responses shapes alike) as ``(mode, names,
    only_named)`` for :func:`choose_tools`: ``"none"``, ``"auto"``, ``"required"``, a function (``{"type":
    "function", "function": {"name"}}`` or ``{"type": "function", "name"}``), or ``allowed_tools``."""
    if choice is None:
        return "auto", None, False
    if isinstance(choice, str):
        if choice in ("none", "auto", "required"):
            return choice, None, False
        raise APIError(400, f'invalid tool_choice: "{choice}" (must be "none", "auto", "required" or a function)')
    if not isinstance(choice, dict):
        raise APIError(400, "invalid tool_choice: expected a string or an object")
    kind = choice.get("type")
    if kind == "function":
        name = tool_name(choice)
        if name is None:
            raise APIError(400, "tool_choice: the function's name is required")
        return "required", [name], False
    if kind == "allowed_tools":
        spec = choice.get("allowed_tools")
        spec = spec if isinstance(spec, dict) else choice  # chat completions nest it; the Responses API does not
        mode = spec.get("mode", "auto")
        if mode not in ("auto", "required"):
            raise APIError(400, f'invalid tool_choice.mode: "{mode}" (must be "auto" or "required")')
        listed = spec.get("tools") or []
        if not isinstance(listed, list):
            raise APIError(400, "tool_choice.tools: a list of function tools is required")
        names: list[str] = []
        for tool in listed:
            name = tool_name(tool) if isinstance(tool, dict) and tool.get("type", "function") == "function" else None
            if name is None:
                raise APIError(400, "tool_choice.tools: only function tools with a name are supported")
            names.append(name)
        return mode, names, True
    raise APIError(400, f"unsupported tool_choice type: {kind!r}")


# -- OpenAI ---------------------------------------------------------------------------------------------------------


def openai_error(status: int, message: str) -> dict[str, Any]:
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


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
        opts["num_predict"] = limit
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


_EFFORTS: dict[str, bool | str] = {"none": False, "minimal": "low", "low": "low", "medium": "medium",
                                    "high": "high", "max": "max", "xhigh": "max", "ultra": "max"}


def _think(body: o.ChatCompletionRequest) -> bool | str | None:
    effort = body.reasoning.effort if body.reasoning is not None else body.reasoning_effort
    if not effort:
        return None
    if effort not in _EFFORTS:
        raise APIError(400, f"invalid reasoning value: '{effort}' (must be \"none\", \"minimal\", \"low\", "
                            f"\"medium\", \"high\", \"xhigh\" or \"max\")")
    return _EFFORTS[effort]


def _arguments(text: str) -> dict[str, Any]:
    if not text.strip():
        return {}  # some clients send "" for a call without arguments
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise APIError(400, "invalid tool call arguments") from None
    if not isinstance(value, dict):
        raise APIError(400, "invalid tool call arguments")
    return value


def _image(part: o.ContentPart) -> str:
    url = part.image_url.url if isinstance(part.image_url, o.ImageURL) else part.image_url
    if not isinstance(url, str):
        raise APIError(400, "invalid message format")
    if url.startswith(("http://", "https://")):
        raise APIError(400, "image URLs are not currently supported, please use base64 encoded data instead")
    for prefix in ("data:;base64,", "data:image/jpeg;base64,", "data:image/jpg;base64,", "data:image/png;base64,",
                   "data:image/webp;base64,"):
        if url.startswith(prefix):
            return decode_base64(url[len(prefix):], "invalid image input")
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
            texts: list[str] = []
            images: list[str] = []
            for part in content:
                if part.type == "text":
                    if part.text is None:
                        raise APIError(400, "invalid message format")
                    texts.append(part.text)
                elif part.type == "image_url":
                    images.append(_image(part))
                elif part.type == "input_audio":
                    raise APIError(400, "audio input is not supported")
                else:
                    raise APIError(400, "invalid message format")
            native["content"] = "\n\n".join(texts)
            if images:
                native["images"] = images
        thinking = msg.reasoning or msg.reasoning_content
        if thinking:
            native["thinking"] = thinking
        if msg.tool_calls:
            native["tool_calls"] = [
                {**({"id": tc.id} if tc.id else {}), "function": {"name": tc.function.name,
                                                                   "arguments": _arguments(tc.function.arguments)}}
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
    """Function tools in the native shape, and the ``Inference`` fields that enforce ``tool_choice`` and
    ``parallel_tool_calls`` (see :func:`choose_tools`; Ollama ignores both)."""
    mode, names, only_named = openai_tool_choice(body.tool_choice)
    out = []
    for tool in body.tools or ():
        if tool.type != "function":
            raise APIError(400, f"unsupported tool type: {tool.type!r}")
        out.append({"type": "function", "function": tool.function.model_dump(exclude_none=True)})
    return choose_tools(out, mode, names, only_named=only_named, parallel=body.parallel_tool_calls is not False)


def openai_tool_calls(calls: list[dict[str, Any]], start: int = 0) -> list[dict[str, Any]]:
    """Native tool calls (arguments as an object) to OpenAI's (arguments as a JSON string, an id, an index)."""
    out = []
    for i, call in enumerate(calls, start):
        fn = call.get("function") or {}
        index = fn.get("index")
        out.append({
            "id": call.get("id") or call_id(),
            "index": index if isinstance(index, int) else i,
            "type": "function",
            "function": {"name": fn.get("name", ""), "arguments": dumps(fn.get("arguments") or {})},
        })
    return out


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
    inference = Inference(model=model, messages=messages, options=opts, format=fmt, think=think, tools=tools,
                          tool_call_deltas=bool(body.stream), **choice)
    engine = engine_of(request)
    ident = _new_id("chatcmpl")

    if not body.stream:
        content, thinking, calls, final = await run_to_end(engine, inference)
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
    return await sse_response(_chat_events(engine, inference, ident, body.model, include_usage), openai_error,
                              _stream_error)


async def _chat_events(engine: Engine, inference: Inference, ident: str, model: str,
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
    async for item in engine.generate(inference):
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
        opts["num_predict"] = body.max_tokens
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
    inference = Inference(model=model, prompt=prompt, suffix=body.suffix, options=opts)
    engine = engine_of(request)
    ident = _new_id("cmpl")

    if not body.stream:
        text, _, _, final = await run_to_end(engine, inference)
        return JSONResponse({
            "id": ident, "object": "text_completion", "created": int(time.time()), "model": body.model,
            "system_fingerprint": "fp_ollama",
            "choices": [{"text": text, "index": 0, "finish_reason": final.done_reason}],
            "usage": _usage(final),
        })

    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return await sse_response(_completion_events(engine, inference, ident, body.model, include_usage),
                              openai_error, _stream_error)


async def _completion_events(engine: Engine, inference: Inference, ident: str, model: str,
                             include_usage: bool) -> AsyncGenerator[str, None]:
    created = int(time.time())
    usage_null = ',"usage":null' if include_usage else ""
    head = f'data: {{"id":"{ident}","object":"text_completion","created":{created},"choices":[{{"text":'
    tail = f',"model":{dumps(model)},"system_fingerprint":"fp_ollama"{usage_null}}}\n\n'
    async for item in engine.generate(inference):
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
    result = await engine_of(request).embed(model, inputs, opts={}, keep_alive=None)
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
