"""How much memory a model needs and how much the machine has, for choosing slots and evicting models."""

from __future__ import annotations

import os

from corral.store.gguf_info import GGUFInfo

MAX_DEFAULT_PARALLEL = 4


def available_bytes() -> int:
    """MemAvailable from /proc/meminfo (what the kernel could hand out without swapping)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    pages = os.sysconf("SC_AVPHYS_PAGES") if hasattr(os, "sysconf") else 0
    return int(pages) * os.sysconf("SC_PAGE_SIZE") if pages else 8 << 30


def kv_cache_bytes(info: GGUFInfo, num_ctx: int) -> int:
    """f16 K and V for every layer: 2 x layers x kv_heads x head_dim x ctx x 2 bytes (Ollama's estimate)."""
    layers = info.block_count or 32
    heads = info.head_count or 32
    kv_heads = info.head_count_kv or heads
    embd = info.embedding_length or 4096
    head_dim = embd // max(heads, 1)
    return 2 * layers * kv_heads * head_dim * num_ctx * 2


def model_bytes(info: GGUFInfo, weights_size: int, num_ctx: int, parallel: int) -> int:
    """What a runner holds: weights, every slot's KV cache, and the engine's prompt cache."""
    return weights_size + kv_cache_bytes(info, num_ctx) * parallel + prompt_cache_bytes(info, num_ctx, parallel)


PROMPT_CACHE_MIN = 64 << 20
PROMPT_CACHE_MAX = 8 << 30  # the engine's own default, which it fills whatever the model


def prompt_cache_bytes(info: GGUFInfo, num_ctx: int, parallel: int) -> int:
    """The engine's prompt cache: KV states of earlier prompts kept in RAM so a returning conversation skips its
    prefix. Unbounded by Corral it grew by each request's prompt state (~1.4 MB for SmolLM2) up to 8 GiB; Corral
    gives it one more full KV cache's worth (every slot's), at least 64 MiB, or ``CORRAL_PROMPT_CACHE`` MiB (0 turns
    it off), and counts it like the KV cache."""
    from corral import config

    configured = config.env_int("PROMPT_CACHE", -1)
    if configured >= 0:
        return configured << 20
    return min(max(kv_cache_bytes(info, num_ctx) * parallel, PROMPT_CACHE_MIN), PROMPT_CACHE_MAX)


def projector_bytes(info: GGUFInfo | None, file_size: int) -> int:
    """A vision projector's weights plus its encoder's working memory for one image: f32 attention scores for
    every head over the patches, the image as floats, and the patch embeddings (the terms of Ollama's estimate)."""
    if info is None:
        return file_size

    def number(key: str) -> int:
        value = info.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    size, patch = number("clip.vision.image_size"), number("clip.vision.patch_size")
    heads, width = number("clip.vision.attention.head_count"), number("clip.vision.embedding_length")
    patches = (size // patch) ** 2 if size and patch else 0
    graph = 4 * (size * size * 3 + patches * width + patches * patches * heads)
    return file_size + graph


def choose_parallel(info: GGUFInfo, weights_size: int, num_ctx: int, requested: int) -> int:
    """Slots for a new runner: the configured number, else up to 4 while weights + all slots' KV fit in 80% of RAM."""
    if requested > 0:
        return requested
    if info.is_embedding:
        return 1
    budget = int(available_bytes() * 0.8)
    for slots in range(MAX_DEFAULT_PARALLEL, 1, -1):
        if model_bytes(info, weights_size, num_ctx, slots) <= budget:
            return slots
    return 1


def budget_bytes(loaded_bytes: int) -> int:
    """Bytes that loaded models may use in all: ``CORRAL_MEMORY_LIMIT`` if set, else what is loaded plus what the
    kernel could still hand out."""
    from corral import config

    limit = config.env_int("MEMORY_LIMIT", 0)
    if limit > 0:
        return limit
    return loaded_bytes + available_bytes()


def human(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
