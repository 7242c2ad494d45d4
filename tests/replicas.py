"""Several Corral replicas on one model store, and nginx in front of them on the shipped deploy/nginx.conf.

Used by tests/deploy/test_deploy_nginx.py, tests/store/test_shared_store.py and deploy/bench_affinity.py. Every
process started here is stopped by its PID: replicas like conftest's servers (SIGTERM, then SIGKILL), nginx with
SIGQUIT's graceful stop and SIGTERM after it. nginx runs with ``-p <tmp>``: pid file, logs and temporary files stay
in the test's directory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import httpx

from tests.conftest import ROOT, ServerProcess, free_port, stop_server

DEPLOY = ROOT / "deploy"
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                       if os.access(p, os.X_OK)), None)
JS_MODULE = next((p for p in ("/usr/lib/nginx/modules/ngx_http_js_module.so",
                              "/usr/local/lib/nginx/modules/ngx_http_js_module.so") if os.path.exists(p)), None)


def nginx_conf_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("corral_nginx_conf", DEPLOY / "nginx_conf.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def spawn_replica(tmp: Path, port: int, models: Path, replica_id: str,
                  extra_env: dict[str, str] | None = None) -> ServerProcess:
    """Start ``corral serve`` on 127.0.0.1:``port`` with the shared store ``models`` and a home of its own."""
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "CORRAL_"))}
    env.update({"CORRAL_HOST": f"127.0.0.1:{port}", "CORRAL_MODELS": str(models), "CORRAL_HOME": str(home),
                "CORRAL_NUM_THREADS": "1", "CORRAL_REPLICA_ID": replica_id})
    env.update(extra_env or {})
    log = tmp / f"{replica_id}-{int(time.time() * 1000)}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", "from corral.http.server import serve; serve()"],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=tmp)
    return ServerProcess(url=f"http://127.0.0.1:{port}", host=f"127.0.0.1:{port}", models=models, home=home,
                         proc=proc, log=log, env=env)


def wait_ready(replica: ServerProcess, timeout: float = 90) -> ServerProcess:
    """Until ``GET /readyz`` says 200; stops the replica and raises if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if replica.proc.poll() is not None:
            raise RuntimeError(f"replica {replica.host} exited early:\n{replica.log_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(replica.url + "/readyz", timeout=1).status_code == 200:
                return replica
        time.sleep(0.1)
    stop_server(replica.proc)
    raise RuntimeError(f"replica {replica.host} was not ready in {timeout:g} s")


def start_replica(tmp: Path, port: int, models: Path, replica_id: str,
                  extra_env: dict[str, str] | None = None) -> ServerProcess:
    return wait_ready(spawn_replica(tmp, port, models, replica_id, extra_env))


@dataclass
class Cluster:
    """Replicas by ID, in start order; ``replace`` restarts one on its port after a kill."""

    root: Path
    models: Path
    replicas: dict[str, ServerProcess]
    env: dict[str, str]

    def replace(self, replica_id: str) -> ServerProcess:
        old = self.replicas[replica_id]
        stop_server(old.proc)
        port = int(old.host.rsplit(":", 1)[1])
        self.replicas[replica_id] = start_replica(self.root / replica_id, port, self.models, replica_id, self.env)
        return self.replicas[replica_id]

    def by_port(self, port: int) -> str:
        return next(rid for rid, r in self.replicas.items() if r.host.endswith(f":{port}"))


@contextlib.contextmanager
def cluster(tmp: Path, count: int, extra_env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """``count`` replicas (r1, r2, ...) sharing ``tmp/models``, started at once as compose starts them: each seeds
    the bundled models into the one store and prunes it at the same time as the others."""
    models = tmp / "models"
    group = Cluster(tmp, models, {}, dict(extra_env or {}))
    try:
        for i in range(1, count + 1):
            rid = f"r{i}"
            group.replicas[rid] = spawn_replica(tmp / rid, free_port(), models, rid, group.env)
        for replica in group.replicas.values():
            wait_ready(replica)
        yield group
    finally:
        for replica in group.replicas.values():
            runners: list[int] = []
            with contextlib.suppress(Exception):
                runners = replica.runner_pids()
            stop_server(replica.proc)
            for pid in runners:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@dataclass
class Nginx:
    proc: subprocess.Popen[bytes]
    url: str
    prefix: Path
    conf: Path

    @property
    def access_log(self) -> Path:
        return self.prefix / "access.log"

    def error_log(self) -> str:
        return (self.prefix / "error.log").read_text(errors="replace")


def render_conf(prefix: Path, replicas: list[str], listen: str, *, affinity: bool = True) -> Path:
    prefix.mkdir(parents=True, exist_ok=True)
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / f"{name}_temp").mkdir(exist_ok=True)
    text = nginx_conf_module().render(replicas, listen=listen, js_dir=DEPLOY, access_log=str(prefix / "access.log"),
                                      prefix=prefix, affinity=affinity, js_module=JS_MODULE,
                                      user="root" if os.geteuid() == 0 else None)
    conf = prefix / "nginx.conf"
    conf.write_text(text)
    return conf


def check_conf(conf: Path, prefix: Path) -> subprocess.CompletedProcess[str]:
    assert NGINX is not None
    return subprocess.run([NGINX, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True,
                          timeout=60)


@contextlib.contextmanager
def nginx(prefix: Path, replicas: list[str], *, affinity: bool = True) -> Iterator[Nginx]:
    """nginx on a free loopback port in front of ``replicas`` (host:port), from the shipped configuration."""
    assert NGINX is not None
    port = free_port()
    conf = render_conf(prefix, replicas, f"127.0.0.1:{port}", affinity=affinity)
    proc = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    server = Nginx(proc, f"http://127.0.0.1:{port}", prefix, conf)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start:\n{server.error_log() if conf.exists() else ''}")
            time.sleep(0.05)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)  # graceful: workers finish their connections
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
