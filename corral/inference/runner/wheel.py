"""The runner child process: hosts llama.cpp's server engine (``xllamacpp.Server``) on one model.

Run as ``python -m corral.inference.runner.wheel``. It reads its launch spec as one JSON object on stdin (so the API key
never appears in the process list), starts the engine on a private loopback port guarded by that key, prints one
JSON line ``{"event": "ready", "url": ...}`` (or ``{"event": "error", ...}``) on stdout, and then lives until it is
told to stop or its parent dies. Keeping the engine in its own process means a crash or an out-of-memory in a model
never takes the API server down, and unloading a model returns all of its memory.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import threading
import time
from typing import Any

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Never outlive the server: the kernel signals us when the parent dies; a watchdog covers the race before that."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(1.0)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def build_params(spec: dict[str, Any]) -> Any:
    """Map Corral's launch spec onto the engine's ``CommonParams``."""
    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = spec["model"]
    # A Unix socket in a private directory when the server gave one: cheaper per token than loopback TCP, and no
    # port for other local users to find.
    p.hostnames = [spec.get("socket") or "127.0.0.1"]
    p.port = int(spec.get("port", 0))
    if spec.get("api_key"):
        p.api_keys = [spec["api_key"]]
    slots = int(spec.get("parallel", 1))
    p.n_parallel = slots
    # llama-server splits -c across slots; Corral's num_ctx is per request, like Ollama's.
    p.n_ctx = int(spec["num_ctx"]) * slots
    p.n_batch = int(spec.get("num_batch", 512))
    # Encoder models (BERT) must see a whole input in one micro-batch.
    p.n_ubatch = p.n_batch if spec.get("embedding") else min(p.n_batch, 512)
    threads = int(spec.get("num_thread", 0)) or (os.cpu_count() or 1)
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    if int(spec.get("num_gpu", -1)) >= 0:
        p.n_gpu_layers = int(spec["num_gpu"])
    p.cont_batching = True
    p.cache_prompt = True
    p.ctx_shift = bool(spec.get("ctx_shift", True))
    p.n_keep = int(spec.get("num_keep", 4))
    p.endpoint_slots = True
    p.endpoint_props = True
    p.use_jinja = True
    p.warmup = False
    if spec.get("cache_ram_mib") is not None:
        p.cache_ram_mib = int(spec["cache_ram_mib"])
    if spec.get("slot_save_path"):
        p.slot_save_path = spec["slot_save_path"]
    if spec.get("embedding"):
        p.embedding = True
        if spec.get("pooling") == "last":  # a decoder LLM asked for embeddings: its last token's state
            p.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_LAST
    if spec.get("reranking"):  # llama-server's --reranking: embeddings on, pooling RANK, the /rerank endpoint
        p.embedding = True
        p.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_RANK
    if spec.get("use_mmap") is False:
        p.load_mode = xllamacpp.llama_load_mode.LLAMA_LOAD_MODE_NONE
    if spec.get("chat_template"):
        p.chat_template = spec["chat_template"]
    if spec.get("projector"):  # a vision model's projector; on the GPU unless the model is kept off it
        p.mmproj.path = spec["projector"]
        p.mmproj_use_gpu = int(spec.get("num_gpu", -1)) != 0
    for path in spec.get("adapters", []):
        adapter = xllamacpp.CommonAdapterLoraInfo()
        adapter.path = path
        adapter.scale = 1.0
        p.lora_adapters = [*p.lora_adapters, adapter]
    _speculative(p, spec, threads)
    return p


def _speculative(p: Any, spec: dict[str, Any], threads: int) -> None:
    """llama-server's ``--spec-type`` (the engine's method names) and ``-md``/``--spec-draft-*`` for a draft model."""
    import xllamacpp

    names = spec.get("speculative") or []
    if not names:
        return
    kinds = xllamacpp.common_speculative_type
    p.speculative.types = [getattr(kinds, "COMMON_SPECULATIVE_TYPE_" + n.upper().replace("-", "_")) for n in names]
    if spec.get("draft"):
        draft = p.speculative.draft
        draft.mparams.path = spec["draft"]
        draft.n_max = int(spec.get("draft_max") or 4)
        draft.cpuparams.n_threads = threads
        draft.cpuparams_batch.n_threads = threads
        if int(spec.get("num_gpu", -1)) >= 0:
            draft.n_gpu_layers = int(spec["num_gpu"])


def main() -> int:
    parent = os.getppid()
    die_with_parent(parent)
    try:
        spec = json.loads(sys.stdin.readline())
    except json.JSONDecodeError as exc:
        _emit({"event": "error", "error": f"bad launch spec: {exc}"})
        return 2

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    try:
        import xllamacpp

        server = xllamacpp.Server(build_params(spec))
    except Exception as exc:  # the engine raises plain RuntimeErrors on load failures
        _emit({"event": "error", "error": str(exc) or type(exc).__name__})
        return 1
    _emit({"event": "ready", "url": server.listening_address, "pid": os.getpid()})
    while not stop.wait(1.0):
        pass
    del server
    return 0


if __name__ == "__main__":
    sys.exit(main())
