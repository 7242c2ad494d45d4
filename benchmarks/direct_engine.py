"""The ceiling: llama.cpp's server engine from the same ``xllamacpp`` wheel, with no Corral in front of it.

Run as ``python -m benchmarks.direct_engine MODEL --ctx 4096 --slots 4 --threads 2``. It builds ``CommonParams`` with
Corral's own runner code (``corral.inference.runner.wheel.build_params``: per-slot context x slots, continuous
batching, prompt cache, context shift, ``n_keep`` 4, Jinja, no warm-up), but without an API key, listens on a free
loopback port, prints one JSON line ``{"event": "ready", "url": ...}`` and serves until SIGTERM. It dies with its
parent, as a runner does.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

from corral.inference.runner.wheel import build_params, die_with_parent


def main(argv: list[str] | None = None) -> int:
    """Start the engine, announce its URL on stdout, serve until SIGTERM/SIGINT."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model")
    ap.add_argument("--ctx", type=int, default=4096, help="context per slot")
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    die_with_parent(os.getppid())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    import xllamacpp

    params = build_params({"model": args.model, "num_ctx": args.ctx, "parallel": args.slots,
                           "num_thread": args.threads, "port": 0})
    server = xllamacpp.Server(params)
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
