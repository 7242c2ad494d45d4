"""The inference service: what every API family calls to run a model.

It orchestrates the steps of one request, each in a module of its own: launch planning (:mod:`.launch`: which runner,
started how), a lease from the scheduler (:mod:`.scheduler`: load, queue, evict), request building
(:mod:`.prompting`: the rendered or native prompt, format, forced tool calls, thinking) and stream shaping
(:mod:`.streams`: the engine's events as pieces). It never changes the request it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from corral import config, metrics
from corral.errors import InferenceError, RequestError, RunnerReplyError, RunnerUnreachable
from corral.inference import (
    counting,
    embedding,
    fitting,
    images,
    launch,
    options,
    prompting,
    rerank,
    streams,
    thinkfirst,
)
from corral.inference.request import Embeddings, Final, InferenceRequest, Piece, RunningModel
from corral.inference.runner.base import Runner
from corral.inference.runner.client import RunnerClient
from corral.inference.scheduler import FOREVER, Loaded, Scheduler
from corral.store.model import Model


@dataclass(frozen=True, slots=True)
class Lease:
    """A runner held for one request: its client, how it was launched, and this request's load time."""

    client: RunnerClient
    launch: launch.Launch
    load_seconds: float


class InferenceService:
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    @contextlib.asynccontextmanager
    async def _lease(self, planned: launch.Launch, model: Model, keep_alive: float | None) -> AsyncIterator[Lease]:
        """Hold a runner and a slot; engine failures inside become RequestError (400) or InferenceError."""
        async with self.scheduler.lease(planned, model, keep_alive) as (entry, load_s):
            assert entry.runner.client is not None
            with _engine_errors(entry.runner):
                yield Lease(entry.runner.client, planned, load_s)

    # -- load / unload ----------------------------------------------------------------------------------------

    async def load(self, model: Model, opts: dict[str, Any], keep_alive: float | None) -> float:
        """Load (or keep warm) a model without generating; returns the load time in seconds."""
        async with self._lease(launch.plan(model, options.merge(model.params, opts)), model, keep_alive) as lease:
            return lease.load_seconds

    async def unload(self, model: Model) -> bool:
        return await self.scheduler.expire_now(launch.runner_key(model))

    async def running(self) -> list[RunningModel]:
        """The loaded models, longest-lived first, as ``/api/ps`` shows them."""
        entries = self.scheduler.running()
        busy = await asyncio.gather(*(_busy_slots(e) for e in entries))
        out = []
        for entry, slots_busy in zip(entries, busy, strict=True):
            model = entry.model
            if entry.refs > 0 and 0 <= entry.keep_alive < config.KEEP_ALIVE_MAX:
                expires: float | None = time.time() + entry.keep_alive  # the clock starts when the requests end
            elif not 0 <= entry.keep_alive < config.KEEP_ALIVE_MAX or entry.expires_at == FOREVER:
                expires = None
            else:
                expires = entry.expires_at
            size = entry.size
            placement = entry.runner.placement
            # A model wholly on GPUs is all VRAM, as Ollama counts it; a split one never shows more VRAM than size
            vram = min(placement.size_vram, size)
            if placement.gpu_layers is not None and placement.size_vram and \
                    placement.gpu_layers > entry.model.info.block_count:
                vram = size
            out.append(RunningModel(model=model, size=size, expires_at=expires, context_length=entry.spec.num_ctx,
                                    parallel=entry.spec.parallel, slots_busy=slots_busy, engine=entry.runner.engine,
                                    size_vram=vram, devices=tuple(placement.shares()) or (("CPU", size),),
                                    rpc=tuple(placement.rpc)))
        return out

    # -- generation ---------------------------------------------------------------------------------------------

    async def generate(self, req: InferenceRequest) -> AsyncIterator[Piece | Final]:
        """Yield output pieces, then one Final; raises RequestError/InferenceError/RunnerError before or during."""
        started = time.perf_counter()
        model = req.model
        merged = options.merge(model.params, req.options)
        planned = launch.plan(model, merged)
        settings = prompting.settle(req, merged, planned.spec.num_ctx)  # a bad format fails before any load
        async with self._lease(planned, model, req.keep_alive) as lease:
            call = await prompting.build(lease.client, req, settings, planned.spec.num_ctx)
            if req.truncate or not req.shift:
                call = await fitting.fit(lease.client, call, req, planned.spec.num_ctx, int(merged.get("num_keep", 4)),
                                         settings.think)
            first = True
            think_first = thinkfirst.applies(call, settings.schema is not None)
            source = (thinkfirst.pieces if think_first else streams.pieces)(lease.client, call, req)
            async for item in source:
                if isinstance(item, Final):
                    item.load_duration = int(lease.load_seconds * 1e9)
                    item.total_duration = int((time.perf_counter() - started) * 1e9)
                    metrics.observe_generation(model.display_name, item.prompt_eval_count - item.prompt_cached_count,
                                               item.prompt_cached_count,
                                               item.eval_count)
                elif first:
                    first = False
                    metrics.observe_first_token(model.display_name, time.perf_counter() - started)
                yield item

    # -- tokens ---------------------------------------------------------------------------------------------------

    async def tokenize(self, model: Model, text: str, opts: dict[str, Any], keep_alive: float | None) -> list[int]:
        """The model's own token ids for ``text`` (no BOS added), from the engine's tokenizer."""
        async with self._lease(launch.plan(model, options.merge(model.params, opts)), model, keep_alive) as lease:
            return await lease.client.tokenize(text, add_special=False)

    async def count_tokens(self, req: InferenceRequest) -> int:
        """The tokens of the prompt a chat request makes (its template, tools and thinking), without generating."""
        merged = options.merge(req.model.params, req.options)
        planned = launch.plan(req.model, merged)
        settings = prompting.settle(req, merged, planned.spec.num_ctx)
        async with self._lease(planned, req.model, req.keep_alive) as lease:
            return await counting.prompt_tokens(lease.client, req, settings)

    async def detokenize(self, model: Model, tokens: list[int], opts: dict[str, Any],
                         keep_alive: float | None) -> str:
        async with self._lease(launch.plan(model, options.merge(model.params, opts)), model, keep_alive) as lease:
            return await lease.client.detokenize(tokens)

    # -- embeddings and rerank ------------------------------------------------------------------------------------

    async def embed(self, model: Model, inputs: list[str], *, opts: dict[str, Any], keep_alive: float | None,
                    truncate: bool = True) -> Embeddings:
        """Raw (unnormalized) vectors for every input, evaluated in one batch by the engine."""
        if model.info.is_reranker:  # its pooled output is one relevance score per input, not a vector
            raise RequestError(f'"{model.display_name}" does not support embeddings')
        started = time.perf_counter()
        planned = launch.plan(model, options.merge(model.params, opts), for_embedding=True)
        async with self._lease(planned, model, keep_alive) as lease:
            spec = lease.launch.spec
            content = await embedding.fit_inputs(lease.client, inputs, min(spec.num_ctx, spec.num_batch), truncate)
            vectors, count = await embedding.vectors(lease.client, content)
        metrics.observe_prompt_tokens(model.display_name, count)
        return Embeddings(vectors=vectors, prompt_eval_count=count, load_duration=int(lease.load_seconds * 1e9),
                          total_duration=int((time.perf_counter() - started) * 1e9))

    async def rerank(self, model: Model, query: str, documents: list[str], *, opts: dict[str, Any],
                     keep_alive: float | None, truncate: bool = True) -> rerank.Ranking:
        """Score every document against ``query``; a model that is not a reranker is the client's error."""
        if not model.info.is_reranker:
            raise RequestError(f'"{model.display_name}" does not support rerank')
        started = time.perf_counter()
        async with self._lease(launch.plan(model, options.merge(model.params, opts)), model, keep_alive) as lease:
            spec = lease.launch.spec
            results, count = await rerank.score(lease.client, model, query, documents,
                                                min(spec.num_ctx, spec.num_batch), truncate)
        metrics.observe_prompt_tokens(model.display_name, count)
        return rerank.Ranking(results=results, prompt_eval_count=count, load_duration=int(lease.load_seconds * 1e9),
                              total_duration=int((time.perf_counter() - started) * 1e9))


@contextlib.contextmanager
def _engine_errors(runner: Runner) -> Iterator[None]:
    """The engine's failures in the client's terms: a dead runner says why it died; the engine's own 400 is a bad
    request; anything else is a server error."""
    try:
        yield
    except RunnerUnreachable as exc:
        raise InferenceError(_death_message(runner, exc)) from exc
    except RunnerReplyError as exc:
        if not runner.alive():
            raise InferenceError(_death_message(runner, exc)) from exc
        if exc.engine_status == 400:
            raise RequestError(images.engine_message(str(exc))) from exc
        raise InferenceError(str(exc)) from exc


def _death_message(runner: Runner, exc: Exception) -> str:
    if not runner.alive():
        return runner.exit_message()
    return f"llama runner connection failed: {exc}"


async def _busy_slots(entry: Loaded) -> int | None:
    """How many of the engine's slots are decoding right now (asked of the engine, not Corral's bookkeeping)."""
    client = entry.runner.client
    if client is None or not entry.runner.alive():
        return None
    try:
        slots = await asyncio.wait_for(client.get("/slots"), 2.0)
    except Exception:
        return None
    return sum(1 for slot in slots if isinstance(slot, dict) and slot.get("is_processing"))
