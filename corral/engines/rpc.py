"""One model across machines: llama.cpp's RPC backend.

A worker machine runs ``corral worker``, which starts the engine's ``ggml-rpc-server``: it offers its CPU (or GPU)
to one client at a time over TCP, with no authentication and no encryption, so it belongs on loopback or a private
network. ``CORRAL_RPC_SERVERS=host:port,...`` makes the server's generation runners pass ``--rpc`` to
``llama-server``, which then places layers on the workers as it would on GPUs (``-ngl``), the rest on this machine.

An rpc-server serves one client at a time, so one generation runner at a time uses the workers (the scheduler
evicts an idle one first); embedding and rerank runners stay local. Before each load the workers are probed; one
that does not answer is left out, with a log line, and the model loads on the others and this machine. A worker
that dies while a model runs kills that runner (llama.cpp aborts on a broken RPC connection), and the request gets
an error naming the worker.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from corral.errors import EngineError

DEFAULT_PORT = 50052


def parse_servers(value: str) -> list[str]:
    """``host:port,host:port`` as a list (``[v6addr]:port`` for IPv6); an entry without a port gets rpc-server's
    default, 50052."""
    out = []
    for raw in value.split(","):
        entry = raw.strip()
        if not entry:
            continue
        if entry.startswith("["):
            inner, _, rest = entry[1:].partition("]")
            host, port = f"[{inner}]", rest[1:] if rest.startswith(":") else rest
        elif entry.count(":") == 1:
            host, _, port = entry.partition(":")
        else:
            host, port = entry, ""
        port = port or str(DEFAULT_PORT)
        bad_host = host in ("", "[]") or (":" in host and not host.startswith("["))
        if bad_host or not port.isdigit() or not 0 < int(port) < 65536:
            raise EngineError(f"CORRAL_RPC_SERVERS: {entry!r} is not host:port")
        out.append(f"{host}:{int(port)}")
    return out


def servers() -> list[str]:
    """The workers ``CORRAL_RPC_SERVERS`` names (only the ``CORRAL_`` name: Ollama has no such setting)."""
    return parse_servers(os.environ.get("CORRAL_RPC_SERVERS", ""))


def reachable(server: str, timeout: float = 2.0) -> bool:
    """Whether something accepts TCP connections at ``host:port`` (a busy rpc-server still accepts: its backlog)."""
    host, _, port = server.rpartition(":")
    with contextlib.suppress(OSError), socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
        return True
    return False


def worker_layers(n_blocks: int, workers: int) -> int:
    """``-ngl`` for an even split: the workers and this machine each take an equal share of the layers (the output
    layer counts as one, and goes to a worker when any layers do)."""
    if workers <= 0:
        return 0
    total = n_blocks + 1
    return min(total, round(total * workers / (workers + 1)))


def worker_command(binary: Path, host: str, port: int, threads: int = 0, cache: bool = True) -> list[str]:
    """The ``ggml-rpc-server`` command line of a worker (``-c``: keep received weights in a local file cache, so
    the next load of the same model sends only their hashes)."""
    args = [str(binary), "-H", host, "-p", str(port)]
    if threads > 0:
        args += ["-t", str(threads)]
    if cache:
        args.append("-c")
    return args
