"""The bundled models carry Ollama's library definitions, and a store seeded by an earlier Corral is updated."""

from __future__ import annotations

from pathlib import Path

from corral.authoring import bundled
from corral.store import manifest as mf
from corral.store.model import load_model
from corral.store.store import Store
from tests.conftest import SMOL_FILE, bundled_file

SMOL = "smollm2:135m"


def _layers(store: Store, name: str) -> dict[str, bytes]:
    record = store.read_manifest(store.resolve(name))
    return {la.media_type: store.blob_path(la.digest).read_bytes() for la in record.manifest.layers
            if la.media_type != mf.MEDIA_MODEL}


def test_smollm2_has_ollamas_template_tools_and_no_system(tmp_path: Path) -> None:
    bundled_file(*SMOL_FILE)
    store = Store(tmp_path / "models")
    assert SMOL in bundled.seed(store)
    layers = _layers(store, SMOL)
    template = layers[mf.MEDIA_TEMPLATE].decode()
    assert template == bundled.builtin_template("smollm2")[0]
    assert "{{- if .Tools }}<|im_start|>system" in template and "<tool_call>[" in template
    assert mf.MEDIA_SYSTEM not in layers
    assert load_model(store, SMOL).capabilities() == ["completion", "tools"]


def test_an_earlier_bundled_definition_is_updated_and_a_user_model_kept(tmp_path: Path) -> None:
    path = bundled_file(*SMOL_FILE)
    store = Store(tmp_path / "models")
    old = dict(template=bundled.builtin_template("chatml"),
               system="You are a helpful AI assistant named SmolLM, trained by Hugging Face")
    bundled.add_gguf_model(store, SMOL, path, **old)  # what Corral seeded before
    assert SMOL in bundled.seed(store)
    assert mf.MEDIA_SYSTEM not in _layers(store, SMOL)
    assert "tools" in load_model(store, SMOL).capabilities()
    # A model re-created under the bundled name (any other template) is the user's: left as it is.
    bundled.add_gguf_model(store, SMOL, path, template=("{{ .Prompt }}", {}), system="mine")
    assert bundled.seed(store) == []
    assert _layers(store, SMOL)[mf.MEDIA_SYSTEM] == b"mine"
