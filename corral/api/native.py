"""Ollama's native API: ``/api/*`` routes and ``/``."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from corral import __version__
from corral.api import schemas as s
from corral.api.shared import (
    CorralRoute,
    check_top_logprobs,
    dumps,
    fold,
    normalize,
    resolve_model,
    service_of,
    store_of,
)
from corral.api.streaming import collect_json, ndjson_stream, now_rfc3339
from corral.errors import APIError, InvalidModelName, ModelError, ModelNotFound
from corral.inference import options
from corral.inference.request import Final, InferenceRequest, Piece
from corral.inference.service import InferenceService
from corral.store.model import Model, load_model
from corral.store.names import parse_name
from corral.store.store import ManifestRecord, Store

router = APIRouter(route_class=CorralRoute)

# The Ollama API level Corral implements; clients gate features on it.
OLLAMA_COMPAT_VERSION = "0.33.0"
FAR_FUTURE = 10_950_000_000.0  # year 2316: "forever", as Ollama shows it


def _keep_alive(value: Any) -> float | None:
    try:
        return s.parse_keep_alive(value)
    except ValueError as exc:
        raise APIError(400, str(exc)) from None


def _rfc3339(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


# -- liveness and version ----------------------------------------------------------------------------------------


@router.get("/", response_class=PlainTextResponse)
@router.head("/", response_class=PlainTextResponse, include_in_schema=False)
async def root() -> str:
    return "Ollama is running"


@router.get("/api/version", response_model=s.VersionResponse)
@router.head("/api/version", response_model=s.VersionResponse, include_in_schema=False)
async def version() -> dict[str, str]:
    return {"version": OLLAMA_COMPAT_VERSION, "corral_version": __version__}


# -- the store ---------------------------------------------------------------------------------------------------


def details_for(model: Model) -> s.ModelDetails:
    """From the config blob, as Ollama does, falling back to the GGUF header for fields it lacks."""
    cfg = model.config
    info = model.info
    family = cfg.get("model_family") or info.architecture or ""
    families = cfg.get("model_families") or ([family] if family else None)
    return s.ModelDetails(
        parent_model="",
        format=cfg.get("model_format") or "gguf",
        family=family,
        families=families,
        parameter_size=cfg.get("model_type") or info.parameter_size or "",
        quantization_level=cfg.get("file_type") or info.file_type or "",
    )


def _list_entry(store: Store, record: ManifestRecord) -> s.ListModel | None:
    try:
        model = load_model(store, record.name)
        details = details_for(model)
    except Exception:  # a broken model must not hide the others
        details = s.ModelDetails()
    name = record.name.display_shortest()
    return s.ListModel(name=name, model=name, modified_at=_rfc3339(record.modified_at), size=record.size,
                       digest=record.digest, details=details)


_tags_cache: dict[str, tuple[tuple[tuple[str, int, int], ...], bytes]] = {}


@router.get("/api/tags", response_model=s.ListResponse, response_model_exclude_none=True)
@router.head("/api/tags", response_model=s.ListResponse, response_model_exclude_none=True, include_in_schema=False)
async def tags(request: Request) -> Response:
    """Served from a cache keyed by the manifests' paths, mtimes and sizes, as Ollama keeps one: a listing costs a
    directory walk, not a read of every manifest and GGUF header, so it stays fast under many clients."""
    return Response(tags_body(store_of(request)), media_type="application/json")


def tags_body(store: Store) -> bytes:
    """The ``/api/tags`` JSON, rebuilt only when a manifest changed (also served by ``corral.http.hotpath``)."""
    key = store.listing_key()
    cached = _tags_cache.get(str(store.root))
    if cached is None or cached[0] != key:
        entries = [_list_entry(store, r) for r in store.list_models()]
        body = s.ListResponse(models=[e for e in entries if e is not None]).model_dump_json(exclude_none=True)
        cached = (key, body.encode())
        _tags_cache[str(store.root)] = cached
    return cached[1]


def _format_param(key: str, value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [f"{key:<30} {json.dumps(v) if isinstance(v, str) else _go_value(v)}" for v in values]


def _go_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _modelfile(model: Model, store: Store) -> str:
    """Ollama's ``Model.String``: Modelfile commands that rebuild this model through ``create``, written with the
    shared Modelfile writer so they read back as the same values (and so the same layers)."""
    from corral.modelfile import Command, format_modelfile, format_value

    commands = [Command("model", str(model.model_path))]
    commands += [Command("adapter", str(path)) for path in model.adapters]
    if model.draft is not None:
        commands.append(Command("draft", str(model.draft)))
    commands += [Command("model", str(path)) for path in model.projectors]
    if model.template is not None:
        commands.append(Command("template", model.template))
    if model.system:
        commands.append(Command("system", model.system))
    for key in ("renderer", "parser", "requires"):
        if model.config.get(key):
            commands.append(Command(key, str(model.config[key])))
    for key, value in model.params.items():
        for v in value if isinstance(value, list) else [value]:
            commands.append(Command(key, format_value(key, v)))
    commands += [Command("license", text) for text in model.licenses]
    commands += [Command("message", f"{m.get('role', '')}: {m.get('content', '')}") for m in model.messages]
    header = ('# Modelfile generated by "ollama show"\n# To build a new Modelfile based on this, replace FROM with:\n'
              f"# FROM {model.display_name}\n\n")
    return header + format_modelfile(commands)


@router.post("/api/show", response_model=s.ShowResponse, response_model_exclude_none=True)
async def show(request: Request, body: s.ShowRequest) -> Response:
    """Cached by name, ``verbose`` and the store's listing key (any manifest change invalidates it; blobs never
    change): UIs call show for every model in a list, over and over, and a miss re-reads the GGUF header."""
    store = store_of(request)
    name = body.model or body.name
    key = (str(store.root), name, body.verbose, store.listing_key())
    cached = _show_cache.get(key)
    if cached is None:
        shown = await run_in_threadpool(_show, store, name, body.verbose)
        cached = shown.model_dump_json(exclude_none=True).encode()
        if len(_show_cache) >= 256:
            _show_cache.clear()
        _show_cache[key] = cached
    return Response(cached, media_type="application/json")


_show_cache: dict[tuple[str, str, bool, Any], bytes] = {}


def _show(store: Store, name: str, verbose: bool) -> s.ShowResponse:
    model = resolve_model(store, name)
    info = model.info
    params = [line for k, v in model.params.items() for line in _format_param(k, v)]
    return s.ShowResponse(
        license="\n".join(model.licenses) or None,
        modelfile=_modelfile(model, store),
        parameters="\n".join(params) or None,
        template=model.template if model.template is not None else (info.chat_template or None),
        system=model.system or None,
        details=details_for(model),
        messages=[{"role": m.get("role"), "content": m.get("content", "")} for m in model.messages] or None,
        model_info=info.model_info(verbose=verbose),
        projector_info=_projector_info(model, verbose),
        tensors=info.tensors() if verbose else None,
        capabilities=model.capabilities(),
        modified_at=_rfc3339(model.record.modified_at),
    )


def _projector_info(model: Model, verbose: bool) -> dict[str, Any] | None:
    """Ollama's ``projector_info``: the first projector's metadata, shaped as ``model_info`` is (Ollama leaves the
    projector's ``general.name`` in)."""
    try:
        projector = model.projector_info
    except ModelError:  # an unreadable projector blob: the model still shows; loading it will say what is wrong
        return None
    if projector is None:
        return None
    out = projector.model_info(verbose=verbose)
    name = projector.get("general.name")
    if isinstance(name, str):
        out["general.name"] = name
    return dict(sorted(out.items()))


@router.delete("/api/delete", response_class=Response)
def delete(request: Request, body: s.DeleteRequest) -> Response:
    store = store_of(request)
    name = body.model or body.name
    if not name:
        raise APIError(400, "model is required")
    try:
        store.delete(name)
    except ModelNotFound:
        raise APIError(404, f"model '{name}' not found") from None
    except InvalidModelName:
        raise APIError(400, "invalid model name") from None
    return Response(status_code=200)


@router.post("/api/copy", response_class=Response)
def copy(request: Request, body: s.CopyRequest) -> Response:
    store = store_of(request)
    try:
        parse_name(body.source)
    except InvalidModelName:
        raise APIError(400, f"source {body.source!r} is invalid") from None
    try:
        parse_name(body.destination)
    except InvalidModelName:
        raise APIError(400, f"destination {body.destination!r} is invalid") from None
    try:
        store.copy(body.source, body.destination)
    except ModelNotFound:
        raise APIError(404, f'model "{body.source}" not found') from None
    return Response(status_code=200)


# -- loaded models -----------------------------------------------------------------------------------------------


@router.get("/api/ps", response_model=s.ProcessResponse, response_model_exclude_none=True)
async def ps(request: Request) -> s.ProcessResponse:
    out = []
    for running in await service_of(request).running():
        model = running.model
        expires = FAR_FUTURE if running.expires_at is None else running.expires_at
        out.append(s.ProcessModel(
            name=model.display_name, model=model.display_name, size=running.size, digest=model.record.digest,
            details=details_for(model), expires_at=_rfc3339(datetime.fromtimestamp(expires, UTC)),
            size_vram=running.size_vram, context_length=running.context_length, parallel=running.parallel,
            slots_busy=running.slots_busy, engine=running.engine,
            devices=[s.DeviceShare(name=n, size=b) for n, b in running.devices] or None, rpc=list(running.rpc) or None,
        ))
    return s.ProcessResponse(models=out)


# -- generation ---------------------------------------------------------------------------------------------------


def _check_think(model: Model, think: Any) -> None:
    if think not in (None, False) and "thinking" not in model.capabilities():
        raise APIError(400, f'"{model.display_name}" does not support thinking')


def _check_tokens(model: Model, tokens: list[int]) -> None:
    """Token ids the engine will detokenize must be in its vocabulary (an id beyond it is not the client's to send)."""
    vocab = model.info.array_length("tokenizer.ggml.tokens") or 0
    bad = [t for t in tokens if t < 0 or (vocab and t >= vocab)]
    if bad:
        raise APIError(400, f"invalid token id {bad[0]} (vocabulary size {vocab})")


def _check_images(model: Model, images: list[str] | None) -> None:
    if images and "vision" not in model.capabilities():
        raise APIError(400, f'"{model.display_name}" does not support images')


def _logprobs(piece: Piece) -> str:
    return f',"logprobs":{dumps(piece.logprobs)}' if piece.logprobs else ""


def _metrics(final: Final) -> dict[str, Any]:
    out: dict[str, Any] = {"done_reason": final.done_reason}
    for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count",
                "eval_duration"):
        value = getattr(final, key)
        if value:
            out[key] = value
        if key == "prompt_eval_count" and value:
            # The part of the prompt the prefix cache served (Ollama's field since 0.3x; included even when 0).
            out["prompt_eval_cached_count"] = final.prompt_cached_count
    return out


