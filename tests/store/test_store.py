"""The blob and manifest store: atomic verified writes, Ollama's exact byte layout, lookup, copy, delete, prune."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.errors import (
    CorruptManifest,
    DigestMismatch,
    InvalidDigest,
    ManifestError,
    MissingBlob,
    ModelNotFound,
    StoreError,
)
from corral.store.manifest import (
    MEDIA_CONFIG,
    MEDIA_LICENSE,
    MEDIA_MANIFEST,
    MEDIA_MODEL,
    MEDIA_PARAMS,
    MEDIA_TEMPLATE,
    DraftConfig,
    Layer,
    Manifest,
    ModelConfig,
    RootFS,
    go_json,
)
from corral.store.names import parse_name
from corral.store.store import Store, canonical_digest

# A real manifest, byte for byte, as `ollama pull gemma:2b` stored it (registry bytes, no trailing newline).
# `ollama list` shows this model's ID as b50d6c999e59: the sha256 of exactly these bytes.
GEMMA_2B_MANIFEST = (
    b'{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",'
    b'"config":{"mediaType":"application/vnd.docker.container.image.v1+json",'
    b'"digest":"sha256:887433b89a901c156f7e6944442f3c9e57f3c55d6ed52042cbb7303aea994290","size":483},'
    b'"layers":[{"mediaType":"application/vnd.ollama.image.model",'
    b'"digest":"sha256:c1864a5eb19305c40519da12cc543519e48a0697ecd30e15d5ac228644957d12","size":1678447520},'
    b'{"mediaType":"application/vnd.ollama.image.license",'
    b'"digest":"sha256:097a36493f718248845233af1d3fefe7a303f864fae13bc31a3a9704229378ca","size":8433},'
    b'{"mediaType":"application/vnd.ollama.image.template",'
    b'"digest":"sha256:109037bec39c0becc8221222ae23557559bc594290945a2c4221ab4f303b8871","size":136},'
    b'{"mediaType":"application/vnd.ollama.image.params",'
    b'"digest":"sha256:22a838ceb7fb22755a3b0ae9b4eadde629d19be1f651f73efb8c6b4e2cd0eea0","size":84}]}'
)
GEMMA_LAYER_DIGESTS = [
    "sha256:c1864a5eb19305c40519da12cc543519e48a0697ecd30e15d5ac228644957d12",
    "sha256:097a36493f718248845233af1d3fefe7a303f864fae13bc31a3a9704229378ca",
    "sha256:109037bec39c0becc8221222ae23557559bc594290945a2c4221ab4f303b8871",
    "sha256:22a838ceb7fb22755a3b0ae9b4eadde629d19be1f651f73efb8c6b4e2cd0eea0",
]

HEX = "a" * 64


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "models")


def tmp_files(store: Store) -> list[str]:
    found = []
    for directory in (store.blobs_dir, store.manifests_dir):
        if directory.exists():
            found += [p.name for p in directory.rglob(".tmp-*")]
    return found


def make_model(store: Store, name: str, model: bytes = b"GGUF weights", template: bytes = b"{{ .Prompt }}") -> Manifest:
    model_digest, model_size = store.write_bytes(model)
    tmpl_digest, tmpl_size = store.write_bytes(template)
    config = ModelConfig(
        model_format="gguf",
        model_family="llama",
        model_families=["llama"],
        model_type="134.52M",
        file_type="Q4_1",
        rootfs=RootFS(diff_ids=[model_digest, tmpl_digest]),
    )
    config_digest, config_size = store.write_bytes(config.to_json_bytes())
    manifest = Manifest(
        config=Layer(media_type=MEDIA_CONFIG, digest=config_digest, size=config_size),
        layers=[
            Layer(media_type=MEDIA_MODEL, digest=model_digest, size=model_size),
            Layer(media_type=MEDIA_TEMPLATE, digest=tmpl_digest, size=tmpl_size),
        ],
    )
    store.write_manifest(name, manifest)
    return manifest


def set_age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t), follow_symlinks=False)


# --- digests and blob paths (CVE-2024-37032) ------------------------------------------------------------------


def test_blob_path_accepts_both_separators(store: Store) -> None:
    assert store.blob_path(f"sha256:{HEX}") == store.blobs_dir / f"sha256-{HEX}"
    assert store.blob_path(f"sha256-{HEX}") == store.blobs_dir / f"sha256-{HEX}"
    assert store.blob_path(f"sha256:{HEX.upper()}") == store.blobs_dir / f"sha256-{HEX}"
    assert canonical_digest(f"sha256-{HEX.upper()}") == f"sha256:{HEX}"


@pytest.mark.parametrize(
    "digest",
    [
        "",
        "sha256:abc",
        f"sha256:{HEX}0",
        f"sha256:{HEX[:-1]}",
        f"sha256:{HEX}\n",
        f" sha256:{HEX}",
        f"sha512:{HEX}",
        f"SHA256:{HEX}",
        f"sha256/{HEX}",
        "sha256:../../../../etc/passwd",
        f"../sha256-{HEX}",
        f"sha256:{'g' * 64}",
        f"sha256-{HEX}-partial",
    ],
)
def test_blob_path_rejects_anything_else(store: Store, digest: str) -> None:
    with pytest.raises(InvalidDigest, match=r"^invalid digest format\Z"):
        store.blob_path(digest)
    with pytest.raises(InvalidDigest):
        store.write_bytes(b"x", expected_digest=digest)
    assert not store.blobs_dir.exists() or not any(store.blobs_dir.iterdir())


def test_invalid_digest_is_a_value_error(store: Store) -> None:
    with pytest.raises(ValueError):
        store.blob_path("nope")
    with pytest.raises(InvalidDigest):
        store.blob_path(None)  # type: ignore[arg-type]


# --- writing blobs --------------------------------------------------------------------------------------------


def test_write_blob_hashes_and_places(store: Store) -> None:
    chunks = [b"hello ", b"", b"world"]
    digest, size = store.write_blob(iter(chunks))
    assert digest == "sha256:" + hashlib.sha256(b"hello world").hexdigest()
    assert size == 11
    path = store.blob_path(digest)
    assert path.read_bytes() == b"hello world"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert store.has_blob(digest) and store.blob_size(digest) == 11
    assert store.read_blob(digest) == b"hello world"
    assert tmp_files(store) == []


def test_write_blob_verifies_the_expected_digest(store: Store) -> None:
    good = "sha256:" + hashlib.sha256(b"data").hexdigest()
    dashed_upper = "sha256-" + good.removeprefix("sha256:").upper()
    assert store.write_bytes(b"data", expected_digest=dashed_upper) == (good, 4)
    wrong = f"sha256:{HEX}"
    with pytest.raises(DigestMismatch) as info:
        store.write_bytes(b"other data", expected_digest=wrong)
    got = "sha256:" + hashlib.sha256(b"other data").hexdigest()
    assert str(info.value) == f'digest mismatch, expected "{wrong}", got "{got}"'
    assert not store.has_blob(got) and not store.has_blob(wrong)
    assert tmp_files(store) == []


@pytest.mark.parametrize("error", [RuntimeError("connection reset"), KeyboardInterrupt()])
def test_interrupted_writer_leaves_no_blob(store: Store, error: BaseException) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"partial "
        yield b"data"
        raise error

    with pytest.raises(type(error)):
        store.write_blob(chunks())
    assert list(store.blobs_dir.iterdir()) == []


def test_write_failure_is_a_store_error_without_paths(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(store.root))

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(StoreError) as info:
        store.write_bytes(b"abc")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert "No space left on device" in str(info.value)
    assert str(store.root) not in str(info.value)
    assert list(store.blobs_dir.iterdir()) == []


def test_writing_the_same_blob_twice_is_fine(store: Store) -> None:
    first = store.write_bytes(b"same")
    assert store.write_bytes(b"same") == first
    assert len(list(store.blobs_dir.iterdir())) == 1


# --- importing files ------------------------------------------------------------------------------------------


def test_import_file_hard_links_on_the_same_filesystem(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "model.gguf"
    src.write_bytes(b"GGUF" + b"\x00" * 1000)
    digest, size = store.import_file(src)
    assert digest == "sha256:" + hashlib.sha256(src.read_bytes()).hexdigest()
    assert size == 1004
    assert store.blob_path(digest).stat().st_ino == src.stat().st_ino
    assert src.exists()
    # Importing again finds the blob; nothing changes.
    assert store.import_file(src) == (digest, size)
    assert tmp_files(store) == []


def test_import_file_copies_when_asked_or_when_links_fail(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "a.gguf"
    src.write_bytes(b"one")
    digest, _ = store.import_file(src, link=False)
    assert store.blob_path(digest).stat().st_ino != src.stat().st_ino

    def cross_device(a: object, b: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    other = tmp_path / "b.gguf"
    other.write_bytes(b"two")
    digest2, size2 = store.import_file(other)
    assert (store.read_blob(digest2), size2) == (b"two", 3)
    assert store.blob_path(digest2).stat().st_ino != other.stat().st_ino


def test_import_file_refuses_non_files(store: Store, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a regular file"):
        store.import_file(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(StoreError, match="not a regular file"):
        store.import_file(fifo)
    with pytest.raises(StoreError) as info:
        store.import_file(tmp_path / "secret" / "missing.gguf")
    assert "secret" not in str(info.value)


# --- manifests: written only after their blobs, byte layout ---------------------------------------------------


def test_manifest_is_written_only_after_its_blobs(store: Store) -> None:
    model_digest = "sha256:" + hashlib.sha256(b"weights").hexdigest()
    config = ModelConfig(model_format="gguf").to_json_bytes()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = Manifest(
        config=Layer(media_type=MEDIA_CONFIG, digest=config_digest, size=len(config)),
        layers=[Layer(media_type=MEDIA_MODEL, digest=model_digest, size=7)],
    )
    with pytest.raises(MissingBlob, match="missing"):
        store.write_manifest("m", manifest)
    assert not store.manifest_path("m").exists()

    store.write_bytes(config)
    store.write_bytes(b"weight")  # a different blob; the model layer is still absent
    with pytest.raises(MissingBlob):
        store.write_manifest("m", manifest)
    store.write_bytes(b"weights")
    record = store.write_manifest("m", manifest)
    assert record.name == parse_name("m")
    assert store.manifest_path("m").read_bytes() == manifest.to_json_bytes()


def test_manifest_with_wrong_blob_size_is_refused(store: Store) -> None:
    digest, size = store.write_bytes(b"abc")
    manifest = Manifest(config=Layer(media_type=MEDIA_CONFIG, digest=digest, size=size + 1))
    with pytest.raises(MissingBlob, match="bytes"):
        store.write_manifest("m", manifest)
    assert not store.manifest_path("m").exists()


def test_created_manifest_bytes(store: Store) -> None:
    manifest = make_model(store, "tiny")
    raw = store.manifest_path("tiny").read_bytes()
    assert raw.endswith(b"}\n") and raw.count(b"\n") == 1
    assert raw.startswith(b'{"schemaVersion":2,"mediaType":"' + MEDIA_MANIFEST.encode() + b'","config":{"mediaType":')
    assert b'"from"' not in raw and b'"name"' not in raw and b" " not in raw
    record = store.read_manifest("tiny")
    assert record.digest == hashlib.sha256(raw).hexdigest()
    assert record.size == sum(layer.size for layer in manifest.layers) + manifest.config.size
    assert record.modified_at.tzinfo is not None
    assert record.raw == raw


def test_layer_from_and_name_are_written_when_set() -> None:
    layer = Layer(media_type=MEDIA_MODEL, digest=f"sha256:{HEX}", size=1, from_="llama3:latest", name="t<x>")
    assert go_json(layer.to_dict()) == (
        b'{"mediaType":"application/vnd.ollama.image.model","digest":"sha256:' + HEX.encode() + b'","size":1,'
        b'"from":"llama3:latest","name":"t\\u003cx\\u003e"}\n'
    )


def test_real_ollama_manifest_round_trips_byte_for_byte(store: Store) -> None:
    assert hashlib.sha256(GEMMA_2B_MANIFEST).hexdigest().startswith("b50d6c999e59")
    manifest = Manifest.parse(GEMMA_2B_MANIFEST)
    # Ollama's json.Encoder writes the same bytes plus a newline: same field order, same shape.
    assert manifest.to_json_bytes() == GEMMA_2B_MANIFEST + b"\n"
    assert manifest.size == 1678456656
    assert [layer.media_type for layer in manifest.layers] == [MEDIA_MODEL, MEDIA_LICENSE, MEDIA_TEMPLATE, MEDIA_PARAMS]


def test_real_ollama_config_blob_is_reproduced() -> None:
    config = ModelConfig(
        model_format="gguf",
        model_family="gemma",
        model_families=["gemma"],
        model_type="3B",
        file_type="Q4_0",
        rootfs=RootFS(type="layers", diff_ids=GEMMA_LAYER_DIGESTS),
    )
    raw = config.to_json_bytes()
    # The config layer of the real gemma:2b manifest above: digest and size match exactly.
    assert len(raw) == 483
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == Manifest.parse(GEMMA_2B_MANIFEST).config.digest
    assert ModelConfig.parse(raw).to_json_bytes() == raw


def test_pulled_manifest_is_stored_as_exact_bytes(store: Store) -> None:
    # A store as Ollama leaves it after a pull (sparse blobs stand in for the 1.6 GB of weights).
    manifest = Manifest.parse(GEMMA_2B_MANIFEST)
    store.blobs_dir.mkdir(parents=True)
    for layer in manifest.blobs():
        with open(store.blob_path(layer.digest), "wb") as f:
            f.truncate(layer.size)
    record = store.write_manifest_bytes("gemma:2b", GEMMA_2B_MANIFEST)
    path = store.manifests_dir / "registry.ollama.ai" / "library" / "gemma" / "2b"
    assert path.read_bytes() == GEMMA_2B_MANIFEST
    assert record.digest.startswith("b50d6c999e59")
    assert record.size == 1678456656
    [listed] = store.list_models()
    assert (listed.name.display_shortest(), listed.digest, listed.size) == ("gemma:2b", record.digest, 1678456656)


def test_model_config_omits_empty_fields() -> None:
    raw = ModelConfig().to_json_bytes()
    assert raw == (
        b'{"model_format":"","model_family":"","model_families":null,"model_type":"","file_type":"",'
        b'"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":null}}\n'
    )
    full = ModelConfig(
        model_format="gguf",
        renderer="qwen3",
        parser="qwen3",
        requires="0.9.0",
        capabilities=["completion", "tools"],
        context_length=8192,
        embedding_length=576,
        base_name="Qwen3",
        draft=DraftConfig(model_format="gguf", architecture="llama"),
    ).to_dict()
    assert list(full) == [
        "model_format",
        "model_family",
        "model_families",
        "model_type",
        "file_type",
        "renderer",
        "parser",
        "requires",
        "capabilities",
        "context_length",
        "embedding_length",
        "base_name",
        "draft",
        "architecture",
        "os",
        "rootfs",
    ]
    assert full["draft"] == {"model_format": "gguf", "architecture": "llama"}


def test_model_config_keeps_unknown_fields() -> None:
    raw = b'{"model_format":"gguf","model_families":["x"],"generation_defaults":{"temperature":0.6}}'
    config = ModelConfig.parse(raw)
    assert config.model_families == ["x"]
    assert config.to_dict()["generation_defaults"] == {"temperature": 0.6}


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b'{"schemaVersion":2}',
        b'{"config":{"mediaType":"x","digest":"sha256:../../etc/passwd","size":1}}',
        b'{"config":{"mediaType":"x","digest":"sha256:' + HEX.encode() + b'\\n","size":1}}',
        b'{"config":{"mediaType":"x","digest":"sha256:' + HEX.encode() + b'","size":-1}}',
        b'{"config":{"mediaType":"x","digest":"sha256:' + HEX.encode() + b'","size":"1"}}',
        b'{"config":{"mediaType":"x","digest":"sha256:' + HEX.encode() + b'","size":1},"layers":[{}]}',
    ],
)
def test_malformed_manifests(store: Store, raw: bytes) -> None:
    with pytest.raises(ManifestError):
        Manifest.parse(raw)
    with pytest.raises(CorruptManifest):
        store.write_manifest_bytes("m", raw)
    assert not store.manifest_path("m").exists()


def test_layer_from_and_name_are_read() -> None:
    raw = (
        b'{"schemaVersion":2,"mediaType":"'
        + MEDIA_MANIFEST.encode()
        + b'","config":{"mediaType":"'
        + MEDIA_CONFIG.encode()
        + b'","digest":"sha256:'
        + HEX.encode()
        + b'","size":1},"layers":[{"mediaType":"'
        + MEDIA_MODEL.encode()
        + b'","digest":"sha256:'
        + HEX.encode()
        + b'","size":1,"from":"llama3:latest","status":"ignored"}]}\n'
    )
    manifest = Manifest.parse(raw)
    assert manifest.layers[0].from_ == "llama3:latest"
    assert manifest.to_json_bytes() == raw.replace(b',"status":"ignored"', b"")


def test_null_layers_parse_as_empty() -> None:
    raw = (
        b'{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:' + HEX.encode() + b'","size":1},"layers":null}'
    )
    assert Manifest.parse(raw).layers == []


# --- lookup ---------------------------------------------------------------------------------------------------


def test_resolve_is_case_insensitive_and_returns_the_disk_spelling(store: Store) -> None:
    make_model(store, "MyOrg/SmolLM:Q4_1")
    found = store.resolve("myorg/smollm:q4_1")
    assert found.parts() == ("registry.ollama.ai", "MyOrg", "SmolLM", "Q4_1")
    assert store.read_manifest("MYORG/SMOLLM:Q4_1").name == found
    assert store.resolve(parse_name("registry.ollama.ai/myorg/smollm:Q4_1")) == found
    with pytest.raises(ModelNotFound, match=r"^model 'other:latest' not found\Z"):
        store.resolve("other:latest")
    with pytest.raises(ModelNotFound):
        store.read_manifest("myorg/smollm:q4_0")


def test_write_replaces_a_manifest_that_differs_only_by_case(store: Store) -> None:
    make_model(store, "Llama3:Latest")
    make_model(store, "llama3", model=b"new weights")
    [record] = store.list_models()
    assert record.name.display_shortest() == "Llama3:Latest"
    assert store.read_blob(record.manifest.layers[0].digest) == b"new weights"


def test_list_models_newest_first_and_skips_bad_manifests(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    make_model(store, "old")
    make_model(store, "new")
    make_model(store, "ns/mid:tag")
    set_age(store.manifest_path("old"), 300)
    set_age(store.manifest_path("ns/mid:tag"), 100)
    bad = store.manifest_path("broken")
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"{not json")
    stray = store.manifests_dir / "registry.ollama.ai" / "library" / "new" / "-invalid-tag"
    stray.write_bytes(b"{}")
    (store.manifests_dir / "registry.ollama.ai" / "library" / "new" / ".tmp-manifest-x").write_bytes(b"{}")
    (store.manifests_dir / "loose-file").write_bytes(b"{}")
    with caplog.at_level(logging.WARNING, logger="corral.store.store"):
        names = [r.name.display_shortest() for r in store.list_models()]
    assert names == ["new:latest", "ns/mid:tag", "old:latest"]
    assert "broken" in caplog.text
    assert str(store.root) not in caplog.text


def test_list_models_on_an_empty_store(tmp_path: Path) -> None:
    assert Store(tmp_path / "nothing-here").list_models() == []


# --- copy -----------------------------------------------------------------------------------------------------


def test_copy_is_byte_for_byte(store: Store) -> None:
    make_model(store, "src")
    record = store.copy("SRC", "team/dst:v1")
    assert store.manifest_path("team/dst:v1").read_bytes() == store.manifest_path("src").read_bytes()
    assert record.name.display_shortest() == "team/dst:v1"
    assert record.digest == store.read_manifest("src").digest
    assert {r.name.display_shortest() for r in store.list_models()} == {"src:latest", "team/dst:v1"}
    with pytest.raises(ModelNotFound):
        store.copy("missing", "x")


def test_copy_onto_a_case_variant_replaces_it(store: Store) -> None:
    make_model(store, "a", model=b"A")
    make_model(store, "Copy", model=b"B")
    store.copy("a", "copy")
    assert sorted(r.name.display_shortest() for r in store.list_models()) == ["Copy:latest", "a:latest"]
    assert store.manifest_path("Copy").read_bytes() == store.manifest_path("a").read_bytes()


def test_copy_onto_itself_keeps_the_manifest(store: Store) -> None:
    make_model(store, "same")
    before = store.manifest_path("same").read_bytes()
    store.copy("same", "SAME")
    assert store.manifest_path("same").read_bytes() == before


# --- delete ---------------------------------------------------------------------------------------------------


def test_delete_removes_only_unreferenced_blobs(store: Store) -> None:
    a = make_model(store, "team/a:v1", model=b"shared weights", template=b"template A")
    b = make_model(store, "b", model=b"shared weights", template=b"template B")
    removed = store.delete("TEAM/A:V1")
    assert not store.manifest_path("team/a:v1").exists()
    # Empty parents are gone (model and namespace dirs); the manifests root and other hosts' dirs stay.
    assert not (store.manifests_dir / "registry.ollama.ai" / "team").exists()
    assert store.manifests_dir.is_dir()
    shared = a.layers[0].digest
    assert shared == b.layers[0].digest and store.has_blob(shared)
    assert not store.has_blob(a.layers[1].digest)
    assert set(removed) == {a.layers[1].digest, a.config.digest}
    assert all(store.has_blob(layer.digest) for layer in b.blobs())

    store.delete("b")
    assert list(store.blobs_dir.iterdir()) == []
    assert list(store.manifests_dir.iterdir()) == []
    with pytest.raises(ModelNotFound, match="model 'b' not found"):
        store.delete("b")


def test_delete_keeps_blobs_a_corrupt_manifest_mentions(store: Store) -> None:
    m = make_model(store, "a")
    corrupt = store.manifest_path("corrupt")
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b'{"layers":[{"digest":"' + m.layers[0].digest.encode() + b'"')  # truncated JSON
    store.delete("a")
    assert store.has_blob(m.layers[0].digest)
    assert not store.has_blob(m.layers[1].digest)
    store.delete("corrupt")  # a manifest that no longer parses can still be deleted
    assert not store.has_blob(m.layers[0].digest)


# --- prune ----------------------------------------------------------------------------------------------------


def test_prune_rules(store: Store) -> None:
    kept = make_model(store, "kept")
    orphan_digest, _ = store.write_bytes(b"orphan")
    young_digest, _ = store.write_bytes(b"young orphan")
    partial = store.blobs_dir / f"sha256-{HEX}-partial"
    partial.write_bytes(b"half a download")
    young_partial = store.blobs_dir / f"sha256-{'b' * 64}-partial-0"
    young_partial.write_bytes(b"{}")
    leftover = store.blobs_dir / ".tmp-blob-deadbeef"
    leftover.write_bytes(b"crash")
    (store.blobs_dir / "splits").mkdir()
    empty_dir = store.manifests_dir / "example.com" / "ns" / "gone"
    empty_dir.mkdir(parents=True)
    for path in [*store.blobs_dir.iterdir(), *(store.blob_path(d) for d in (layer.digest for layer in kept.blobs()))]:
        set_age(path, 7200)
    set_age(store.blob_path(young_digest), 60)
    set_age(young_partial, 60)

    result = store.prune(min_age=3600)
    assert not result.skipped
    assert set(result.removed_blobs) == {
        store.blob_path(orphan_digest).name,
        partial.name,
        leftover.name,
    }
    assert store.has_blob(young_digest) and young_partial.exists()
    assert all(store.has_blob(layer.digest) for layer in kept.blobs())
    assert (store.blobs_dir / "splits").is_dir()
    assert not (store.manifests_dir / "example.com").exists()
    assert store.manifests_dir.is_dir()
    assert store.resolve("kept")


def test_prune_with_no_age_limit(store: Store) -> None:
    make_model(store, "m")
    orphan, _ = store.write_bytes(b"orphan")
    assert store.prune(min_age=0).removed_blobs == [store.blob_path(orphan).name]


def test_prune_skips_when_a_manifest_is_corrupt(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    make_model(store, "m")
    orphan, _ = store.write_bytes(b"orphan")
    set_age(store.blob_path(orphan), 7200)
    bad = store.manifest_path("bad")
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="corral.store.store"):
        result = store.prune()
    assert result.skipped and "corrupt" in result.reason
    assert store.has_blob(orphan)
    assert "corrupt manifests" in caplog.text


# --- containment and concurrency ------------------------------------------------------------------------------


def test_paths_stay_inside_the_root(store: Store) -> None:
    for text in ["m", "host:5000/ns/m:t", "a.b/c/d.e:f.g", "x..y"]:
        path = store.manifest_path(text)
        assert os.path.commonpath([path, store.manifests_dir]) == str(store.manifests_dir)
        assert len(path.relative_to(store.manifests_dir).parts) == 4


def test_concurrent_writes_and_deletes(store: Store) -> None:
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(5):
                make_model(store, f"w{i}-{j}", model=b"shared", template=f"t{i}-{j}".encode())
                if j % 2:
                    store.delete(f"w{i}-{j}")
        except MissingBlob:
            pass  # a delete elsewhere removed a shared blob between write and manifest: refused, never dangling
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for record in store.list_models():
        assert all(store.blob_size(layer.digest) == layer.size for layer in record.manifest.blobs())
    assert tmp_files(store) == []


# -- the cached listing key ---------------------------------------------------------------------------------------

_PLACES = st.tuples(st.sampled_from(["h1", "h2"]), st.sampled_from(["n1", "n2"]), st.sampled_from(["m1", "m2"]),
                    st.sampled_from(["t1", "t2"]))
_STEPS = st.lists(st.one_of(
    st.tuples(st.just("write"), _PLACES, st.binary(min_size=1, max_size=3)),
    st.tuples(st.just("remove"), _PLACES, st.just(b"")),
    st.tuples(st.just("mkdir"), _PLACES, st.just(b"")),
    st.tuples(st.just("settle"), _PLACES, st.just(b"")),
), max_size=12)


def _settle(root: Path, age_s: int) -> None:
    """Backdate every mtime, as if the last change were long ago, so that the stamps are trusted."""
    when = time.time() - age_s
    for path in [root, *root.rglob("*")]:
        os.utime(path, (when, when))


@given(steps=_STEPS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_cached_listing_key_always_equals_a_fresh_walk(tmp_path: Path, steps: list[tuple[str, tuple[str, ...], bytes]]
                                                       ) -> None:
    """Another process's changes (another Store on the same root) are seen at once, settled stamps or not."""
    root = tmp_path / f"s{time.monotonic_ns()}"
    watcher = Store(root)
    (root / "manifests").mkdir(parents=True)
    for age, (op, place, data) in enumerate(steps):
        path = root / "manifests" / Path(*place)
        if op == "write":
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                continue
            path.write_bytes(data)  # in place, as Ollama rewrites a manifest
        elif op == "remove" and path.is_file():
            path.unlink()
        elif op == "mkdir":
            path.parent.mkdir(parents=True, exist_ok=True)
        elif op == "settle":
            _settle(root, 100 + 10 * age)  # a different past each time: a same-size rewrite still differs
        assert watcher.listing_key() == Store(root).listing_key(), steps


def test_listing_key_walks_once_things_settle(tmp_path: Path) -> None:
    store = Store(tmp_path / "models")
    digest, size = store.write_blob([b"weights"])
    store.write_manifest("a:1", Manifest(config=Layer(media_type=MEDIA_CONFIG, digest=digest, size=size)))
    first = store.listing_key()
    assert store._listing is None  # just written: not trusted yet
    _settle(store.root, 60)
    settled = store.listing_key()
    assert store._listing is not None and store.listing_key() is settled
    Store(store.root).copy("a:1", "b:1")  # another process
    assert store.listing_key() != settled and len(store.listing_key()) == len(first) + 1


def test_prune_removes_a_dead_writers_temp_blob_at_once_and_spares_a_live_one(store: Store) -> None:
    """A writer holds a flock on its temporary blob while it writes; a file nobody holds is a killed writer's."""
    import fcntl

    store.blobs_dir.mkdir(parents=True, exist_ok=True)
    dead = store.blobs_dir / ".tmp-blob-dead"
    live = store.blobs_dir / ".tmp-blob-live"
    dead.write_bytes(b"x")
    live.write_bytes(b"y")
    with open(live, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        store.prune()
        assert not dead.exists() and live.exists()
