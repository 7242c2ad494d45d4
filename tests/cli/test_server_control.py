"""``corral server status`` and ``corral server stop``: the background server the CLI starts is recorded, reported
and stopped; a server started any other way is reported and left alone; a stale record never signals a stranger."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corral.cli import background
from tests.conftest import free_port, running_server

pytestmark = pytest.mark.e2e


def cli_env(tmp_path: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "CORRAL_"))}
    env.update({"CORRAL_HOME": str(tmp_path / "home"), "CORRAL_MODELS": str(tmp_path / "models"),
                "CORRAL_HOST": f"127.0.0.1:{port}", "CORRAL_NUM_THREADS": "1", "CORRAL_NOBUNDLED": "1"})
    return env


def corral(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "corral", *args], env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def record_in(home: Path) -> list[str]:
    return (home / "server.pid").read_text().splitlines()


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def test_background_server_is_recorded_reported_and_stopped(tmp_path: Path) -> None:
    port = free_port()
    env = cli_env(tmp_path, port)
    home = tmp_path / "home"
    status = corral(env, "server", "status")
    assert status.returncode == 1 and status.stdout.strip() == f"no corral server is running at http://127.0.0.1:{port}"
    assert corral(env, "server", "stop").stdout.strip() == "no background corral server is running"

    listed = corral(env, "list")  # like `corral run`, starts a server in the background first
    pid = 0
    try:
        assert listed.returncode == 0, listed.stderr
        assert "Starting corral server in the background" in listed.stderr
        lines = record_in(home)
        pid = int(lines[0])
        assert lines[1] == f"127.0.0.1:{port}" and lines[2] == str(background.process_start_ticks(pid))
        assert b"serve" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")

        status = corral(env, "server", "status")
        assert status.returncode == 0
        assert f"corral server running in the background: pid {pid}, listening on 127.0.0.1:{port}" in status.stdout
        assert "corral server stop" in status.stdout

        stopped = corral(env, "server", "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.strip() == f"stopped the corral server (pid {pid}) listening on 127.0.0.1:{port}"
        assert gone(pid) and not (home / "server.pid").exists()
        assert corral(env, "server", "status").returncode == 1
    finally:
        if pid and not gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_server_started_otherwise_is_reported_not_stopped(tmp_path: Path) -> None:
    with running_server(tmp_path, {"CORRAL_NOBUNDLED": "1"}) as srv:
        env = cli_env(tmp_path, int(srv.host.rsplit(":", 1)[1]))
        status = corral(env, "server", "status")
        assert status.returncode == 0 and "was not started in the background by corral" in status.stdout
        stop = corral(env, "server", "stop")
        assert stop.returncode == 1
        assert stop.stderr.startswith(f"Error: a corral server answers at {srv.url}, but it was not started in the "
                                      "background by corral")
        assert srv.proc.poll() is None  # still running


def test_a_stale_record_never_signals_the_process_that_now_has_its_pid(tmp_path: Path) -> None:
    env = cli_env(tmp_path, free_port())
    home = tmp_path / "home"
    home.mkdir()
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ticks = background.process_start_ticks(stranger.pid)
        assert ticks is not None
        # The recorded server died and the kernel gave its PID to another program (same PID, other start time).
        (home / "server.pid").write_text(f"{stranger.pid}\n127.0.0.1:1\n{ticks - 1}\n")
        stop = corral(env, "server", "stop")
        assert stop.returncode == 0 and stop.stdout.strip() == "no background corral server is running"
        time.sleep(0.2)
        assert stranger.poll() is None, "a process that is not corral's server was signalled"
        assert not (home / "server.pid").exists()  # the stale record is gone

        (home / "server.pid").write_text(f"{stranger.pid}\n127.0.0.1:1\n{ticks - 1}\n")
        status = corral(env, "server", "status")
        assert f"no longer running (pid {stranger.pid})" in status.stdout and status.returncode == 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            stranger.kill()
        stranger.wait()
