"""``corral export`` / ``corral import``: OCI image-layout archives, a round trip through a real server's store,
and hostile archives that must be refused without touching anything outside the store."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.store.archive import REF_NAME
from corral.store.manifest import MEDIA_CONFIG, MEDIA_LICENSE, Manifest
from corral.store.store import Store
from tests.conftest import MODEL, ServerProcess

pytestmark = pytest.mark.e2e


def corral(env: dict[str, str], *args: str, cwd: Path | None = None,
           timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "corral", *args], env=env, text=True, capture_output=True,
                          timeout=timeout, cwd=cwd)


def _blob_hashes(store: Store, manifest: Manifest) -> dict[str, str]:
    """Each referenced blob's digest -> the sha256 of the file actually in the store."""
    out = {}
    for layer in manifest.blobs():
        out[layer.digest] = "sha256:" + hashlib.sha256(store.blob_path(layer.digest).read_bytes()).hexdigest()
    return out


def test_export_rm_import_round_trip(fresh_server: ServerProcess, tmp_path: Path) -> None:
    env, store = fresh_server.env, Store(fresh_server.models)
    before = store.read_manifest(MODEL)
    blobs_before = _blob_hashes(store, before.manifest)
    archive = tmp_path / "model.tar"

    r = corral(env, "export", MODEL, "-o", str(archive))
    assert r.returncode == 0, r.stderr
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        layout = json.loads(tar.extractfile("oci-layout").read())  # type: ignore[union-attr]
        manifest_bytes = tar.extractfile(f"blobs/sha256/{before.digest}").read()  # type: ignore[union-attr]
    assert layout == {"imageLayoutVersion": "1.0.0"}
    (entry,) = index["manifests"]
    assert entry["digest"] == "sha256:" + before.digest and entry["size"] == len(before.raw)
    assert entry["annotations"][REF_NAME] == "registry.ollama.ai/library/smollm2:135m"
    assert manifest_bytes == before.raw
    assert {f"blobs/sha256/{d.removeprefix('sha256:')}" for d in blobs_before} <= names

    assert corral(env, "rm", MODEL).returncode == 0
    assert not store.has_blob(before.manifest.layers[0].digest)  # the weights really went

    r = corral(env, "import", str(archive))
    assert r.returncode == 0, r.stderr
    assert f"imported '{MODEL}'" in r.stdout
    after = store.read_manifest(MODEL)
    assert after.raw == before.raw
    assert _blob_hashes(store, after.manifest) == blobs_before
    assert all(digest == got for digest, got in blobs_before.items())

    r = corral(env, "run", MODEL, "Say hello.")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()

    # importing again under another name reuses every blob and shares them
    r = corral(env, "import", str(archive), "--name", "again:v1")
    assert r.returncode == 0, r.stderr
    assert store.read_manifest("again:v1").raw == before.raw


def test_export_unknown_model_is_one_line_error(tmp_path: Path) -> None:
    env = _local_env(tmp_path)
    r = corral(env, "export", "no-such-model", "-o", str(tmp_path / "x.tar"))
    assert r.returncode == 1
    assert r.stderr.strip() == "Error: model 'no-such-model' not found"
    assert not list(tmp_path.glob("*.tar")) and not list(tmp_path.glob(".x.tar*"))


# ---------------------------------------------------------------------------------------- hostile archives


