"""``/api/pull``, ``/api/push`` and ``corral pull/push`` through a real ``corral serve`` and the fault registry."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, running_server
from tests.fault_registry import MEDIA_MODEL, FaultRegistry, digest_of, serve

pytestmark = pytest.mark.e2e

WEIGHTS = os.urandom(400_000)


@pytest.fixture
def registry() -> Iterator[FaultRegistry]:
    with serve() as reg:
        reg.add_model("library/tiny", "latest", [(MEDIA_MODEL, WEIGHTS)])
        yield reg


def corral(srv: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "corral", *args], env=srv.env, text=True, capture_output=True,
                          timeout=120)


def lines(response: httpx.Response) -> list[dict[str, object]]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def test_bad_requests_are_answered_before_streaming(server: ServerProcess) -> None:
    with server.client() as http:
        r = http.post("/api/pull", json={})
        assert (r.status_code, r.json()) == (400, {"error": "model is required"})
        r = http.post("/api/pull", json={"model": "a/b/c/d/e"})
        assert (r.status_code, r.json()) == (400, {"error": "invalid model name"})
        r = http.post("/api/push", json={"name": "no-such-model"})
        assert r.status_code == 404 and "not found" in r.json()["error"]
        r = http.post("/api/pull", json={"model": "http://127.0.0.1:9/library/x"})
        assert "insecure protocol http" in r.text


def test_unknown_model_streams_ollamas_error_and_non_stream_is_a_500(server: ServerProcess,
                                                                       registry: FaultRegistry) -> None:
    name = f"{registry.host}/library/nothing"
    with server.client() as http:
        r = http.post("/api/pull", json={"model": name, "insecure": True})
        assert r.status_code == 200
        assert lines(r) == [{"status": "pulling manifest"}, {"error": "pull model manifest: file does not exist"}]
        r = http.post("/api/pull", json={"model": name, "insecure": True, "stream": False})
        assert (r.status_code, r.json()) == (500, {"error": "pull model manifest: file does not exist"})


def test_cli_pull_push_and_failures(fresh_server: ServerProcess, registry: FaultRegistry) -> None:
    name = f"{registry.host}/library/tiny:latest"
    r = corral(fresh_server, "pull", "--insecure", name)
    assert r.returncode == 0, r.stderr
    assert "success" in r.stderr and f"pulling {digest_of(WEIGHTS)[7:19]}" in r.stderr
    assert f"{registry.host}/library/tiny:latest" in corral(fresh_server, "list").stdout
    with fresh_server.client() as http:
        r2 = http.post("/api/pull", json={"model": name, "insecure": True, "stream": False})
        assert (r2.status_code, r2.json()) == (200, {"status": "success"})

    with serve() as target:
        pushed = f"{target.host}/someone/tiny:v2"
        assert corral(fresh_server, "cp", name, pushed).returncode == 0
        r = corral(fresh_server, "push", "--insecure", pushed)
        assert r.returncode == 0, r.stderr
        assert f"You can find your model at:\n\n\t{pushed}" in r.stdout
        assert target.blobs[digest_of(WEIGHTS)] == WEIGHTS
        manifest = (fresh_server.models / "manifests" / target.host / "someone" / "tiny" / "v2").read_bytes()
        assert target.manifests[("someone/tiny", "v2")] == manifest

    r = corral(fresh_server, "pull", "--insecure", f"{registry.host}/library/missing")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == "Error: pull model manifest: file does not exist"
    r = corral(fresh_server, "pull", "127.0.0.1:9/library/x")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (
        "Error: pull model manifest: cannot reach registry 127.0.0.1:9: connection refused "
        "(is a registry running at 127.0.0.1:9?)")


def test_a_killed_server_resumes_the_download_after_restart(tmp_path: Path, registry: FaultRegistry) -> None:
    models = tmp_path / "models"
    name = f"{registry.host}/library/tiny:latest"
    weights = digest_of(WEIGHTS)
    state_file = models / "blobs" / f"sha256-{weights[7:]}-partial-0"
    registry.faults.stall_after = 150_000
    registry.faults.stall_times = 1
    registry.faults.stall_seconds = 20
    env = {"CORRAL_NOBUNDLED": "1"}
    with running_server(tmp_path / "first", env, models) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as http, \
            http.stream("POST", "/api/pull", json={"model": name, "insecure": True}) as response:
        for line in response.iter_lines():
            event = json.loads(line)
            if event.get("digest") == weights and int(event.get("completed", 0)) >= 150_000:
                break
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the part state is saved twice a second
            if state_file.exists() and json.loads(state_file.read_text() or "{}").get("Completed", 0) > 0:
                break
            time.sleep(0.05)
        os.kill(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait()
    saved = json.loads(state_file.read_text())["Completed"]
    assert 0 < saved <= 150_000
    assert not (models / "manifests").exists() or not any((models / "manifests").rglob("latest"))

    with running_server(tmp_path / "second", env, models) as srv, srv.client() as http:
        r = http.post("/api/pull", json={"model": name, "insecure": True, "stream": False})
        assert r.json() == {"status": "success"}
    assert registry.range_starts(weights)[-1] == saved
    assert (models / "blobs" / f"sha256-{weights[7:]}").read_bytes() == WEIGHTS
    assert not list((models / "blobs").glob("*partial*"))


def test_pull_says_whether_the_registry_is_out_of_reach_or_the_model_is_missing(server: ServerProcess,
                                                                                registry: FaultRegistry) -> None:
    """`corral pull` tells an unreachable registry (offline, with what to do instead) from a model that is not
    there (Ollama's "file does not exist"), where before both read "cannot reach registry"."""
    offline = corral(server, "pull", "nosuch.invalid/library/nosuchmodel")  # .invalid never resolves
    assert offline.returncode == 1
    assert offline.stderr.strip().splitlines()[-1] == (
        "Error: pull model manifest: cannot reach registry nosuch.invalid: cannot resolve the host name "
        f"({offline.stderr.split('cannot resolve the host name (')[1].split(')')[0]}) "
        "(offline? pull from a local registry, or add a model with `corral import` or `corral create`)")
    missing = corral(server, "pull", "--insecure", f"{registry.host}/library/nosuchmodel")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1] == "Error: pull model manifest: file does not exist"
    # Ollama's own registry: offline here (the hint), or, on a machine that reaches it, not found.
    default = corral(server, "pull", "nosuchmodel-corral-test").stderr.strip().splitlines()[-1]
    assert default == "Error: pull model manifest: file does not exist" or (
        default.startswith("Error: pull model manifest: cannot reach registry registry.ollama.ai: ")
        and default.endswith("(offline? pull from a local registry, or add a model with `corral import` or "
                             "`corral create`)")), default
