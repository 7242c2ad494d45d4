"""One model over two ``corral worker``s on loopback (llama.cpp's RPC backend), against the same engine alone.

The workers are real ``ggml-rpc-server`` processes started by ``corral worker``; the server splits the bundled
model's layers over them and itself. Greedy output must be the single-machine output; a worker killed mid-request
gives an error that names it, and the next request loads without it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from corral.engines.catalog import Engine
from tests.conftest import MODEL, ServerProcess, free_port, long_request, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]

GREEDY = {"temperature": 0, "seed": 1, "num_predict": 40}


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def start_worker(tmp: Path, engine: Engine, *extra: str) -> Worker:
    port = free_port()
    log = tmp / f"worker-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "OLLAMA_"))}
    env.update({"CORRAL_HOME": str(tmp / f"worker-home-{port}"), "CORRAL_ENGINE": str(engine.directory)})
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "corral", "worker", "--port", str(port), "-t", "1", *extra],
                                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    worker = Worker(proc, port, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"corral worker exited:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return worker
        time.sleep(0.1)
    worker.stop()
    raise RuntimeError("corral worker did not listen in 30 s")


@pytest.fixture
def workers(tmp_path: Path, native_engine: Engine) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    try:
        for _ in range(2):
            started.append(start_worker(tmp_path, native_engine))
        yield started
    finally:
        for w in started:
            w.stop()


def generate(server: ServerProcess, prompt: str) -> dict:
    r = httpx.post(server.url + "/api/generate", timeout=600,
                   json={"model": MODEL, "prompt": prompt, "stream": False, "options": GREEDY})
    assert r.status_code == 200, r.text
    return dict(r.json())


PROMPTS = ("Why is the sky blue?", "List three fruits.")


def test_worker_is_a_real_rpc_server_on_loopback(tmp_path: Path, native_engine: Engine) -> None:
    worker = start_worker(tmp_path, native_engine)
    try:
        exe = Path(f"/proc/{worker.proc.pid}/exe").resolve()
        assert exe.name == "ggml-rpc-server" and exe.parent.parent == native_engine.directory
        argv = Path(f"/proc/{worker.proc.pid}/cmdline").read_bytes().split(b"\0")
        assert argv[argv.index(b"-H") + 1] == b"127.0.0.1"
    finally:
        worker.stop()
    text = worker.log.read_text()
    assert "Warning" not in text and f"CORRAL_RPC_SERVERS=127.0.0.1:{worker.port}" in text


def test_two_workers_serve_one_model_with_the_single_machine_output(
        tmp_path: Path, native_engine: Engine, workers: list[Worker]) -> None:
    engine_env = {"CORRAL_ENGINE": str(native_engine.directory)}
    with running_server(tmp_path / "alone", engine_env) as alone:
        expected = [generate(alone, p)["response"] for p in PROMPTS]
    servers = ",".join(w.address for w in workers)
    with running_server(tmp_path / "split", {**engine_env, "CORRAL_RPC_SERVERS": servers}) as split:
        assert f"RPC workers for generation runners: {servers.replace(',', ', ')}" in split.log_text()
        got = [generate(split, p)["response"] for p in PROMPTS]
        ps = httpx.get(split.url + "/api/ps").json()["models"][0]
    assert got == expected
    assert ps["engine"] == "cpu-native+rpc" and ps["rpc"] == [w.address for w in workers]
    names = [d["name"] for d in ps["devices"]]
    assert sorted(names) == sorted(["CPU", *(f"RPC0[{w.address}]" for w in workers)])  # a device per worker
    # each worker holds a real share of the weights
    assert all(d["size"] > 10 << 20 for d in ps["devices"])


def test_a_worker_that_dies_mid_request_is_named_and_the_next_load_goes_without_it(
        tmp_path: Path, native_engine: Engine, workers: list[Worker]) -> None:
    servers = ",".join(w.address for w in workers)
    env = {"CORRAL_ENGINE": str(native_engine.directory), "CORRAL_RPC_SERVERS": servers}
    with running_server(tmp_path, env) as srv:
        generate(srv, "Hi")  # loaded over both workers
        lines: list[str] = []

        def stream() -> None:
            with httpx.stream("POST", srv.url + "/api/generate", json=long_request(2000), timeout=600) as r:
                lines.extend(r.iter_lines())

        reader = threading.Thread(target=stream)
        reader.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(lines) < 5:
            time.sleep(0.05)
        assert len(lines) >= 5, lines
        workers[1].stop()
        reader.join(timeout=120)
        assert not reader.is_alive()
        last = lines[-1]
        assert '"error"' in last and workers[1].address in last and "stopped answering" in last, last
        after = generate(srv, "Hi")
        assert after["response"]
        ps = httpx.get(srv.url + "/api/ps").json()["models"][0]
        assert ps["rpc"] == [workers[0].address]
        assert f"RPC worker {workers[1].address} does not answer; loading" in srv.log_text()
