"""One inference request, from a resolved model and messages to a stream of output pieces.

This is the part every API family shares: it merges options, renders the prompt (Corral's Go-template path) or hands
the messages to the engine's own Jinja template (native path), fits the history into the context, leases a runner
from the scheduler and turns the engine's stream into ``Piece`` and ``Final`` objects. The API modules only shape them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from corral import config, metrics
from corral.errors import InferenceError, RequestError
from corral.inference import memory, options, speculative
from corral.inference.runner import kvcache
from corral.inference.runner.client import EngineClient, EngineError, EngineUnreachable
from corral.inference.runner.process import LaunchSpec
from corral.inference.scheduler import Loaded, Scheduler
from corral.inference.structured import engine_schema
from corral.parsers.forced import ForcedCallReader, call_schema, tool_name
from corral.parsers.shaping import OutputShaper, tool_call_id
from corral.parsers.tools import jinja_tool_call_prefix, tool_call_prefix
from corral.store.model import Model, parse_template
from corral.templates import prompt as prompts
from corral.templates.gotemplate import Template, TemplateError


@dataclass(slots=True)
class Piece:
    content: str = ""
    thinking: str = ""
    tool_calls: list[dict[str, Any]] | None = None  # complete calls, Ollama-shaped: {"id"?, "function": {...}}
    # A call still being generated (only when the request sets ``tool_call_deltas``): first {"index", "id",
    # "name"}, then {"index", "arguments": <the next piece of its JSON text>}; the whole call follows in tool_calls.
    tool_call_delta: dict[str, Any] | None = None


@dataclass(slots=True)
class Final:
    done_reason: str
    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0
    load_duration: int = 0
    total_duration: int = 0
    context: list[int] | None = None
    prompt_cached_count: int = 0  # prompt tokens served from the prefix cache (not in prompt_eval_count)
    stop_sequence: str | None = None  # the stop string that ended generation, if one did


@dataclass(slots=True)
class Embeddings:
    vectors: list[list[float]]
    prompt_eval_count: int
    load_duration: int
    total_duration: int


@dataclass
class Inference:
    """Everything one request asks of the engine, already validated by the API layer."""

    model: Model
    messages: list[dict[str, Any]] | None = None  # chat
    prompt: str | None = None  # generate
    system: str | None = None
    suffix: str = ""
    template: str | None = None
    raw: bool = False
    images: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    keep_alive: float | None = None
    format: Any = None
    think: bool | str | None = None
    tools: list[dict[str, Any]] | None = None
    context: list[int] | None = None
    want_context: bool = False
    # tool_choice (the /v1 APIs; Ollama's own API has none): "auto" lets the model decide; "required" forces one
    # call to one of ``tools`` (to one of ``tool_choice_names`` when given) by constrained decoding.
    tool_choice: str = "auto"
    tool_choice_names: list[str] | None = None
    parallel_tool_calls: bool = True  # False: calls after the first are dropped
    tool_call_deltas: bool = False  # stream calls' arguments as they are generated (Piece.tool_call_delta)


def _ns(ms: float | int | None) -> int:
    return int((ms or 0) * 1_000_000)


class Engine:
    """The service the API routes call: model store + scheduler + runners."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    # -- runners ---------------------------------------------------------------------------------------------

    def launch_for(self, model: Model, opts: dict[str, Any], *,
                   for_embedding: bool = False) -> tuple[tuple[str, ...], LaunchSpec]:
        """The runner a request needs. A chat model asked for embeddings gets a runner of its own with
        last-token pooling, so its generation runner keeps the engine's fast path."""
        info = model.info
        runner_opts = options.RunnerOptions.from_options(opts, model_ctx=info.context_length or None)
        embedding = info.is_embedding or for_embedding
        if embedding:  # an input must fit one batch: Ollama's min(2048, num_ctx)
            runner_opts = options.RunnerOptions(
                num_ctx=runner_opts.num_ctx, num_batch=max(runner_opts.num_batch, min(2048, runner_opts.num_ctx)),
                num_thread=runner_opts.num_thread, use_mmap=runner_opts.use_mmap)
        parallel = memory.choose_parallel(info, model.model_path.stat().st_size, runner_opts.num_ctx,
                                          config.num_parallel())
        drafting = speculative.settings(opts, model.draft_info, embedding=embedding or info.is_reranker)
        spec = LaunchSpec(
            model=str(model.model_path),
            num_ctx=runner_opts.num_ctx,
            parallel=parallel,
            num_batch=runner_opts.num_batch,
            num_thread=runner_opts.num_thread,
            num_gpu=int(opts.get("num_gpu", -1)),
            use_mmap=runner_opts.use_mmap,
            embedding=embedding,
            reranking=info.is_reranker,
            pooling="last" if for_embedding and not info.is_embedding else None,
            adapters=[str(p) for p in model.adapters],
            slot_save_path=None if embedding else self._kv_dir(model, runner_opts.num_ctx),
            speculative=drafting.types,
            draft=drafting.draft,
            draft_max=drafting.draft_max,
        )
        key = self._runner_key(model)
        if spec.pooling:
            key = (*key, "embed")
        return key, spec

    @staticmethod
    def _runner_key(model: Model) -> tuple[str, ...]:
        """Which loaded runner a model shares: same weights, adapters and draft model."""
        key = (model.model_digest, *sorted(str(p) for p in model.adapters))
        return (*key, "draft:" + model.draft_digest) if model.draft is not None else key

    @staticmethod
    def _kv_dir(model: Model, num_ctx: int) -> str | None:
        if kvcache.max_bytes() <= 0 or model.info.is_embedding:
            return None
        directory = kvcache.directory_for(model.model_digest, [str(p) for p in model.adapters], num_ctx)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        return str(directory) + os.sep  # the engine joins this prefix and the file name

    @staticmethod
    def _ps_info(model: Model, spec: LaunchSpec) -> dict[str, Any]:
        weights = model.model_path.stat().st_size + sum(p.stat().st_size for p in model.adapters)
        if spec.draft and model.draft is not None:
            weights += model.draft.stat().st_size
        return {"model": model, "bytes": memory.model_bytes(model.info, weights, spec.num_ctx, spec.parallel)}

    # -- load / unload ----------------------------------------------------------------------------------------

    async def load(self, model: Model, opts: dict[str, Any], keep_alive: float | None) -> float:
        """Load (or keep warm) a model without generating; returns the load time in seconds."""
        key, spec = self.launch_for(model, opts)
        async with self.scheduler.lease(key, spec, name=model.display_name, info=self._ps_info(model, spec),
                                        keep_alive=keep_alive) as (_, load_s):
            return load_s

    async def unload(self, model: Model) -> bool:
        key = self._runner_key(model)
        return await self.scheduler.expire_now(key)

    # -- generation ---------------------------------------------------------------------------------------------

    async def generate(self, req: Inference) -> AsyncIterator[Piece | Final]:
        """Yield output pieces, then one Final; raises RequestError/InferenceError/RunnerError before or during."""
        started = time.perf_counter()
        model = req.model
        merged = options.merge(model.params, req.options)
        key, spec = self.launch_for(model, merged)
        sampling = options.engine_sampling(merged, spec.num_ctx)
        self._apply_format(sampling, req.format)
        tmpl = model.go_template() if req.template is None else prompts_template(req.template)
        forced = _forcing(req)
        if forced:
            # One call by construction: the schema replaces any response format, and thinking is skipped, since
            # the call must follow the prompt directly.
            sampling["json_schema"] = call_schema(req.tools or [], req.tool_choice_names)
            sampling.pop("stop", None)  # a stop string must not cut the call's JSON short
            req.think = False
        if req.think is None and "thinking" in model.capabilities():
            req.think = True  # Ollama thinks by default when the model can

        async with self.scheduler.lease(key, spec, name=model.display_name, info=self._ps_info(model, spec),
                                        keep_alive=req.keep_alive) as (entry, load_s):
            client = entry.runner.client
            assert client is not None
            try:
                if tmpl is None and req.messages is not None and not req.raw and not forced:
                    stream = self._native_chat(client, req, sampling, merged)
                elif tmpl is None and forced:
                    text = await self._native_prompt(client, req)
                    text += jinja_tool_call_prefix(model.info.chat_template or "")
                    stream = self._completion(client, req, text, sampling, None)
                else:
                    try:
                        text = await self._render(client, req, tmpl, spec.num_ctx)
                    except TemplateError as exc:
                        raise InferenceError(f"template error: {exc}") from exc
                    if forced and tmpl is not None:
                        text += tool_call_prefix(tmpl)
                    stream = self._completion(client, req, text, sampling, None if req.raw else tmpl)
                first = True
                async for item in stream:
                    if isinstance(item, Final):
                        item.load_duration = int(load_s * 1e9)
                        item.total_duration = int((time.perf_counter() - started) * 1e9)
                        metrics.observe_generation(model.display_name, item.prompt_eval_count,
                                                   item.prompt_cached_count, item.eval_count)
                    elif first:
                        first = False
                        metrics.observe_first_token(model.display_name, time.perf_counter() - started)
                    yield item
            except EngineUnreachable as exc:
                raise InferenceError(self._death_message(entry, exc)) from exc
            except EngineError as exc:
                if not entry.runner.alive():
                    raise InferenceError(self._death_message(entry, exc)) from exc
                if exc.status == 400:
                    raise RequestError(str(exc)) from exc
                raise InferenceError(str(exc)) from exc

    @staticmethod
    def _death_message(entry: Loaded, exc: Exception) -> str:
        if not entry.runner.alive():
            return entry.runner.exit_message()
        return f"llama runner connection failed: {exc}"

    @staticmethod
    def _apply_format(sampling: dict[str, Any], fmt: Any) -> None:
        schema = engine_schema(fmt)
        if schema is not None:
            sampling["json_schema"] = schema

    # -- tokens ---------------------------------------------------------------------------------------------------

    async def tokenize(self, model: Model, text: str, opts: dict[str, Any], keep_alive: float | None) -> list[int]:
        """The model's own token ids for ``text`` (no BOS added), from the engine's tokenizer."""
        async with self._runner(model, opts, keep_alive) as client:
            return await client.tokenize(text, add_special=False)

    async def detokenize(self, model: Model, tokens: list[int], opts: dict[str, Any],
                         keep_alive: float | None) -> str:
        async with self._runner(model, opts, keep_alive) as client:
            return await client.detokenize(tokens)

    @contextlib.asynccontextmanager
    async def _runner(self, model: Model, opts: dict[str, Any], keep_alive: float | None,
                      ) -> AsyncIterator[EngineClient]:
        merged = options.merge(model.params, opts)
        key, spec = self.launch_for(model, merged)
        async with self.scheduler.lease(key, spec, name=model.display_name, info=self._ps_info(model, spec),
                                        keep_alive=keep_alive) as (entry, _):
            assert entry.runner.client is not None
            try:
                yield entry.runner.client
            except EngineUnreachable as exc:
                raise InferenceError(self._death_message(entry, exc)) from exc
            except EngineError as exc:
                raise (RequestError if exc.status == 400 else InferenceError)(str(exc)) from exc

    # -- embeddings ---------------------------------------------------------------------------------------------

    async def embed(self, model: Model, inputs: list[str], *, opts: dict[str, Any], keep_alive: float | None,
                    truncate: bool = True) -> Embeddings:
        """Raw (unnormalized) vectors for every input, evaluated in one batch by the engine."""
        if model.info.is_reranker:  # its pooled output is one relevance score per input, not a vector
            raise RequestError(f'"{model.display_name}" does not support embeddings')
        started = time.perf_counter()
        merged = options.merge(model.params, opts)
        key, spec = self.launch_for(model, merged, for_embedding=True)
        async with self.scheduler.lease(key, spec, name=model.display_name, info=self._ps_info(model, spec),
                                        keep_alive=keep_alive) as (entry, load_s):
            client = entry.runner.client
            assert client is not None
            try:
                content = await self._fit_inputs(client, inputs, min(spec.num_ctx, spec.num_batch), truncate)
                data = await client.post("/v1/embeddings", {"input": content, "embd_normalize": -1})
            except EngineUnreachable as exc:
                raise InferenceError(self._death_message(entry, exc)) from exc
            except EngineError as exc:
                if exc.status == 400:
                    raise RequestError(str(exc)) from exc
                raise InferenceError(str(exc)) from exc
        rows = sorted(data.get("data", []), key=lambda d: int(d.get("index", 0)))
        vectors = [[float(x) for x in row["embedding"]] for row in rows]
        count = int((data.get("usage") or {}).get("prompt_tokens", 0))
        metrics.observe_prompt_tokens(model.display_name, count)
        return Embeddings(vectors=vectors, prompt_eval_count=count, load_duration=int(load_s * 1e9),
                          total_duration=int((time.perf_counter() - started) * 1e9))

    @staticmethod
    async def _fit_inputs(client: EngineClient, inputs: list[str], limit: int, truncate: bool) -> list[Any]:
        """Inputs longer than the context are cut to it (or refused when ``truncate`` is false).

        Only inputs with more UTF-8 bytes than ``limit`` can have more tokens, so the rest skip tokenizing."""
        out: list[Any] = []
        for text in inputs:
            if len(text.encode()) + 2 <= limit:
                out.append(text)
                continue
            tokens = await client.tokenize(text, add_special=False)
            room = limit - 4  # the engine adds BOS/CLS and EOS/SEP; the context must not be filled to the brim
            if len(tokens) <= room:
                out.append(text)
            elif not truncate:
                raise RequestError("the input length exceeds the context length")
            else:
                out.append(await client.detokenize(tokens[:room]))
        return out

    # -- the rendered path: Corral renders the Go template, the engine completes raw text --------------------------

    async def _render(self, client: EngineClient, req: Inference, tmpl: Template | None, num_ctx: int) -> str:
        model = req.model
        if req.raw:
            return req.prompt or ""
        if tmpl is None:
            tmpl = prompts_template(prompts.DEFAULT_TEMPLATE)
        if req.messages is None:
            system = req.system if req.system is not None else model.system
            # A legacy ``context`` carries the earlier turns, so the model's MESSAGE layer is not repeated.
            history = model.messages if not req.context else []
            if req.template is not None and not req.suffix:
                msgs = [*([{"role": "system", "content": system}] if system else []), *history,
                        {"role": "user", "content": req.prompt or ""}]
                text = prompts.execute_values(tmpl, messages=msgs, think=_think_bool(req.think),
                                              think_level=_think_level(req.think))
            else:
                text = prompts.render_generate(tmpl, prompt=req.prompt or "", system=system, suffix=req.suffix,
                                               messages=history, think=_think_bool(req.think),
                                               think_level=_think_level(req.think))
            if req.context:
                text = await client.detokenize(req.context) + text
            return text
        messages = self._with_model_messages(req)
        text = prompts.render_chat(tmpl, messages, tools=req.tools, think=_think_bool(req.think),
                                   think_level=_think_level(req.think))
        # Bytes bound tokens from above for byte-level tokenizers: most prompts skip tokenizing altogether.
        if len(text.encode()) + 2 <= num_ctx:
            return text
        return await self._truncate(client, tmpl, messages, req, num_ctx, text)

    async def _truncate(self, client: EngineClient, tmpl: Template, messages: list[dict[str, Any]], req: Inference,
                        num_ctx: int, full: str) -> str:
        """Drop the oldest non-system messages until the prompt fits num_ctx; the last message always stays."""
        if len(await client.tokenize(full, add_special=True)) <= num_ctx:
            return full
        system = [m for m in messages if m.get("role") == "system"]
        rest = [m for m in messages if m.get("role") != "system"]
        text = full
        for start in range(1, len(rest)):
            window = system + rest[start:]
            text = prompts.render_chat(tmpl, window, tools=req.tools, think=_think_bool(req.think),
                                       think_level=_think_level(req.think))
            if len(await client.tokenize(text, add_special=True)) <= num_ctx:
                return text
        return text

    def _with_model_messages(self, req: Inference) -> list[dict[str, Any]]:
        model = req.model
        messages = [*model.messages, *(req.messages or [])]
        if model.system and (not messages or messages[0].get("role") != "system"):
            messages.insert(0, {"role": "system", "content": model.system})
        return messages

    async def _completion(self, client: EngineClient, req: Inference, prompt: str, sampling: dict[str, Any],
                          tmpl: Template | None) -> AsyncIterator[Piece | Final]:
        body = {"prompt": prompt, "cache_prompt": True, **sampling}
        final: dict[str, Any] | None = None
        pieces: list[str] = []
        # ``context`` = the prompt's tokens + the output's, as the engine sampled them: the prompt is tokenized while
        # the output streams, so the last line leaves with the last token instead of after one more round trip.
        context = req.want_context and not req.raw
        out_tokens: list[int] = []
        prompt_tokens: asyncio.Task[list[int]] | None = None
        if context:
            body["return_tokens"] = True
        forced = ForcedCallReader(_forced_names(req)) if _forcing(req) else None
        shaper = None if forced is not None else OutputShaper.for_request(
            tmpl, prompt, think=bool(_think_bool(req.think)), tools=req.tools)
        limit = _CallLimit(req)
        call_id = ""
        async for event in client.stream("/completion", body):
            text = event.get("content", "")
            if context:
                out_tokens += event.get("tokens") or ()
            if text:
                if req.want_context:
                    pieces.append(text)
                if forced is not None:
                    name, fragment = forced.add(text)
                    if name is not None:
                        call_id = tool_call_id()
                        if req.tool_call_deltas:
                            yield Piece(tool_call_delta={"index": 0, "id": call_id, "name": name})
                    if fragment and req.tool_call_deltas:
                        yield Piece(tool_call_delta={"index": 0, "arguments": fragment})
                elif shaper is None:
                    yield Piece(content=text)
                else:
                    piece = limit.apply(_piece(*shaper.add(text)))
                    if piece is not None:
                        yield piece
            if event.get("stop"):
                final = event
            if context and prompt_tokens is None:
                # Only now, after the first piece went out (a generator runs on when asked for the next item):
                # started earlier, its connect and write ran before the first chunk's and delayed every TTFT.
                prompt_tokens = asyncio.create_task(client.tokenize(prompt, add_special=True))
                prompt_tokens.add_done_callback(_quiet)  # if the client leaves first, nobody awaits it
        if forced is not None:
            call = forced.finish()
            if call is not None:
                yield Piece(tool_calls=[{"id": call_id or tool_call_id(), **call}])
            elif forced.text and not (req.tool_call_deltas and forced.name is not None):
                yield Piece(content=forced.text)  # cut short by the token limit before the call was under way
        if shaper is not None:
            piece = limit.apply(_piece(*shaper.finish()))
            if piece is not None:
                yield piece
        timings = (final or {}).get("timings", {})
        stop_type = (final or {}).get("stop_type", "eos")
        out = Final(
            done_reason="length" if stop_type == "limit" else "stop",
            prompt_eval_count=int(timings.get("prompt_n", 0)),
            prompt_eval_duration=_ns(timings.get("prompt_ms")),
            eval_count=int(timings.get("predicted_n", 0)),
            eval_duration=_ns(timings.get("predicted_ms")),
            prompt_cached_count=int(timings.get("cache_n", 0)),
            stop_sequence=(final or {}).get("stopping_word") or None if stop_type == "word" else None,
        )
        if context:
            out.context = await self._context(client, prompt, "".join(pieces), prompt_tokens, out_tokens, stop_type)
        yield out

    @staticmethod
    async def _context(client: EngineClient, prompt: str, output: str, prompt_tokens: asyncio.Task[list[int]] | None,
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

    # -- the native path: the engine applies the GGUF's Jinja template -----------------------------------------------

    async def _native_chat(self, client: EngineClient, req: Inference, sampling: dict[str, Any],
                           merged: dict[str, Any]) -> AsyncIterator[Piece | Final]:
        messages = [_oai_message(m) for m in self._with_model_messages(req)]
        body: dict[str, Any] = {"messages": messages, "cache_prompt": True, **sampling}
        body["max_tokens"] = body.pop("n_predict")
        if "json_schema" in body:
            schema = body.pop("json_schema")
            body["response_format"] = {"type": "json_schema", "json_schema": {"schema": schema}} if schema else {
                "type": "json_object"}
        if req.tools:
            body["tools"] = req.tools
            if not req.parallel_tool_calls:
                body["parallel_tool_calls"] = False
        think = _think_bool(req.think)
        if think is not None:
            body["chat_template_kwargs"] = {"enable_thinking": think}
        finish = "stop"
        timings: dict[str, Any] = {}
        calls: dict[int, dict[str, Any]] = {}  # the engine streams each tool call's arguments in fragments
        async for event in client.stream("/v1/chat/completions", body):
            for choice in event.get("choices", []):
                delta = choice.get("delta") or {}
                content = delta.get("content") or ""
                thinking = delta.get("reasoning_content") or ""
                if content or thinking:
                    yield Piece(content=content, thinking=thinking)
                for frag in delta.get("tool_calls") or ():
                    index = int(frag.get("index", len(calls)))
                    if calls and not req.parallel_tool_calls and index != min(calls):
                        continue
                    call = calls.setdefault(index, {"id": "", "name": "", "args": "", "started": False})
                    fn = frag.get("function") or {}
                    call["id"] = frag.get("id") or call["id"]
                    call["name"] += fn.get("name") or ""
                    call["args"] += fn.get("arguments") or ""
                    if req.tool_call_deltas and call["name"]:
                        if not call["started"]:
                            call["started"] = True
                            call["id"] = call["id"] or tool_call_id()
                            yield Piece(tool_call_delta={"index": index, "id": call["id"], "name": call["name"]})
                            if call["args"]:
                                yield Piece(tool_call_delta={"index": index, "arguments": call["args"]})
                        elif fn.get("arguments"):
                            yield Piece(tool_call_delta={"index": index, "arguments": fn["arguments"]})
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
            if event.get("timings"):
                timings = event["timings"]
        if calls:
            yield Piece(tool_calls=[_ollama_call(i, c) for i, c in sorted(calls.items())])
        yield Final(
            done_reason="length" if finish == "length" else "stop",
            prompt_eval_count=int(timings.get("prompt_n", 0)),
            prompt_eval_duration=_ns(timings.get("prompt_ms")),
            eval_count=int(timings.get("predicted_n", 0)),
            eval_duration=_ns(timings.get("predicted_ms")),
            prompt_cached_count=int(timings.get("cache_n", 0)),
        )

    async def _native_prompt(self, client: EngineClient, req: Inference) -> str:
        """The prompt the engine's Jinja template makes of the chat (a forced tool call completes it directly)."""
        body: dict[str, Any] = {"messages": [_oai_message(m) for m in self._with_model_messages(req)]}
        if req.tools:
            body["tools"] = req.tools
        think = _think_bool(req.think)
        if think is not None:
            body["chat_template_kwargs"] = {"enable_thinking": think}
        data = await client.post("/apply-template", body)
        return str(data.get("prompt", ""))


def _forcing(req: Inference) -> bool:
    """Whether the request's tool_choice forces a call (chat requests with tools only)."""
    return req.tool_choice == "required" and bool(req.tools) and req.messages is not None and not req.raw


def _forced_names(req: Inference) -> list[str]:
    names = [n for n in (tool_name(t) for t in req.tools or ()) if n is not None]
    if req.tool_choice_names is not None:
        names = [n for n in names if n in req.tool_choice_names]
    return names


class _CallLimit:
    """``parallel_tool_calls: false`` on the rendered path: the first call passes, later ones are dropped."""

    def __init__(self, req: Inference) -> None:
        self.one = not req.parallel_tool_calls
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


def prompts_template(source: str) -> Template:
    """A request's ``template`` override; a parse error is the client's (400)."""
    try:
        return parse_template(source)
    except TemplateError as exc:
        raise RequestError(f"template error: {exc}") from exc


def _think_bool(think: bool | str | None) -> bool | None:
    if think is None:
        return None
    if isinstance(think, str):
        return True
    return bool(think)


def _think_level(think: bool | str | None) -> str | None:
    if think is True:
        return "medium"
    if isinstance(think, str):
        return think
    return None


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


def _oai_message(m: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.get("role", "user"), "content": m.get("content", "")}
    if m.get("thinking"):
        out["reasoning_content"] = m["thinking"]
    if m.get("tool_calls"):
        calls = []
        for i, call in enumerate(m["tool_calls"]):
            fn = call.get("function", {})
            calls.append({"id": call.get("id") or f"call_{i}", "type": "function",
                          "function": {"name": fn.get("name", ""), "arguments": json.dumps(fn.get("arguments", {}))}})
        out["tool_calls"] = calls
    if m.get("tool_call_id"):
        out["tool_call_id"] = m["tool_call_id"]
    if m.get("tool_name") and m.get("role") == "tool":
        out["name"] = m["tool_name"]
    return out