def _local_env(tmp_path: Path) -> dict[str, str]:
    """No server: import and export work on the store named by CORRAL_MODELS alone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "CORRAL_"))}
    env.update({"CORRAL_MODELS": str(tmp_path / "store"), "CORRAL_HOME": str(tmp_path / "home"),
                "CORRAL_HOST": "127.0.0.1:9"})
    return env


Member = tuple[tarfile.TarInfo, bytes | None]


def _file(name: str, data: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _layout() -> tuple[list[Member], dict[str, bytes]]:
    """A small valid archive: a manifest with a config and one license layer."""
    config = b'{"model_format":"gguf"}\n'
    layer = b"Apache-2.0\n"
    blobs = {"sha256:" + hashlib.sha256(b).hexdigest(): b for b in (config, layer)}
    (config_d, layer_d) = list(blobs)
    manifest = Manifest.model_validate({
        "config": {"mediaType": MEDIA_CONFIG, "digest": config_d, "size": len(config)},
        "layers": [{"mediaType": MEDIA_LICENSE, "digest": layer_d, "size": len(layer)}],
    }).to_json_bytes()
    m_hex = hashlib.sha256(manifest).hexdigest()
    index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                "digest": "sha256:" + m_hex, "size": len(manifest),
                                                "annotations": {REF_NAME: "tiny:latest"}}]}
    members = [_file("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), _file("index.json", json.dumps(index).encode()),
               _file(f"blobs/sha256/{m_hex}", manifest)]
    members += [_file(f"blobs/sha256/{d.removeprefix('sha256:')}", b) for d, b in blobs.items()]
    return members, {"config": config_d.encode(), "layer": layer_d.encode()}


def _write(path: Path, members: list[Member]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _symlink(members: list[Member], digests: dict[str, bytes]) -> list[Member]:
    info = tarfile.TarInfo(f"blobs/sha256/{digests['layer'].decode().removeprefix('sha256:')}")
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return [m for m in members if m[0].name != info.name] + [(info, None)]


def _hardlink(members: list[Member], digests: dict[str, bytes]) -> list[Member]:
    info = tarfile.TarInfo("blobs/sha256/" + "0" * 64)
    info.type, info.linkname = tarfile.LNKTYPE, "oci-layout"
    return [*members, (info, None)]


def _device(members: list[Member], digests: dict[str, bytes]) -> list[Member]:
    info = tarfile.TarInfo("blobs/sha256/" + "1" * 64)
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return [*members, (info, None)]


def _tampered(members: list[Member], digests: dict[str, bytes]) -> list[Member]:
    target = f"blobs/sha256/{digests['layer'].decode().removeprefix('sha256:')}"
    return [_file(target, b"MIT-000000\n") if m[0].name == target else m for m in members]


def _resized(members: list[Member], digests: dict[str, bytes]) -> list[Member]:
    target = f"blobs/sha256/{digests['layer'].decode().removeprefix('sha256:')}"
    return [_file(target, b"Apache-2.0 and more\n") if m[0].name == target else m for m in members]


def _missing(members: list[Member], digests: dict[str, bytes]) -> list[Member]:
    target = f"blobs/sha256/{digests['layer'].decode().removeprefix('sha256:')}"
    return [m for m in members if m[0].name != target]


HOSTILE: dict[str, tuple[Callable[[list[Member], dict[str, bytes]], list[Member]], str]] = {
    "dotdot": (lambda m, d: [*m, _file("../evil", b"pwned")], "refusing archive member '../evil'"),
    "nested-dotdot": (lambda m, d: [*m, _file("blobs/../../evil", b"pwned")], "the path leaves the image layout"),
    "absolute": (lambda m, d: [*m, _file("/tmp/corral-evil-absolute", b"pwned")], "absolute paths are not allowed"),
    "symlink": (_symlink, "links are not allowed"),
    "hardlink": (_hardlink, "links are not allowed"),
    "device": (_device, "only regular files are allowed"),
    "unknown-path": (lambda m, d: [*m, _file("blobs/sha256/notahash", b"x")], "not part of an OCI image layout"),
    "digest-mismatch": (_tampered, "does not match its digest"),
    "size-mismatch": (_resized, "bytes in the archive but the manifest says"),
    "missing-blob": (_missing, "referenced by the manifest is not in the archive"),
}


def test_a_valid_small_archive_imports_without_a_server(tmp_path: Path) -> None:
    members, _ = _layout()
    r = corral(_local_env(tmp_path), "import", str(_write(tmp_path / "ok.tar", members)))
    assert r.returncode == 0, r.stderr
    assert Store(tmp_path / "store").read_manifest("tiny").name.display_shortest() == "tiny:latest"


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused(tmp_path: Path, case: str) -> None:
    mutate, message = HOSTILE[case]
    members, digests = _layout()
    archive = _write(tmp_path / "bad.tar", mutate(members, digests))
    work = tmp_path / "work"
    work.mkdir()
    r = corral(_local_env(tmp_path), "import", str(archive), cwd=work)
    assert r.returncode == 1, r.stdout
    assert r.stderr.startswith("Error: ") and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    store = tmp_path / "store"
    manifests = [p for p in (store / "manifests").rglob("*") if p.is_file()] if (store / "manifests").exists() else []
    assert manifests == []
    blobs = list((store / "blobs").iterdir()) if (store / "blobs").exists() else []
    assert blobs == []  # nothing half-written, nothing left unreferenced
    assert not (tmp_path / "evil").exists() and not (work / "evil").exists()
    assert not Path("/tmp/corral-evil-absolute").exists()
    assert {p.name for p in tmp_path.iterdir()} <= {"bad.tar", "work", "home", "store"}


def test_import_needs_a_name_when_the_archive_has_none(tmp_path: Path) -> None:
    members, _ = _layout()
    index = json.loads(members[1][1] or b"")
    del index["manifests"][0]["annotations"]
    members[1] = _file("index.json", json.dumps(index).encode())
    archive = _write(tmp_path / "noname.tar", members)
    env = _local_env(tmp_path)
    r = corral(env, "import", str(archive))
    assert r.returncode == 1 and "--name" in r.stderr
    r = corral(env, "import", str(archive), "--name", "named:v2")
    assert r.returncode == 0, r.stderr
    assert Store(tmp_path / "store").read_manifest("named:v2")
