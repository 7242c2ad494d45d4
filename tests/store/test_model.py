"""``load_model``'s cache: a settled manifest is read once, and any change to it is seen at the next request."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from corral.store import manifest as mf
from corral.store.model import load_model
from corral.store.store import Store


def _write(store: Store, name: str, system: str) -> None:
    weights, wsize = store.write_bytes(b"GGUF-not-really")
    sys_digest, sys_size = store.write_bytes(system.encode())
    cfg_digest, cfg_size = store.write_bytes(b"{}")
    store.write_manifest(name, mf.Manifest(
        config=mf.Layer(mediaType=mf.MEDIA_CONFIG, digest=cfg_digest, size=cfg_size),
        layers=[mf.Layer(mediaType=mf.MEDIA_MODEL, digest=weights, size=wsize),
                mf.Layer(mediaType=mf.MEDIA_SYSTEM, digest=sys_digest, size=sys_size)]))


def _backdate(store: Store, name: str, age_s: float) -> None:
    when = time.time() - age_s
    os.utime(store.manifest_path(store.resolve(name)), (when, when))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "models")


def test_a_settled_manifest_is_read_once(store: Store) -> None:
    _write(store, "m:1", "first")
    assert load_model(store, "m:1") is not load_model(store, "m:1")  # just written: not trusted yet
    _backdate(store, "m:1", 60)
    first = load_model(store, "m:1")
    assert load_model(store, "M:1") is first and first.system == "first"  # any spelling, the same model


def test_a_rewrite_is_seen_at_once(store: Store) -> None:
    _write(store, "m:1", "first")
    _backdate(store, "m:1", 60)
    assert load_model(store, "m:1").system == "first"
    _write(Store(store.root), "m:1", "second")  # another process replaces it
    assert load_model(store, "m:1").system == "second"


def test_an_in_place_rewrite_of_the_same_size_is_seen(store: Store) -> None:
    _write(store, "m:1", "aaaa")
    _write(store, "m:2", "bbbb")
    _backdate(store, "m:1", 60)
    assert load_model(store, "m:1").system == "aaaa"
    path = store.manifest_path(store.resolve("m:1"))
    path.write_bytes(store.manifest_path(store.resolve("m:2")).read_bytes())  # as Ollama writes: same inode
    _backdate(store, "m:1", 30)  # even with an old mtime, just a different one
    assert load_model(store, "m:1").system == "bbbb"


def test_a_removed_model_is_not_found(store: Store) -> None:
    from corral.errors import ModelNotFound

    _write(store, "m:1", "first")
    _backdate(store, "m:1", 60)
    load_model(store, "m:1")
    store.delete("m:1")
    with pytest.raises(ModelNotFound):
        load_model(store, "m:1")