@router.post("/api/generate", response_model=s.GenerateResponse, response_model_exclude_none=True)
async def generate(request: Request, body: s.GenerateRequest) -> Response:
    check_top_logprobs(body.top_logprobs)
    store, service = store_of(request), service_of(request)
    model = resolve_model(store, body.model)
    keep_alive = _keep_alive(body.keep_alive)
    name = body.model  # echoed as the client spelled it, as Ollama does
    if body.context:
        _check_tokens(model, body.context)
    if body.raw and (body.template or body.system or body.context):
        raise APIError(400, "raw mode does not support template, system, or context")
    if "completion" not in model.capabilities():
        raise APIError(400, f'"{name}" does not support generate')
    if body.suffix and "insert" not in model.capabilities():
        raise APIError(400, f'"{name}" does not support insert')
    _check_think(model, body.think)
    _check_images(model, body.images)
    opts = options.validate(body.options)
    stream = body.stream is not False

    if not body.prompt and not body.suffix and not body.images:
        return await _load_or_unload(service, model, name, opts, keep_alive, chat=False)

    inference = InferenceRequest(
        model=model, prompt=body.prompt, system=body.system, suffix=body.suffix, template=body.template,
        raw=body.raw, images=body.images or [], options=opts, keep_alive=keep_alive, format=body.format,
        think=body.think, context=body.context, want_context=not body.raw, logprobs=body.logprobs,
        top_logprobs=body.top_logprobs, truncate=body.truncate is not False, shift=body.shift is not False,
    )
    head = f'{{"model":{json.dumps(name)},"created_at":"'

    async def lines() -> AsyncGenerator[str, None]:
        async for item in service.generate(inference):
            if isinstance(item, Piece):
                think = f',"thinking":{json.dumps(item.thinking)}' if item.thinking else ""
                yield (f'{head}{now_rfc3339()}","response":{json.dumps(item.content)}{think},"done":false'
                       f'{_logprobs(item)}}}\n')
            else:
                final: dict[str, Any] = {"model": name, "created_at": now_rfc3339(), "response": "", "done": True,
                                         **_metrics(item)}
                if item.context is not None:
                    final["context"] = item.context
                yield json.dumps(final, separators=(",", ":")) + "\n"

    if stream:
        return await ndjson_stream(lines())

    async def folded() -> AsyncIterator[dict[str, Any]]:
        answer = await fold(service, inference)
        out: dict[str, Any] = {"model": name, "created_at": now_rfc3339(), "response": answer.content}
        if answer.thinking:
            out["thinking"] = answer.thinking
        out["done"] = True
        out.update(_metrics(answer.final))
        if answer.final.context is not None:
            out["context"] = answer.final.context
        if answer.logprobs:
            out["logprobs"] = answer.logprobs
        yield out

    return await collect_json(folded())


