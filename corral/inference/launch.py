"""Launch planning: which runner a request needs, and how it is started.

A request's merged options become a :class:`~corral.inference.runner.spec.LaunchSpec` (what the engine is loaded
with), a runner key (which loaded runner it may share) and a planned size (what the scheduler counts against the
memory budget). Two requests share a runner only when both the key and the spec are equal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral import config
from corral.inference import attention, memory, options, speculative
from corral.inference.runner import engines, kvcache
from corral.inference.runner.spec import LaunchSpec
from corral.store.model import Model

RunnerKey = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Launch:
    key: RunnerKey
    spec: LaunchSpec
    size: int  # bytes: weights (with adapters and a draft model) and every slot's KV cache


def plan(model: Model, opts: dict[str, Any], *, for_embedding: bool = False) -> Launch:
    """The runner for a model and its merged options. A chat model asked for embeddings gets a runner of its own
    with last-token pooling, so its generation runner keeps the engine's fast path."""
    info = model.info
    runner_opts = options.RunnerOptions.from_options(opts, model_ctx=info.context_length or None)
    embedding = info.is_embedding or for_embedding
    if embedding:  # an input must fit one batch: Ollama's min(2048, num_ctx)
        runner_opts = options.RunnerOptions(
            num_ctx=runner_opts.num_ctx, num_batch=max(runner_opts.num_batch, min(2048, runner_opts.num_ctx)),
            num_thread=runner_opts.num_thread, use_mmap=runner_opts.use_mmap)
    attn = attention.settings()
    parallel = memory.choose_parallel(info, model.model_path.stat().st_size, runner_opts.num_ctx,
                                      config.num_parallel(), attn.cache_type)
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
        projector=None if embedding or not model.projectors else str(model.projectors[0]),
        slot_save_path=None if embedding else _kv_dir(model, runner_opts.num_ctx),
        speculative=drafting.types,
        draft=drafting.draft,
        draft_max=drafting.draft_max,
        flash_attention=attn.flash,
        cache_type=attn.cache_type,
        cache_ram_mib=0 if embedding else memory.prompt_cache_bytes(info, runner_opts.num_ctx, parallel,
                                                                   attn.cache_type) >> 20,
        rpc=engines.rpc_workers(generation=not (embedding or info.is_reranker)),
    )
    key = runner_key(model)
    if spec.pooling:
        key = (*key, "embed")
    return Launch(key=key, spec=spec, size=_size(model, spec))


def runner_key(model: Model) -> RunnerKey:
    """Which loaded runner a model shares: same weights, adapters, projector and draft model."""
    key = (model.model_digest, *sorted(str(p) for p in model.adapters))
    if model.projectors:
        key = (*key, "projector:" + str(model.projectors[0]))
    return (*key, "draft:" + model.draft_digest) if model.draft is not None else key


def _kv_dir(model: Model, num_ctx: int) -> str | None:
    if kvcache.max_bytes() <= 0 or model.info.is_embedding:
        return None
    # A projector is part of the key: a saved prompt with images restores only where the same projector is loaded.
    extra = [str(p) for p in model.adapters] + [f"projector:{p}" for p in model.projectors[:1]]
    directory = kvcache.directory_for(model.model_digest, extra, num_ctx)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return str(directory) + os.sep  # the engine joins this prefix and the file name


def _size(model: Model, spec: LaunchSpec) -> int:
    weights = model.model_path.stat().st_size + sum(p.stat().st_size for p in model.adapters)
    if spec.draft and model.draft is not None:
        weights += model.draft.stat().st_size
    if spec.projector is not None:
        weights += memory.projector_bytes(model.projector_info, Path(spec.projector).stat().st_size)
    size = memory.model_bytes(model.info, weights, spec.num_ctx, spec.parallel, spec.cache_type)
    if not spec.cache_ram_mib:  # embedding runners keep no prompt cache
        size -= memory.prompt_cache_bytes(model.info, spec.num_ctx, spec.parallel, spec.cache_type)
    return engines.local_share(size, spec, model.info)
