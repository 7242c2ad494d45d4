"""The ceiling: llama.cpp's server engine from the same ``xllamacpp`` wheel, with no Corral in front of it.

Run as ``python -m benchmarks.direct_engine MODEL --ctx 4096 --slots 4 --threads 2``. It builds ``CommonParams`` the
way ``corral/runner/engine_main.py`` does (per-slot context x slots, continuous batching, prompt cache, context shift,
``n_keep`` 4, Jinja, no warm-up), but without an API key, listens on a free loopback port, prints one JSON line
``{"event": "ready", "url": ...}`` and serves until SIGTERM. It dies with its parent (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import signal
import sys
import threading
from typing import Any

PR_SET_PDEATHSIG = 1


def build_params(model: str, ctx: int, slots: int, threads: int, batch: int = 512) -> Any:
    """The engine options Corral's runner uses for the same launch spec."""
    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = model
    p.hostnames = ["127.0.0.1"]
    p.port = 0
    p.n_parallel = slots
    p.n_ctx = ctx * slots
    p.n_batch = batch
    p.n_ubatch = min(batch, 512)
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    p.cont_batching = True
    p.cache_prompt = True
    p.ctx_shift = True
    p.n_keep = 4
    p.endpoint_slots = True
    p.endpoint_props = True
    p.use_jinja = True
    p.warmup = False
    return p


def main(argv: list[str] | None = None) -> int:
    """Start the engine, announce its URL on stdout, serve until SIGTERM/SIGINT."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model")
    ap.add_argument("--ctx", type=int, default=4096, help="context per slot")
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    import xllamacpp

    server = xllamacpp.Server(build_params(args.model, args.ctx, args.slots, args.threads))
    url = str(server.listening_address)
    if not url.startswith("http"):
        url = "http://" + url
    sys.stdout.write(json.dumps({"event": "ready", "url": url}) + "\n")
    sys.stdout.flush()
    while not stop.wait(1.0):
        pass
    del server
    return 0


if __name__ == "__main__":
    sys.exit(main())