@router.post("/api/chat", response_model=s.ChatResponse, response_model_exclude_none=True)
async def chat(request: Request, body: s.ChatRequest) -> Response:
    check_top_logprobs(body.top_logprobs)
    store, service = store_of(request), service_of(request)
    model = resolve_model(store, body.model)
    keep_alive = _keep_alive(body.keep_alive)
    name = body.model  # echoed as the client spelled it, as Ollama does
    caps = model.capabilities()
    if "completion" not in caps:
        raise APIError(400, f'"{name}" does not support chat')
    if body.tools and "tools" not in caps:
        raise APIError(400, f'"{name}" does not support tools')
    _check_think(model, body.think)
    for m in body.messages:
        _check_images(model, m.images)
    opts = options.validate(body.options)
    stream = body.stream is not False

    if not body.messages:
        return await _load_or_unload(service, model, name, opts, keep_alive, chat=True)

    inference = InferenceRequest(
        model=model,
        messages=[m.model_dump(exclude_none=True) for m in body.messages],
        options=opts, keep_alive=keep_alive, format=body.format, think=body.think,
        tools=[t.model_dump(exclude_none=True) for t in body.tools] if body.tools else None,
        logprobs=body.logprobs, top_logprobs=body.top_logprobs, truncate=body.truncate is not False,
        shift=body.shift is not False,
    )
    head = f'{{"model":{json.dumps(name)},"created_at":"'

    async def lines() -> AsyncGenerator[str, None]:
        async for item in service.generate(inference):
            if isinstance(item, Piece):
                think = f',"thinking":{json.dumps(item.thinking)}' if item.thinking else ""
                if item.tool_calls:
                    think += f',"tool_calls":{json.dumps(item.tool_calls)}'
                yield (f'{head}{now_rfc3339()}","message":{{"role":"assistant","content":{json.dumps(item.content)}'
                       f'{think}}},"done":false{_logprobs(item)}}}\n')
            else:
                final = {"model": name, "created_at": now_rfc3339(), "message": {"role": "assistant", "content": ""},
                         "done": True, **_metrics(item)}
                yield json.dumps(final, separators=(",", ":")) + "\n"

    if stream:
        return await ndjson_stream(lines())

    async def folded() -> AsyncIterator[dict[str, Any]]:
        answer = await fold(service, inference)
        message: dict[str, Any] = {"role": "assistant", "content": answer.content}
        if answer.thinking:
            message["thinking"] = answer.thinking
        if answer.tool_calls:
            message["tool_calls"] = answer.tool_calls
        out = {"model": name, "created_at": now_rfc3339(), "message": message, "done": True,
               **_metrics(answer.final)}
        if answer.logprobs:
            out["logprobs"] = answer.logprobs
        yield out

    return await collect_json(folded())


