"""What the API families share: the app's store and service, model lookup, capability checks, error shapes, the
``/v1`` families' route class and SSE response, a stream folded into one answer, and the message and tool
translations more than one family needs."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import math
import random
import re
import string
from collections.abc import AsyncGenerator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute

from corral.errors import APIError, InvalidModelName, ModelNotFound, http_status, log_unhandled
from corral.inference.request import Final, InferenceRequest, Piece
from corral.inference.service import InferenceService
from corral.parsers.forced import tool_name
from corral.store.model import Model, load_model
from corral.store.store import Store

log = logging.getLogger("corral.api")

SSE = "text/event-stream"

# -- the app's state and the model a request names -------------------------------------------------------------------


def store_of(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


def service_of(request: Request) -> InferenceService:
    return request.app.state.service  # type: ignore[no-any-return]


def resolve_model(store: Store, name: str) -> Model:
    """The model a request names: 400 when empty or invalid, 404 (Ollama's message) when absent."""
    if not name:
        raise APIError(400, "model is required")
    try:
        return load_model(store, name)
    except ModelNotFound:
        raise APIError(404, f"model '{name}' not found") from None
    except InvalidModelName:
        raise APIError(400, "invalid model name") from None


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


# -- errors ------------------------------------------------------------------------------------------------------------


def error_response(status: int, message: str) -> JSONResponse:
    """Ollama's error shape."""
    return JSONResponse({"error": message}, status_code=status)


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


def ollama_error(status: int, message: str) -> dict[str, Any]:
    return {"error": message}


def strict_json(body: bytes) -> Any:
    """A request body parsed as Go's decoder would: ``NaN``, ``Infinity`` and numbers beyond a double are not JSON,
    and no string may hold a lone surrogate (``"\\ud800"``: not Unicode, and not encodable for the engine)."""
    try:
        value = json.loads(body, parse_constant=_not_json, parse_float=_finite_float)
    except RecursionError:
        raise APIError(400, "invalid JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"invalid JSON: {exc}") from None
    _check_text(value, "")
    return value


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _check_text(value: Any, where: str, depth: int = 0) -> None:
    """Every string (keys included) must be valid Unicode; ``where`` names the field for the error."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise APIError(400, f"{where or 'body'}: invalid Unicode (a lone surrogate)")
    elif isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if _SURROGATE.search(key):
                raise APIError(400, f"{where or 'body'}: invalid Unicode in a key (a lone surrogate)")
            _check_text(item, path, depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_text(item, f"{where}[{i}]", depth + 1)


_SURROGATE = re.compile("[\ud800-\udfff]")


class CorralRoute(APIRoute):
    """Every API route's edge: the body parsed strictly (:func:`strict_json`), the request cancelled when its
    client goes away, and every failure answered in the route family's error shape.

    Cancellation: once the body has been read, a watcher waits for the client's disconnect while the handler runs;
    if the client leaves first (a ``curl -m4`` on a long non-streamed generation), the handler is cancelled, which
    closes the engine connection and frees the slot at once. A streamed answer is watched the same way until its
    first piece, and by the response itself after that. Routes that read their body as a stream (blob uploads)
    are not watched.

    Failures never escape to the server: an unexpected one is logged in one line and answered as a 500, so the
    client's keep-alive connection stays usable (an exception that reached uvicorn closed it).
    """

    error_shape: ErrorShape = staticmethod(ollama_error)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        inner = super().get_route_handler()
        shape = self.error_shape
        json_body = self.body_field is not None

        async def handler(request: Request) -> Response:
            try:
                if not json_body:
                    return await inner(request)
                body = await request.body()
                if body:
                    request._json = strict_json(body)  # type: ignore[attr-defined]  # Starlette's cache
                return await _until_disconnected(request, inner(request))
            except RequestValidationError as exc:
                status, message = 400, validation_message(exc)
            except Exception as exc:
                status, message = http_status(exc)
                if message.startswith("internal error"):
                    log_unhandled(log, exc, request.url.path)
            return JSONResponse(shape(status, message), status_code=status)

        return handler


async def _until_disconnected(request: Request, work: Coroutine[Any, Any, Response]) -> Response:
    """Run ``work``; if the client disconnects first, cancel it (the engine connection closes with it)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    log.info("client disconnected from %s; request cancelled", request.url.path)
    return Response(status_code=499)


async def _disconnect(request: Request) -> None:
    """Returns when the client has gone (the body has been read, so the next message can only be a disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def family_route(shape: ErrorShape) -> type[APIRoute]:
    """The route class of an API family whose errors have their own envelope (OpenAI's, Anthropic's): the app-wide
    handlers answer in Ollama's ``{"error": "..."}``, where an SDK would not find its message."""

    class FamilyRoute(CorralRoute):
        error_shape = staticmethod(shape)

    return FamilyRoute


def openai_error(status: int, message: str) -> dict[str, Any]:
    """OpenAI's error envelope (``/v1`` routes but ``/v1/messages``)."""
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


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
        status, message = http_status(exc)
        return JSONResponse(shape(status, message), status_code=status)

    async def body() -> AsyncGenerator[bytes, None]:
        yield first.encode()
        try:
            async for event in events:
                yield event.encode()
        except Exception as exc:
            status, message = http_status(exc)
            log.warning("stream ended with error: %s", message)
            yield stream_error(status, message).encode()
        finally:
            await events.aclose()

    return StreamingResponse(body(), media_type=SSE, headers={"Cache-Control": "no-cache"})


# -- answers -----------------------------------------------------------------------------------------------------------


def dumps(value: Any) -> str:
    """Compact JSON, as Go's encoder writes it: every byte counts on the per-token path."""
    return json.dumps(value, separators=(",", ":"))


@dataclass(slots=True)
class Answer:
    """A whole answer, for the routes that do not stream."""

    content: str = ""
    thinking: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    final: Final = field(default_factory=lambda: Final(done_reason="stop"))


async def fold(service: InferenceService, req: InferenceRequest) -> Answer:
    """Run a request to its end and join its pieces."""
    content: list[str] = []
    thinking: list[str] = []
    answer = Answer()
    async for item in service.generate(req):
        if isinstance(item, Piece):
            content.append(item.content)
            thinking.append(item.thinking)
            answer.tool_calls.extend(item.tool_calls or ())
        else:
            answer.final = item
    answer.content, answer.thinking = "".join(content), "".join(thinking)
    return answer


def prompt_tokens(final: Final) -> int:
    """The whole prompt's tokens for usage, cached prefix included once the engine reports it separately
    (``prompt_cached_count``); the engine's ``prompt_n`` alone counts only the tokens it had to evaluate."""
    return final.prompt_eval_count + final.prompt_cached_count


def token_limit(value: int, field: str) -> int:
    """An OpenAI token limit as ``num_predict``: at least 1, as OpenAI requires (Ollama passes a negative one on,
    which would mean "until the context is full ten times over")."""
    if value < 1:
        raise APIError(400, f"{field}: must be at least 1")
    return value


def normalize(vector: list[float], dimensions: int | None = None) -> list[float]:
    """L2-normalize, after cutting to ``dimensions`` when that is shorter (Ollama's rule)."""
    if dimensions and 0 < dimensions < len(vector):
        vector = vector[:dimensions]
    norm = math.sqrt(sum(x * x for x in vector))
    if not math.isfinite(norm):
        raise APIError(400, "embedding contains NaN or Inf values")
    return [x / norm for x in vector] if norm > 0 else vector


# -- messages, tools and reasoning ------------------------------------------------------------------------------------


def decode_base64(data: str, message: str) -> str:
    """Check that ``data`` is base64 (Ollama decodes images on the way in); returns it unchanged."""
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, message) from None
    return data


def call_id() -> str:
    """Ollama's tool-call id shape, for calls the engine's parser left without one."""
    return "call_" + "".join(random.choices(string.ascii_lowercase + string.digits, k=8))


def parse_arguments(text: str) -> dict[str, Any]:
    """A tool call's arguments sent as JSON text (the OpenAI shapes) as the object native messages carry."""
    if not text.strip():
        return {}  # some clients send "" for a call without arguments
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise APIError(400, "invalid tool call arguments") from None
    if not isinstance(value, dict):
        raise APIError(400, "invalid tool call arguments")
    return value


def join_parts(pieces: list[str | None], sep: str) -> str:
    """A message's text parts and images (``None``) as native content. Images that all come before the text need
    nothing: Ollama's rule puts a message's images in front of its content. Once an image follows text, every image
    gets an ``[img]`` placeholder where it was, which the same rule fills in order."""
    texts = [p for p in pieces if p is not None]
    first_text = next((i for i, p in enumerate(pieces) if p is not None), len(pieces))
    if all(p is not None for p in pieces[first_text:]):
        return sep.join(texts)
    return sep.join("[img]" if p is None else p for p in pieces)


def tool_message(content: str, images: list[str], call: str | None, names: dict[str, str]) -> dict[str, Any]:
    """A tool's result as a native ``tool`` message, named after the call it answers when that call is known."""
    msg: dict[str, Any] = {"role": "tool", "content": content}
    if images:
        msg["images"] = images
    if call:
        msg["tool_call_id"] = call
        if call in names:
            msg["tool_name"] = names[call]
    return msg


_EFFORTS: dict[str, bool | str] = {"none": False, "minimal": "low", "low": "low", "medium": "medium",
                                    "high": "high", "max": "max", "xhigh": "max", "ultra": "max"}


def openai_think(effort: str | None) -> bool | str | None:
    """OpenAI's ``reasoning_effort``/``reasoning.effort`` as a ``think`` value, as Ollama maps them."""
    if not effort:
        return None
    if effort not in _EFFORTS:
        raise APIError(400, f"invalid reasoning value: '{effort}' (must be \"none\", \"minimal\", \"low\", "
                            f"\"medium\", \"high\", \"xhigh\" or \"max\")")
    return _EFFORTS[effort]


def choose_tools(tools: list[dict[str, Any]] | None, mode: str, names: list[str] | None = None, *,
                 only_named: bool = False, parallel: bool = True) -> tuple[list[dict[str, Any]] | None, dict[str, Any]]:
    """Apply a tool_choice already read into ``mode`` (``none``, ``auto`` or ``required``) and the tool ``names`` it
    allows: the tools to offer the model and the ``InferenceRequest`` fields that enforce the choice (Ollama
    ignores tool_choice). ``none`` drops the tools; ``required`` forces one call, to one of ``names`` when given, by
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
