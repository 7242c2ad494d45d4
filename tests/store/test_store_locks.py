"""The store's cross-process lock protocol, exercised in one process: ``flock`` locks belong to an open file
description, so two :class:`Store` objects on one directory exclude each other exactly as two replicas do.

These are the interleavings a shared store meets: a remover (delete, prune) against a blob that a pull or create
still needs, a start-up prune against another process's live download, two processes downloading one blob, and a
lock file removed while another process waits for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.registry.options import TransferOptions
from corral.registry.pull import pull_model
from corral.store import locks
from corral.store import manifest as mf
from corral.store.store import MissingBlob, Store
from tests.fault_registry import MEDIA_MODEL, FaultRegistry, digest_of, serve

FAST = TransferOptions(min_part=100_000, max_part=100_000, retry_base=0.01, retry_max=0.05, stall_timeout=2.0,
                       api_retry_base=0.01, progress_interval=0.01, state_interval=0.02, connect_timeout=2.0)
WEIGHTS = os.urandom(400_000)


def make_model(store: Store, name: str, weights: bytes) -> str:
    """A model whose weights are ``weights``; returns the weights' digest."""
    digest, size = store.write_bytes(weights)
    cfg, cfg_size = store.write_bytes(mf.ModelConfig(model_format="gguf").to_json_bytes())
    store.write_manifest(name, mf.Manifest(config=mf.Layer(mediaType=mf.MEDIA_CONFIG, digest=cfg, size=cfg_size),
                                           layers=[mf.Layer(mediaType=mf.MEDIA_MODEL, digest=digest, size=size)]))
    return digest


def assert_consistent(store: Store) -> None:
    """Every manifest's blobs are present, of the declared size and content; nothing partial or temporary is left."""
    for record in store.list_models():
        for layer in record.manifest.blobs():
            data = store.blob_path(layer.digest).read_bytes()
            assert len(data) == layer.size and "sha256:" + hashlib.sha256(data).hexdigest() == layer.digest
    leftovers = [p.name for p in store.blobs_dir.iterdir() if "partial" in p.name or p.name.startswith(".")]
    assert leftovers == []


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "models"


def test_a_pinned_blob_survives_another_process_deleting_its_model(root: Path) -> None:
    replica_a, replica_b = Store(root), Store(root)
    weights = make_model(replica_a, "shared:1", WEIGHTS)
    pin = replica_b.pin(weights)  # B is pulling a model with these weights; its manifest is not written yet
    assert pin is not None
    removed = replica_a.delete("shared:1")
    assert weights not in removed and replica_a.has_blob(weights), "a blob another process holds was removed"
    assert replica_a.prune(min_age=0).removed_blobs == []  # nor does a start-up prune take it
    pin.release_and_tidy()
    assert replica_a.prune(min_age=0).removed_blobs == [f"sha256-{weights[7:]}"]
    assert list(replica_a.locks_dir.glob("sha256-*")) == []  # lock files of gone blobs are tidied away


def test_a_blob_written_for_a_manifest_to_be_is_held_until_the_manifest_is_written(root: Path) -> None:
    creator, remover = Store(root), Store(root)
    weights = make_model(remover, "base:1", WEIGHTS)
    # A create in another process writes the same bytes (a layer it shares with base:1) and will reference them.
    digest, size = creator.write_bytes(WEIGHTS)
    assert digest == weights
    remover.delete("base:1")
    assert remover.has_blob(weights)
    cfg, cfg_size = creator.write_bytes(b'{"model_format":"gguf"}')
    creator.write_manifest("derived:1", mf.Manifest(
        config=mf.Layer(mediaType=mf.MEDIA_CONFIG, digest=cfg, size=cfg_size),
        layers=[mf.Layer(mediaType=mf.MEDIA_MODEL, digest=digest, size=size)]))
    assert_consistent(remover)
    remover.delete("derived:1")  # the manifest is written, so the hold is gone: the blob goes with the model
    assert not remover.has_blob(weights)


def test_a_manifest_is_never_written_over_a_removed_blob(root: Path) -> None:
    writer, remover = Store(root), Store(root)
    weights = make_model(writer, "one:1", WEIGHTS)
    raw = writer.read_manifest("one:1").raw
    writer._drop_fresh([weights])
    remover.delete("one:1")
    assert not remover.has_blob(weights)
    with pytest.raises(MissingBlob):  # a clean refusal, never a manifest naming a missing blob
        writer.write_manifest_bytes("two:1", raw)
    assert writer.list_models() == []


