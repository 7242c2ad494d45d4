"""Flash attention and the K/V cache's type, from ``OLLAMA_FLASH_ATTENTION`` and ``OLLAMA_KV_CACHE_TYPE`` (or their
``CORRAL_`` names), with Ollama's rules.

``OLLAMA_FLASH_ATTENTION`` set true turns the engine's flash attention on, false turns it off; unset, the engine
decides (llama.cpp's ``auto``). ``OLLAMA_KV_CACHE_TYPE`` is ``f16`` (the default), ``q8_0`` (about half the
memory) or ``q4_0`` (about a quarter). A quantized cache needs flash attention: asked for without it, or with an
unknown type, the cache stays f16 and the server log says why, as Ollama does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from corral import config

log = logging.getLogger("corral.inference.attention")

# Bytes per cached K or V element: ggml's block sizes (q8_0: 32 values in 34 bytes, q4_0: 32 in 18).
BYTES_PER_ELEMENT = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
_warned: set[str] = set()


@dataclass(frozen=True, slots=True)
class Attention:
    flash: str  # "on", "off" or "auto" (llama-server's -fa values)
    cache_type: str  # "f16", "q8_0" or "q4_0", for both K and V


def settings() -> Attention:
    """The attention settings a new runner gets (read from the environment each time)."""
    value = config.env("FLASH_ATTENTION")
    flash = "auto" if value is None else ("on" if config.env_bool("FLASH_ATTENTION") else "off")
    wanted = (config.env("KV_CACHE_TYPE") or "f16").lower()
    cache = wanted
    if wanted not in BYTES_PER_ELEMENT:
        _warn(f"unsupported kv cache type {wanted!r} (use f16, q8_0 or q4_0); using f16")
        cache = "f16"
    elif wanted != "f16" and flash != "on":
        _warn(f"quantized kv cache requested ({wanted}) but flash attention is not enabled "
              "(set OLLAMA_FLASH_ATTENTION=1); using f16")
        cache = "f16"
    return Attention(flash=flash, cache_type=cache)


def _warn(message: str) -> None:
    if message not in _warned:  # once per server, not once per request
        _warned.add(message)
        log.warning(message)