async def _load_or_unload(service: InferenceService, model: Model, name: str, opts: dict[str, Any],
                          keep_alive: float | None, *, chat: bool) -> Response:
    """An empty prompt loads the model (``done_reason: load``); with ``keep_alive: 0`` it unloads it."""
    if keep_alive is not None and keep_alive == 0:
        await service.unload(model)
        reason = "unload"
    else:
        await service.load(model, opts, keep_alive)
        reason = "load"
    out: dict[str, Any] = {"model": name, "created_at": now_rfc3339()}
    if chat:
        out["message"] = {"role": "assistant", "content": ""}
    else:
        out["response"] = ""
    out.update({"done": True, "done_reason": reason})
    return JSONResponse(out)


# -- embeddings -----------------------------------------------------------------------------------------------------


@router.post("/api/embed", response_model=s.EmbedResponse, response_model_exclude_none=True)
async def embed(request: Request, body: s.EmbedRequest) -> JSONResponse:
    store, service = store_of(request), service_of(request)
    model = resolve_model(store, body.model)
    keep_alive = _keep_alive(body.keep_alive)
    inputs = [body.input] if isinstance(body.input, str) else list(body.input or [])
    inputs = [text for text in inputs if text != ""] if len(inputs) == 1 else inputs
    opts = options.validate(body.options)
    if not inputs:
        await service.load(model, opts, keep_alive)
        return JSONResponse({"model": body.model, "embeddings": []})
    result = await service.embed(model, inputs, opts=opts, keep_alive=keep_alive, truncate=body.truncate is not False)
    out: dict[str, Any] = {"model": body.model,
                           "embeddings": [normalize(v, body.dimensions) for v in result.vectors]}
    for key in ("total_duration", "load_duration", "prompt_eval_count"):
        if getattr(result, key):
            out[key] = getattr(result, key)
    return JSONResponse(out)


