"""A runner's launch spec: everything fixed for the life of a runner, so a change in any of it needs a new one."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LaunchSpec:
    model: str
    num_ctx: int  # per slot, like Ollama's num_ctx (llama-server's -c is the total over all slots)
    parallel: int
    num_batch: int = 512
    num_thread: int = 0
    num_gpu: int = -1
    use_mmap: bool | None = None
    num_keep: int = 4
    embedding: bool = False
    reranking: bool = False  # a cross-encoder scoring (query, document) pairs: pooling RANK, the /rerank endpoint
    pooling: str | None = None  # "last" to embed with a decoder LLM; None: the GGUF's own pooling
    adapters: list[str] = field(default_factory=list)
    projector: str | None = None  # a vision projector GGUF (llama-server's --mmproj)
    slot_save_path: str | None = None
    # Speculative decoding (corral.inference.speculative): the engine's method names (--spec-type), a draft model
    # and how many tokens it drafts per step.
    speculative: list[str] = field(default_factory=list)
    draft: str | None = None
    draft_max: int = 0
    # OLLAMA_FLASH_ATTENTION / OLLAMA_KV_CACHE_TYPE (corral.inference.attention)
    flash_attention: str = "auto"  # "on", "off", "auto"
    cache_type: str = "f16"  # K and V cache element type: f16, q8_0, q4_0
    cache_ram_mib: int | None = None  # the engine's prompt cache (MiB; 0 off); None leaves the engine's default
    # RPC workers (host:port) the layers are split over: CORRAL_RPC_SERVERS on an engine with RPC (corral.engines.rpc)
    rpc: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
