"""``corral run ./model.gguf``: the CLI adds a local GGUF to the store by content digest (hard-linked, not
copied) and runs it; a second run finds it without importing again."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import bundled_file

from corral.authoring.bundled import BUNDLED
from corral.cli.run import gguf_model_name, is_gguf_path
from corral.store.manifest import MEDIA_MODEL, MEDIA_TEMPLATE
from corral.store.store import Store
from tests.conftest import running_server


def corral(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "corral", *args], env=env, text=True, capture_output=True,
                          timeout=timeout)


def test_gguf_model_name_is_a_valid_sanitized_name() -> None:
    digest = "sha256:" + "AB" * 32
    assert gguf_model_name(Path("/x/SmolLM2-135M-Instruct.Q4_1.gguf"), digest) == (
        "gguf/smollm2-135m-instruct.q4_1:" + "ab" * 6)
    assert gguf_model_name(Path("My Model (v2)!.gguf"), digest) == "gguf/my-model-v2:" + "ab" * 6
    assert gguf_model_name(Path("...gguf"), digest).startswith("gguf/model:")
    assert gguf_model_name(Path("x" * 200 + ".gguf"), digest) == "gguf/" + "x" * 80 + ":" + "ab" * 6


def test_is_gguf_path(tmp_path: Path) -> None:
    model = tmp_path / "m.GGUF"
    model.write_bytes(b"GGUF")
    assert is_gguf_path(str(model))
    assert not is_gguf_path(str(tmp_path / "absent.gguf"))
    assert not is_gguf_path("smollm2:135m")
    (tmp_path / "dir.gguf").mkdir()
    assert not is_gguf_path(str(tmp_path / "dir.gguf"))


@pytest.mark.e2e
def test_run_a_gguf_file_imports_it_by_hard_link_once(tmp_path: Path) -> None:
    bundled = bundled_file(BUNDLED[0].package, BUNDLED[0].filename)
    gguf = tmp_path / "SmolLM2 Copy.gguf"
    shutil.copyfile(bundled, gguf)  # a copy: the store must not already hold this inode
    digest = "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()
    name = f"gguf/smollm2-copy:{digest[7:19]}"

    # NOBUNDLED: otherwise the store already holds these bytes (as the bundled model) and nothing is linked
    with running_server(tmp_path, {"CORRAL_NOBUNDLED": "1"}) as server:
        store = Store(server.models)
        r = corral(server.env, "run", str(gguf), "Hi")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip()
        assert f"as {name}" in r.stderr

        record = store.read_manifest(name)
        model_layer = record.manifest.first_layer(MEDIA_MODEL)
        assert model_layer is not None and model_layer.digest == digest
        assert record.manifest.first_layer(MEDIA_TEMPLATE) is not None  # chatml was recognised
        blob = store.blob_path(digest)
        assert os.stat(blob).st_ino == os.stat(gguf).st_ino  # a hard link, not a copy
        assert os.stat(gguf).st_nlink == 2
        mtime = store.manifest_path(record.name).stat().st_mtime_ns

        r = corral(server.env, "run", str(gguf), "Hi")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip()
        assert "importing" not in r.stderr
        assert store.manifest_path(record.name).stat().st_mtime_ns == mtime
        assert os.stat(gguf).st_nlink == 2

        listed = corral(server.env, "list")
        assert name in listed.stdout