def test_prune_leaves_a_live_download_alone_however_old(root: Path) -> None:
    downloader, pruner = Store(root), Store(root)
    downloader.blobs_dir.mkdir(parents=True)
    hex_ = "ab" * 32
    partial = downloader.blobs_dir / f"sha256-{hex_}-partial"
    state = downloader.blobs_dir / f"sha256-{hex_}-partial-0"
    partial.write_bytes(b"\0" * 100)
    state.write_bytes(b'{"N":0,"Offset":0,"Size":100,"Completed":10}\n')
    old = time.time() - 7200
    for path in (partial, state):
        os.utime(path, (old, old))  # a download stalled for two hours, still owned by a live process
    lock = downloader.download_lock("sha256:" + hex_)
    assert lock.acquire(blocking=False)
    assert pruner.prune().removed_blobs == []
    assert partial.exists() and state.exists()
    lock.release(remove=True)
    assert sorted(pruner.prune().removed_blobs) == sorted([partial.name, state.name])


def test_a_lock_file_removed_while_someone_waits_is_not_shared_by_two_holders(root: Path) -> None:
    first = locks.LockFile(root / ".locks" / "x.download")
    assert first.acquire()
    waiter = locks.LockFile(root / ".locks" / "x.download")
    got = threading.Event()

    def wait() -> None:
        waiter.acquire()
        got.set()

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.2)  # the waiter has opened the file and sleeps in flock
    assert not got.is_set()
    first.release(remove=True)  # the holder removes the file: the waiter must not end up holding an orphan inode
    thread.join(timeout=5)
    assert got.is_set()
    third = locks.LockFile(root / ".locks" / "x.download")
    assert not third.acquire(blocking=False), "two processes would both believe they hold the lock"
    waiter.release()
    assert third.acquire(blocking=False)
    third.release(remove=True)


# -- two "processes" pulling: two Stores on one directory, each with its own event loop in its own thread -----


@pytest.fixture
def registry() -> Iterator[FaultRegistry]:
    with serve() as reg:
        reg.add_model("library/tiny", "latest", [(MEDIA_MODEL, WEIGHTS)])
        reg.faults.chunk_delay = 0.01  # ~0.25 s of transfer: the pulls overlap
        yield reg


async def _collect(events: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event async for event in events]


def _pull_in_thread(root: Path, name: str, out: dict[int, Any], key: int) -> threading.Thread:
    def run() -> None:
        try:
            out[key] = asyncio.run(_collect(pull_model(Store(root), name, insecure=True, options=FAST)))
        except Exception as exc:
            out[key] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_two_processes_pulling_one_blob_download_it_once(root: Path, registry: FaultRegistry) -> None:
    name = f"{registry.host}/library/tiny:latest"
    results: dict[int, Any] = {}
    threads = [_pull_in_thread(root, name, results, i) for i in range(2)]
    for thread in threads:
        thread.join(timeout=60)
    for i in range(2):
        assert isinstance(results[i], list) and results[i][-1] == {"status": "success"}, results[i]
    weights = digest_of(WEIGHTS)
    assert sorted(registry.range_starts(weights)) == [0, 100_000, 200_000, 300_000]  # fetched once, not twice
    for events in results.values():
        bars = [e for e in events if e.get("digest") == weights]
        assert bars[-1]["completed"] == len(WEIGHTS)
    store = Store(root)
    assert store.blob_path(weights).read_bytes() == WEIGHTS
    assert_consistent(store)
    assert list(store.locks_dir.glob("sha256-*")) == []


def test_pulls_racing_deletes_leave_a_consistent_store(root: Path, registry: FaultRegistry) -> None:
    name = f"{registry.host}/library/tiny:latest"
    results: dict[int, Any] = {}
    stop = threading.Event()
    errors: list[BaseException] = []

    def delete_repeatedly() -> None:
        store = Store(root)
        while not stop.is_set():
            try:
                store.delete(name)
            except LookupError:
                pass
            except BaseException as exc:
                errors.append(exc)
            time.sleep(0.005)

    deleter = threading.Thread(target=delete_repeatedly)
    deleter.start()
    try:
        pullers = [_pull_in_thread(root, name, results, i) for i in range(3)]
        for thread in pullers:
            thread.join(timeout=60)
    finally:
        stop.set()
        deleter.join()
    assert errors == []
    for result in results.values():  # a pull may lose its manifest to the deleter afterwards, but never fails
        assert isinstance(result, list) and result[-1] == {"status": "success"}, result
    store = Store(root)
    assert_consistent(store)
    store.prune(min_age=0)  # whatever a pin kept is unreferenced now and goes
    on_disk = {p.name for p in store.blobs_dir.iterdir()}
    assert on_disk == {f"sha256-{d[7:]}" for d in store.referenced_digests()}
