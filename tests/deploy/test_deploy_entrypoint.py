"""The container's entry point (deploy/entrypoint.sh), run directly with /bin/sh as the image runs it: ``serve`` execs
the server (so it receives the container's SIGTERM), ``healthcheck`` is the image's HEALTHCHECK, ``pull`` is
compose's init service pulling into the shared store through a private server it stops afterwards.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from corral.store.store import Store
from tests.conftest import ROOT, free_port
from tests.fault_registry import MEDIA_MODEL, FaultRegistry, digest_of, serve

pytestmark = pytest.mark.e2e

ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"
WEIGHTS = os.urandom(200_000)


def env_for(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "CORRAL_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # corral and python3 of this venv
    env.update({"CORRAL_MODELS": str(tmp / "models"), "CORRAL_HOME": str(tmp / "home"), "CORRAL_NUM_THREADS": "1"})
    env.update(extra)
    return env


def run(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def listening(port: int) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
        return True
    return False


@pytest.fixture
def registry() -> Iterator[FaultRegistry]:
    with serve() as reg:
        reg.add_model("library/tiny", "latest", [(MEDIA_MODEL, WEIGHTS)])
        yield reg


def test_serve_execs_the_server_which_answers_probes_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = env_for(tmp_path, CORRAL_HOST=f"127.0.0.1:{port}")
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["sh", str(ENTRYPOINT)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.1)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"serve" in cmdline and not cmdline[0].endswith(b"sh"), cmdline  # exec'd: the shell is gone
        tags = httpx.get(f"http://127.0.0.1:{port}/api/tags", timeout=10).json()
        assert {m["name"] for m in tags["models"]} >= {"smollm2:135m", "all-minilm:latest"}  # offline, bundled
        for host in (f"127.0.0.1:{port}", f"http://0.0.0.0:{port}", f":{port}"):
            assert run(["healthcheck"], env_for(tmp_path, CORRAL_HOST=host)).returncode == 0, host
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal: Docker sees 143, as for any SIGTERM'd program
        assert proc.wait(timeout=20) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert run(["healthcheck"], env).returncode == 1  # nothing listens any more


def test_pull_fills_the_store_through_a_private_server_and_stops_it(tmp_path: Path,
                                                                    registry: FaultRegistry) -> None:
    init_port = free_port()
    name = f"{registry.host}/library/tiny:latest"
    env = env_for(tmp_path, CORRAL_PULL_MODELS=name, CORRAL_PULL_INSECURE="1", CORRAL_INIT_PORT=str(init_port),
                  CORRAL_NOBUNDLED="1")
    result = run(["pull"], env)
    assert result.returncode == 0, result.stderr
    assert f"pulling {name}" in result.stderr and "success" in result.stderr
    store = Store(tmp_path / "models")
    record = store.read_manifest(name)
    assert record.raw == registry.manifests[("library/tiny", "latest")]
    assert store.blob_path(digest_of(WEIGHTS)).read_bytes() == WEIGHTS
    assert not listening(init_port)  # the private server is gone

    missing = run(["pull", f"{registry.host}/library/absent:latest", name], env)  # arguments win over the env
    assert missing.returncode == 1
    assert f"pulling {registry.host}/library/absent:latest failed" in missing.stderr
    assert not listening(init_port)


def test_pull_without_models_does_nothing(tmp_path: Path) -> None:
    result = run(["pull"], env_for(tmp_path, CORRAL_PULL_MODELS=" , "))
    assert result.returncode == 0 and "no models to pull" in result.stderr
    assert not (tmp_path / "models").exists()


def test_other_commands_run_as_given(tmp_path: Path) -> None:
    result = run(["python3", "-c", "import os; print(os.environ['CORRAL_HOST'])"], env_for(tmp_path))
    assert result.returncode == 0 and result.stdout.strip() == "0.0.0.0:11434"  # the container's default bind
