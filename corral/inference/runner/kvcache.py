"""KV persistence across unloads: the engine's slot save/restore, kept under Corral's home.

When a runner is unloaded (keep_alive expiry, eviction, ``keep_alive: 0``, server shutdown), every slot holding a
long prompt is saved with the engine's ``/slots/{id}?action=save``; the next runner for the same weights and context
size restores them before its first request, so a long system prompt is not evaluated again. The directory name
binds the files to the weights digest, adapters and per-slot context, so a changed model or option never reuses
them. The whole cache is bounded in bytes; the least recently used files go first.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path

from corral import config
from corral.inference.runner.client import RunnerClient

log = logging.getLogger("corral.kvcache")

MIN_TOKENS = 256  # shorter prompts are cheaper to re-evaluate than to save and restore
DEFAULT_MAX_BYTES = 4 << 30


def root() -> Path:
    return config.home() / "kvcache"


def max_bytes() -> int:
    """``CORRAL_KV_CACHE_MAX`` in bytes (0 turns persistence off)."""
    return config.env_int("KV_CACHE_MAX", DEFAULT_MAX_BYTES)


def directory_for(model_digest: str, adapters: list[str], num_ctx: int) -> Path:
    key = hashlib.sha256("\0".join([model_digest, *adapters, str(num_ctx)]).encode()).hexdigest()[:32]
    return root() / key


async def save(client: RunnerClient, directory: Path) -> int:
    """Save every slot with a long cached prompt; returns how many were saved. Never raises."""
    if max_bytes() <= 0:
        return 0
    try:
        slots = await client.get("/slots")
    except Exception as exc:
        log.debug("kv save skipped: %s", exc)
        return 0
    directory.mkdir(parents=True, exist_ok=True)
    saved = 0
    for slot in slots if isinstance(slots, list) else []:
        if not isinstance(slot, dict) or int(slot.get("n_prompt_tokens") or 0) < MIN_TOKENS:
            continue
        name = f"slot-{int(slot['id'])}.bin"
        try:
            await client.post(f"/slots/{int(slot['id'])}?action=save", {"filename": name})
            saved += 1
        except Exception as exc:
            log.warning("could not save KV of slot %s: %s", slot.get("id"), exc)
    keep = {f"slot-{int(sl['id'])}.bin" for sl in slots if isinstance(sl, dict)
            and int(sl.get("n_prompt_tokens") or 0) >= MIN_TOKENS}
    for stale in directory.glob("slot-*.bin"):
        if stale.name not in keep:
            with contextlib.suppress(OSError):
                stale.unlink()
    if saved:
        log.info("saved KV cache of %d slot(s) to %s", saved, directory)
        enforce_limit()
    return saved


async def restore(client: RunnerClient, directory: Path, slots: int) -> int:
    """Load saved slot files into the new runner's slots; returns how many were restored. Never raises."""
    if not directory.is_dir():
        return 0
    files = sorted(directory.glob("slot-*.bin"), key=lambda p: p.stat().st_mtime, reverse=True)[:slots]
    restored = 0
    for slot_id, path in enumerate(files):
        try:
            await client.post(f"/slots/{slot_id}?action=restore", {"filename": path.name})
            restored += 1
            os.utime(path)  # recently used: keep it longest
        except Exception as exc:
            log.warning("could not restore KV from %s: %s; removing it", path.name, exc)
            with contextlib.suppress(OSError):
                path.unlink()
    if restored:
        log.info("restored KV cache of %d slot(s) from %s", restored, directory)
    return restored


def enforce_limit() -> None:
    """Delete the least recently used slot files until the cache fits ``CORRAL_KV_CACHE_MAX``."""
    files = []
    for path in root().glob("*/slot-*.bin"):
        with contextlib.suppress(OSError):
            st = path.stat()
            files.append((st.st_mtime, st.st_size, path))
    total = sum(size for _, size, _ in files)
    limit = max_bytes()
    for _, size, path in sorted(files):
        if total <= limit:
            break
        with contextlib.suppress(OSError):
            path.unlink()
            total -= size
