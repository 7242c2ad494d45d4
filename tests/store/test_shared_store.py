"""Three replicas (separate ``corral serve`` processes) on one CORRAL_MODELS, driven through their HTTP APIs at once:
pulls of one model from the tests' registry, deletes, copies and creates racing each other leave a consistent
store, and each replica sees what another one pulled or deleted without a restart."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from corral.store.store import Store
from tests.fault_registry import MEDIA_MODEL, FaultRegistry, serve
from tests.replicas import Cluster, cluster
from tests.store.test_gguf_info import write_gguf

pytestmark = pytest.mark.e2e

TEMPLATE = "application/vnd.ollama.image.template"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultRegistry]:
    weights = write_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", tensors={
        "blk.0.ffn_up.weight": np.random.default_rng(1).standard_normal((512, 512)).astype(np.float32)}).read_bytes()
    with serve() as reg:
        reg.add_model("library/tiny", "latest", [(MEDIA_MODEL, weights), (TEMPLATE, b"{{ .Prompt }}")])
        reg.faults.chunk_delay = 0.01  # ~1 MiB in 16 KiB chunks: each pull takes ~0.7 s, so they overlap
        yield reg


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(tmp_path_factory.mktemp("shared"), 3, {"CORRAL_NOBUNDLED": "1"}) as group:
        yield group


def names(replica_url: str) -> set[str]:
    return {m["name"] for m in httpx.get(replica_url + "/api/tags", timeout=30).json()["models"]}


def pull(url: str, name: str) -> httpx.Response:
    return httpx.post(url + "/api/pull", json={"model": name, "insecure": True, "stream": False}, timeout=120)


def assert_consistent(models: Path) -> None:
    """No manifest names a missing or wrong blob; no partial download or temporary file is left anywhere."""
    store = Store(models)
    for record in store.list_models():
        for layer in record.manifest.blobs():
            data = store.blob_path(layer.digest).read_bytes()
            assert "sha256:" + hashlib.sha256(data).hexdigest() == layer.digest and len(data) == layer.size
    leftovers = [p for p in models.rglob("*") if p.is_file()
                 and ("partial" in p.name or p.name.startswith(".tmp-"))]
    assert leftovers == []


def test_a_replica_sees_another_replicas_pull_and_delete_without_restart(replicas: Cluster,
                                                                           registry: FaultRegistry) -> None:
    a, b, c = (r.url for r in replicas.replicas.values())
    name = f"{registry.host}/library/tiny:latest"
    assert name not in names(b)  # B has answered /api/tags before the pull: its listing is cached
    assert pull(a, name).json() == {"status": "success"}
    assert name in names(b) and name in names(c)  # no waiting, no restart
    shown = httpx.post(b + "/api/show", json={"model": name}, timeout=30)
    assert shown.status_code == 200 and shown.json()["template"] == "{{ .Prompt }}"
    assert httpx.request("DELETE", b + "/api/delete", json={"model": name}, timeout=30).status_code == 200
    assert name not in names(a) and name not in names(c)
    assert httpx.post(a + "/api/show", json={"model": name}, timeout=30).status_code == 404
    assert_consistent(replicas.models)


def test_pulls_copies_creates_and_deletes_racing_on_three_replicas(replicas: Cluster,
                                                                    registry: FaultRegistry) -> None:
    a, b, c = (r.url for r in replicas.replicas.values())
    name = f"{registry.host}/library/tiny:latest"
    results: list[tuple[str, int, Any]] = []
    lock = threading.Lock()

    def record(kind: str, response: httpx.Response) -> None:
        try:
            body: Any = response.json()
        except json.JSONDecodeError:
            body = response.text
        with lock:
            results.append((kind, response.status_code, body))

    def puller(url: str) -> None:
        for _ in range(3):
            record("pull", pull(url, name))

    def deleter(url: str) -> None:
        for i in range(12):
            record("delete", httpx.request("DELETE", url + "/api/delete", json={"model": name}, timeout=60))
            record("delete-copy", httpx.request("DELETE", url + "/api/delete", json={"model": f"copy{i % 3}"},
                                                timeout=60))
            threading.Event().wait(0.15)

    def copier(url: str) -> None:
        for i in range(6):
            record("copy", httpx.post(url + "/api/copy", json={"source": name, "destination": f"copy{i % 3}"},
                                      timeout=60))
            record("create", httpx.post(url + "/api/create", json={
                "model": f"derived{i % 2}", "from": name, "system": f"variant {i}", "stream": False}, timeout=60))
            threading.Event().wait(0.1)

    threads = [threading.Thread(target=puller, args=(a,)), threading.Thread(target=puller, args=(b,)),
               threading.Thread(target=deleter, args=(c,)), threading.Thread(target=copier, args=(b,)),
               threading.Thread(target=copier, args=(c,))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads)

    by_kind: dict[str, list[tuple[int, Any]]] = {}
    for kind, status, body in results:
        by_kind.setdefault(kind, []).append((status, body))
    # A pull never fails for a delete on another replica: its blobs are pinned until its manifest is written.
    assert by_kind["pull"] == [(200, {"status": "success"})] * 6
    # A copy or create whose source another replica has just deleted is refused cleanly; nothing else goes wrong.
    for kind in ("copy", "create", "delete", "delete-copy"):
        for status, body in by_kind[kind]:
            assert status in (200, 404) or (kind == "create" and status in (400, 500) and "error" in body), \
                (kind, status, body)
    assert any(status == 200 for status, _ in by_kind["delete"])  # the deletes did hit the pulled model
    assert_consistent(replicas.models)

    # Every replica's listing is the store as it is now.
    on_disk = {r.name.display_shortest() for r in Store(replicas.models).list_models()}
    for url in (a, b, c):
        assert names(url) == on_disk

    # What the racing left unreferenced (blobs kept while a pull held them) goes at the next prune.
    store = Store(replicas.models)
    store.prune(min_age=0)
    assert {p.name for p in store.blobs_dir.iterdir()} == {f"sha256-{d[7:]}" for d in store.referenced_digests()}
    assert pull(a, name).json() == {"status": "success"}
    assert_consistent(replicas.models)
