"""What a manifest means: the model's weights, template, system prompt, params, license, messages and capabilities.

Reading a manifest and its small layers costs ~0.5 ms, GGUF metadata more: models are cached per settled manifest
stamp, GGUF metadata per weights digest, since blobs never change.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.errors import InvalidGGUF, ModelError, TemplateError
from corral.store import manifest as mf
from corral.store.gguf_info import GGUFInfo, read_gguf_info
from corral.store.names import ModelName
from corral.store.store import ManifestRecord, Store
from corral.templates.gotemplate import Template, parse


@functools.lru_cache(maxsize=64)
def _gguf_info(path: str, digest: str) -> GGUFInfo:
    try:
        return read_gguf_info(Path(path))
    except InvalidGGUF as exc:  # a truncated or corrupt weights blob: say so, never "internal error"
        raise ModelError(f"failed to load model: invalid GGUF weights: {exc}") from None


@functools.lru_cache(maxsize=256)
def parse_template(source: str) -> Template:
    """Parsed templates are cached by source: models share templates and requests repeat them."""
    return parse(source)


@dataclass
class Model:
    name: ModelName
    record: ManifestRecord
    model_path: Path
    model_digest: str
    template: str | None = None
    system: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    licenses: list[str] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    adapters: list[Path] = field(default_factory=list)
    projectors: list[Path] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    draft: Path | None = None  # a speculative-decoding draft model (Modelfile DRAFT)
    draft_digest: str = ""

    @property
    def display_name(self) -> str:
        return self.name.display_shortest()

    @functools.cached_property
    def info(self) -> GGUFInfo:
        return _gguf_info(str(self.model_path), self.model_digest)

    @functools.cached_property
    def projector_info(self) -> GGUFInfo | None:
        """The first projector's GGUF header (the one the engine loads); None without one."""
        if not self.projectors:
            return None
        path = self.projectors[0]
        return _gguf_info(str(path), path.name)

    @functools.cached_property
    def draft_info(self) -> GGUFInfo | None:
        return None if self.draft is None else _gguf_info(str(self.draft), self.draft_digest)

    def go_template(self) -> Template | None:
        """The parsed TEMPLATE layer; None means the native path (the GGUF's own Jinja template)."""
        if self.template is None:
            return None
        try:
            return parse_template(self.template)
        except TemplateError as exc:
            raise ModelError(f"template error: {exc}") from exc

    def capabilities(self) -> list[str]:
        """Ollama's capability rules (COMPAT §12), in its order."""
        caps: list[str] = list(self.config.get("capabilities") or [])
        info = self.info
        # A reranker's pooled output is a relevance score, not a vector: it ranks, and does nothing else.
        base = "rerank" if info.is_reranker else "embedding" if info.is_embedding else "completion"
        if base not in caps:
            caps.append(base)
        if (info.has_vision or self.projectors) and "vision" not in caps:
            caps.append("vision")
        tmpl = self.go_template() if self.template is not None else None
        if tmpl is not None:
            if tmpl.references("Tools") and "tools" not in caps:
                caps.append("tools")
            if tmpl.references("Suffix") and "insert" not in caps:
                caps.append("insert")
            if tmpl.references("Thinking") and "thinking" not in caps:
                caps.append("thinking")
        elif info.chat_template:
            jinja = info.chat_template
            if ("tools" in jinja or "tool_call" in jinja) and "tools" not in caps:
                caps.append("tools")
            if "<think>" in jinja and "</think>" in jinja and "thinking" not in caps:
                caps.append("thinking")
        return caps


# Manifest path -> (its settled stamp, the Model read from it). Every request reads its model; with the layers'
# files, JSON and the config blob that was ~0.5 ms of a short request's ~4 ms of server CPU. Blobs never change, so
# an unchanged manifest means an unchanged Model, which callers share and never modify.
_MODELS: dict[str, tuple[tuple[int, int, int], Model]] = {}
_MODELS_MAX = 64


def load_model(store: Store, name: str | ModelName) -> Model:
    """Resolve a name (case-insensitively) and read every layer it needs; raises the store's ModelNotFound."""
    resolved = store.resolve(name)
    stamp = store.settled_stamp(resolved)  # taken before reading: a change during the read shows up next time
    key = str(store.manifest_path(resolved))
    if stamp is not None:
        hit = _MODELS.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
    model = _read_model(store, resolved)
    if stamp is not None:
        if len(_MODELS) >= _MODELS_MAX:
            _MODELS.clear()
        _MODELS[key] = (stamp, model)
    return model


def _read_model(store: Store, resolved: ModelName) -> Model:
    record = store.read_manifest(resolved)
    model_path: Path | None = None
    model_digest = ""
    out = Model(name=resolved, record=record, model_path=Path(), model_digest="")
    for layer in record.manifest.layers:
        kind = layer.media_type
        path = store.blob_path(layer.digest)
        if kind == mf.MEDIA_MODEL:
            model_path, model_digest = path, layer.digest
        elif kind in (mf.MEDIA_TEMPLATE, mf.MEDIA_PROMPT):
            out.template = path.read_text(encoding="utf-8")
        elif kind == mf.MEDIA_SYSTEM:
            out.system = path.read_text(encoding="utf-8")
        elif kind == mf.MEDIA_PARAMS:
            out.params = _read_json(path, dict)
        elif kind == mf.MEDIA_MESSAGES:
            out.messages = _read_json(path, list)
        elif kind == mf.MEDIA_LICENSE:
            out.licenses.append(path.read_text(encoding="utf-8"))
        elif kind == mf.MEDIA_ADAPTER:
            out.adapters.append(path)
        elif kind == mf.MEDIA_PROJECTOR:
            out.projectors.append(path)
        elif kind == mf.MEDIA_DRAFT:
            out.draft, out.draft_digest = path, layer.digest
    if model_path is None:
        raise ModelError(f"model '{resolved.display_shortest()}' has no weights layer")
    out.model_path, out.model_digest = model_path, model_digest
    if record.manifest.config.digest and store.has_blob(record.manifest.config.digest):
        try:
            out.config = _read_json(store.blob_path(record.manifest.config.digest), dict)
        except ModelError:
            out.config = {}
    return out


def _read_json(path: Path, kind: type) -> Any:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"unreadable layer {path.name}: {exc}") from exc
    if not isinstance(value, kind):
        raise ModelError(f"layer {path.name} is not a JSON {kind.__name__}")
    return value