@router.post("/api/embeddings", response_model=s.EmbeddingResponse)
async def embeddings(request: Request, body: s.EmbeddingRequest) -> JSONResponse:
    """Legacy: one prompt, the vector as the engine returns it (not normalized)."""
    store, service = store_of(request), service_of(request)
    model = resolve_model(store, body.model)
    keep_alive = _keep_alive(body.keep_alive)
    if not body.prompt:
        return JSONResponse({"embedding": []})
    result = await service.embed(model, [body.prompt], opts=options.validate(body.options), keep_alive=keep_alive)
    return JSONResponse({"embedding": result.vectors[0]})


# -- tokens (beyond Ollama) --------------------------------------------------------------------------------------


@router.post("/api/tokenize", response_model=s.TokenizeResponse)
async def tokenize(request: Request, body: s.TokenizeRequest) -> s.TokenizeResponse:
    """The model's token ids for ``content``, exactly as the engine tokenizes a prompt (no BOS added)."""
    model = resolve_model(store_of(request), body.model)
    tokens = await service_of(request).tokenize(model, body.content, options.validate(body.options),
                                             _keep_alive(body.keep_alive))
    return s.TokenizeResponse(tokens=tokens)


@router.post("/api/detokenize", response_model=s.DetokenizeResponse)
async def detokenize(request: Request, body: s.DetokenizeRequest) -> s.DetokenizeResponse:
    model = resolve_model(store_of(request), body.model)
    _check_tokens(model, body.tokens)
    content = await service_of(request).detokenize(model, body.tokens, options.validate(body.options),
                                                _keep_alive(body.keep_alive))
    return s.DetokenizeResponse(content=content)
