"""The ``corral`` command against a real server (and starting one itself)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import MODEL, ServerProcess, free_port, stop_auto_started_servers

pytestmark = pytest.mark.e2e


def corral(server_env: dict[str, str], *args: str, stdin: str | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "corral", *args], env=server_env, input=stdin, text=True,
                          capture_output=True, timeout=timeout)


def test_run_one_shot_prints_an_answer(server: ServerProcess) -> None:
    r = corral(server.env, "run", MODEL, "What is the capital of France? Answer in one word.")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert "\x1b[" not in r.stdout  # piped: plain text


def test_run_joins_piped_stdin_and_verbose_stats(server: ServerProcess) -> None:
    r = corral(server.env, "run", MODEL, "Summarize in three words:", "--verbose",
               stdin="The cat sat on the mat all day long.")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert "eval rate:" in r.stderr and "prompt eval count:" in r.stderr


def test_list_show_cp_rm(fresh_server: ServerProcess) -> None:
    env = fresh_server.env
    r = corral(env, "list")
    assert r.returncode == 0 and r.stdout.splitlines()[0].split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    assert MODEL in r.stdout and "98 MB" in r.stdout
    r = corral(env, "show", MODEL)
    assert r.returncode == 0 and "llama" in r.stdout and "Q4_1" in r.stdout
    r = corral(env, "show", MODEL, "--template")
    assert "<|im_start|>" in r.stdout
    assert corral(env, "cp", MODEL, "mine").returncode == 0
    assert "mine:latest" in corral(env, "ls").stdout
    assert corral(env, "rm", "mine").returncode == 0
    assert "mine:latest" not in corral(env, "ls").stdout


def test_ps_and_stop(fresh_server: ServerProcess) -> None:
    env = fresh_server.env
    httpx.post(fresh_server.url + "/api/generate", json={"model": MODEL}, timeout=120)
    r = corral(env, "ps")
    assert r.returncode == 0
    assert r.stdout.splitlines()[0].split() == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    assert MODEL in r.stdout and "100% CPU" in r.stdout and "4096" in r.stdout
    assert corral(env, "stop", MODEL).returncode == 0
    assert MODEL not in corral(env, "ps").stdout


def test_errors_are_one_line_and_nonzero(server: ServerProcess) -> None:
    r = corral(server.env, "show", "no-such-model")
    assert r.returncode == 1
    assert r.stderr.strip() == "Error: model 'no-such-model' not found"
    assert "Traceback" not in r.stderr
    r = corral(server.env, "cp", MODEL, "../evil")
    assert r.returncode == 1 and r.stderr.startswith("Error:") and "Traceback" not in r.stderr


def test_version_names_client_and_server(server: ServerProcess) -> None:
    r = corral(server.env, "--version")
    assert r.returncode == 0 and "version is 0.1.0" in r.stdout


def test_cli_starts_a_server_when_none_answers(tmp_path: Path) -> None:
    port = free_port()
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "CORRAL_"))}
    env.update({"CORRAL_HOST": f"127.0.0.1:{port}", "CORRAL_HOME": str(home),
                "CORRAL_MODELS": str(tmp_path / "models"), "CORRAL_NUM_THREADS": "2"})
    try:
        r = corral(env, "list")
        assert r.returncode == 0, r.stderr
        assert "server" in r.stderr.lower()  # said so on stderr
        assert MODEL in r.stdout
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
    finally:
        stop_auto_started_servers(home)
