"""Make sure a server answers before a command talks to it, starting one in the background when it is ours to start.

Ollama's Linux CLI only says "could not connect"; on macOS and Windows it starts the app. Corral does the latter
everywhere for a local address (loopback, or 0.0.0.0 / ::): a detached ``python -m corral serve`` (own session,
stdin from /dev/null, output to ``<home>/logs/server.log``) so that ``corral run model`` works on a fresh machine.
A remote address is never started, only reported. The started server is recorded in ``<home>/server.pid`` for
``corral server status`` and ``corral server stop`` (:mod:`corral.cli.background`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

from corral import config
from corral.cli import background
from corral.cli.client import Client, ConnectError, is_local

STARTUP_TIMEOUT = 30.0
_POLL_INTERVAL = 0.2


def log_path() -> Path:
    return config.home() / "logs" / "server.log"


def spawn_server(log_file: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m corral serve`` detached from this terminal; its output is appended to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log, open(os.devnull, "rb") as devnull:
        return subprocess.Popen(
            [sys.executable, "-m", "corral", "serve"],
            stdin=devnull,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in this terminal must not reach the server
            close_fds=True,
            env=os.environ.copy(),
        )


def ensure_server(client: Client, *, timeout: float = STARTUP_TIMEOUT) -> None:
    """Return once ``HEAD /`` answers; start a local server if needed. Raises :class:`ConnectError` otherwise."""
    if client.heartbeat():
        return
    host = client.host
    if not is_local(host):
        raise ConnectError(f"could not connect to corral server at {host.url}")
    log_file = log_path()
    process = spawn_server(log_file)
    print(f"Starting corral server in the background (log: {log_file})", file=sys.stderr)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.heartbeat(timeout=1.0):
            if process.poll() is None:  # ours answered (not a server that won the race for the port)
                with contextlib.suppress(OSError, ValueError):  # without a record, `server stop` just can't help
                    background.write_record(process.pid, host)
            return
        code = process.poll()
        if code is not None:
            # Another server may have won the race for the port; otherwise ours failed to start.
            if client.heartbeat(timeout=1.0):
                return
            raise ConnectError(f"corral server exited during startup (exit status {code}); see {log_file}")
        time.sleep(_POLL_INTERVAL)
    raise ConnectError(f"corral server did not answer at {host.url} within {int(timeout)}s; see {log_file}")
