"""Push and pull against a real registry: Debian's ``docker-registry`` (the CNCF distribution server).

The registry runs from a temporary config (filesystem storage in a temporary directory, 127.0.0.1 on a free port)
and is stopped by its PID. Without the binary these tests are skipped; ``.ci/run`` installs it.
"""

from __future__ import annotations

import asyncio
import filecmp
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.errors import RegistryError
from corral.registry.options import TransferOptions
from corral.registry.pull import pull_model
from corral.registry.push import push_model
from corral.store import manifest as mf
from corral.store.store import Store
from tests.conftest import MODEL, ServerProcess, free_port

BINARY = shutil.which("docker-registry") or ("/usr/bin/docker-registry"
                                             if os.access("/usr/bin/docker-registry", os.X_OK) else None)
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(
    BINARY is None, reason="docker-registry is not installed (apt-get install docker-registry; .ci/run does)")]


@dataclass
class Registry:
    host: str
    log: Path

    def blob_gets(self, repo: str) -> int:
        """Blob downloads the registry logged for ``repo`` (access log lines)."""
        marker = f'"GET /v2/{repo}/blobs/'
        return sum(1 for line in self.log.read_text(errors="replace").splitlines() if marker in line)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    assert BINARY is not None
    root = tmp_path_factory.mktemp("docker-registry")
    port = free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n  accesslog:\n    disabled: false\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: corral-tests\n"
    )
    log = root / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([BINARY, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"docker-registry did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)
        yield Registry(f"127.0.0.1:{port}", log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def corral(srv: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "corral", *args], env=srv.env, text=True, capture_output=True,
                          timeout=300)


def test_push_delete_pull_smollm2_round_trip(fresh_server: ServerProcess, registry: Registry) -> None:
    name = f"{registry.host}/library/smollm2:135m"
    store = Store(fresh_server.models)
    assert corral(fresh_server, "cp", MODEL, name).returncode == 0
    original = store.read_manifest(name)
    weights = next(layer.digest for layer in original.manifest.layers if layer.media_type == mf.MEDIA_MODEL)
    kept = fresh_server.models.parent / "weights.gguf"
    shutil.copyfile(store.blob_path(weights), kept)

    r = corral(fresh_server, "push", "--insecure", name)
    assert r.returncode == 0, r.stderr
    assert f"pushing {weights[7:19]}" in r.stderr and "success" in r.stderr

    with fresh_server.client() as http:
        for model in (name, MODEL):
            assert http.request("DELETE", "/api/delete", json={"model": model}).status_code == 200
    assert not store.has_blob(weights)

    r = corral(fresh_server, "pull", "--insecure", name)
    assert r.returncode == 0, r.stderr
    pulled = store.read_manifest(name)
    assert pulled.raw == original.raw  # byte-identical manifest, so the same model digest
    assert pulled.digest == original.digest
    for layer in pulled.manifest.blobs():
        data = store.blob_path(layer.digest).read_bytes()
        assert len(data) == layer.size and "sha256:" + hashlib.sha256(data).hexdigest() == layer.digest
    assert filecmp.cmp(store.blob_path(weights), kept, shallow=False)

    gets = registry.blob_gets("library/smollm2")
    with fresh_server.client() as http:
        r2 = http.post("/api/pull", json={"model": name, "insecure": True})
        events = [json.loads(line) for line in r2.text.splitlines()]
        answer = http.post("/api/generate", json={"model": name, "prompt": "Hi", "stream": False,
                                                   "options": {"num_predict": 2}})
    assert events[-1] == {"status": "success"}
    assert all(e["completed"] == e["total"] for e in events if e.get("digest"))  # every blob a cache hit
    assert registry.blob_gets("library/smollm2") == gets  # the second pull transferred nothing
    assert answer.status_code == 200 and answer.json()["done"] is True  # the pulled model runs


async def _collect(events: Any) -> list[dict[str, Any]]:
    return [event async for event in events]


def test_chunked_push_and_multipart_pull(registry: Registry, tmp_path: Path) -> None:
    source = Store(tmp_path / "a")
    data = os.urandom(700_000)
    digest, size = source.write_bytes(data)
    cfg_digest, cfg_size = source.write_bytes(mf.ModelConfig(model_format="gguf").to_json_bytes())
    manifest = mf.Manifest(config=mf.Layer(mediaType=mf.MEDIA_CONFIG, digest=cfg_digest, size=cfg_size),
                           layers=[mf.Layer(mediaType=mf.MEDIA_MODEL, digest=digest, size=size)])
    name = f"{registry.host}/tests/chunked:v1"
    source.write_manifest(name, manifest)
    small = TransferOptions(min_part=200_000, max_part=200_000, progress_interval=0.01, retry_base=0.01)

    pushed = asyncio.run(_collect(push_model(source, name, insecure=True, options=small)))
    assert pushed[-1] == {"status": "success"}
    log = registry.log.read_text(errors="replace")
    assert log.count('"PATCH /v2/tests/chunked/blobs/uploads/') == 4  # 700 kB in 200 kB chunks

    target = Store(tmp_path / "b")
    asyncio.run(_collect(pull_model(target, name, insecure=True, options=small)))
    assert target.read_manifest(name).raw == source.read_manifest(name).raw
    assert target.blob_path(digest).read_bytes() == data

    with pytest.raises(RegistryError, match=r"^pull model manifest: file does not exist$"):
        asyncio.run(_collect(pull_model(target, f"{registry.host}/tests/absent:v1", insecure=True, options=small)))
