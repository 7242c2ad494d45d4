"""``/api/create``: build a model's manifest from a base model or uploaded files plus Modelfile settings.

The flow follows Ollama's ``CreateHandler``/``createModel``: base layers come from an existing model (reused with
``from`` set to its name) or from the uploaded files (GGUF as they are, safetensors through conversion); a GGUF's
chat template is recognised and may add template, params and system layers; then the request's template, system,
licenses, parameters and messages are applied (a new layer replaces the old one of its type; licenses add up;
parameters merge, the request's keys winning); the config blob is written, then the manifest, and the layers of
the model's previous manifest that nothing references any more are removed (unless ``NOPRUNE``).

:meth:`Creator.prepare` does every check that can fail on the request itself, so bad input is an HTTP 4xx before
any output; :meth:`Creator.run` does the work and yields Ollama's progress objects.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral import config as env
from corral.authoring import gojson
from corral.authoring.inputs import NOT_GGUF, InputFile, collect
from corral.errors import CreateError, InvalidGGUF, InvalidModelName, ModelNotFound, StoreError, TemplateError
from corral.inference import options, speculative
from corral.store import manifest as mf
from corral.store.gguf_info import GGUFInfo, read_gguf_info
from corral.store.names import ModelName, parse_name
from corral.store.store import Store, canonical_digest
from corral.templates.gotemplate import parse

log = logging.getLogger("corral.create")

QUANTIZE_DIGEST = "0000000000000000000"  # Ollama's placeholder digest for the quantize progress bar
QUANTIZE_SOURCES = ("F32", "F16", "BF16")
# Ollama's ggml.ParseFileType names (llama.cpp's file types), with llama-quantize's short aliases.
QUANT_TYPES = frozenset({
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q2_K_S", "Q3_K", "Q3_K_S", "Q3_K_M",
    "Q3_K_L", "Q4_K", "Q4_K_S", "Q4_K_M", "Q5_K", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS",
    "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4",
})
_SEMVER_RE = re.compile(r"v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")
_TEMPLATE_TYPES = (mf.MEDIA_TEMPLATE, mf.MEDIA_PROMPT)
_WEIGHT_TYPES = {"model": mf.MEDIA_MODEL, "projector": mf.MEDIA_PROJECTOR, "adapter": mf.MEDIA_ADAPTER}

Progress = dict[str, Any]


@dataclass
class CreateSpec:
    """What ``/api/create`` was asked, independent of the HTTP layer."""

    model: str
    from_: str = ""
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    template: str = ""
    system: str = ""
    parameters: dict[str, Any] | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    license: list[str] = field(default_factory=list)
    quantize: str = ""
    renderer: str = ""
    parser: str = ""
    requires: str = ""
    draft_files: dict[str, str] | None = None  # Modelfile DRAFT: a speculative-decoding draft model's GGUF


@dataclass
class _Layer:
    """A layer on its way into the manifest, with the status line Ollama prints for it."""

    layer: mf.Layer
    status: str = ""
    info: GGUFInfo | None = None  # for weights

    @property
    def media_type(self) -> str:
        return self.layer.media_type


def _load_convert() -> Any:
    """The conversion module, imported only when a request needs it."""
    try:
        import corral.convert as convert
    except ImportError as exc:
        raise CreateError(f"safetensors conversion is unavailable on this server: {exc}", 500) from None
    return convert


def _run_with_progress(work: Callable[[Callable[[str, int, int], None]], None],
                       event: Callable[[str, int, int], Progress]) -> Iterator[Progress]:
    """Run ``work(progress)`` in a thread and yield ``event(...)`` as it reports; a report that moves neither the
    stage nor the whole percentage is skipped, so a model with thousands of tensors does not flood the stream."""
    updates: queue.Queue[tuple[str, int, int] | BaseException | None] = queue.Queue()

    def target() -> None:
        try:
            work(lambda stage, done, total: updates.put((stage, done, total)))
        except BaseException as exc:  # handed to the generator, which raises it in the request's context
            updates.put(exc)
        else:
            updates.put(None)

    thread = threading.Thread(target=target, name="corral-create-work", daemon=True)
    thread.start()
    shown: tuple[str, int] | None = None
    while True:
        item = updates.get()
        if item is None:
            break
        if isinstance(item, BaseException):
            thread.join()
            raise item
        stage, done, total = item
        mark = (stage, done * 100 // total if total > 0 else -1)
        if mark != shown or done == total:
            shown = mark
            yield event(stage, done, total)
    thread.join()


class Creator:
    """One ``/api/create`` request against ``store``."""

    def __init__(self, store: Store, spec: CreateSpec) -> None:
        self.store = store
        self.spec = spec
        self.target: ModelName | None = None
        self.old: mf.Manifest | None = None
        self.base_name = ""
        self.base_layers: list[_Layer] = []
        self.base_config: mf.ModelConfig | None = None
        self.inputs: list[InputFile] = []
        self.adapters: list[InputFile] = []
        self.drafts: list[InputFile] = []
        self.draft_checked = False
        self.quantize = ""

    # -- checks before any output -------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Validate the request; raises :class:`CreateError` with the status to answer."""
        spec = self.spec
        try:
            name = parse_name(spec.model)
        except InvalidModelName:
            raise CreateError("invalid model name") from None
        self.target = self.store.existing_name(name)
        with contextlib.suppress(StoreError):
            self.old = self.store.read_manifest(self.target).manifest
        self.inputs = collect(self.store, spec.files, "files")
        self.adapters = collect(self.store, spec.adapters, "adapters")
        self.drafts = collect(self.store, spec.draft_files, "draft_files")
        if spec.from_:
            self._prepare_base(spec.from_)
        elif not self.inputs:
            raise CreateError("neither 'from' or 'files' was specified")
        self._check_inputs()
        self._check_draft()
        if spec.template:
            try:
                parse(spec.template)
            except TemplateError as exc:
                raise CreateError(f"template error: {exc}") from None
        if spec.parameters:
            try:
                options.validate({k: v for k, v in spec.parameters.items() if v is not None})
            except options.OptionError as exc:
                raise CreateError(str(exc)) from None
        if spec.requires and not _SEMVER_RE.fullmatch(spec.requires):
            raise CreateError("requires must be a valid semver (e.g. 0.14.0)")
        if spec.quantize:
            self._prepare_quantize(spec.quantize.upper())

    def _prepare_base(self, name: str) -> None:
        try:
            base = self.store.resolve(parse_name(name))
            record = self.store.read_manifest(base)
        except InvalidModelName:
            raise CreateError("invalid model name") from None
        except ModelNotFound:
            raise CreateError(f"model '{name}' not found", 404) from None
        self.base_name = base.display_shortest()
        for layer in record.manifest.layers:
            size = self.store.blob_size(layer.digest)
            if size is None:
                raise CreateError(f"model '{name}' is incomplete: blob {canonical_digest(layer.digest)} is missing",
                                  500)
            info = None
            if layer.media_type in (*_WEIGHT_TYPES.values(), mf.MEDIA_DRAFT):
                try:
                    info = read_gguf_info(self.store.blob_path(layer.digest))
                except InvalidGGUF as exc:
                    raise CreateError(f"model '{name}' has an unreadable weights layer: {exc}", 500) from None
            reused = mf.Layer.model_validate({"mediaType": layer.media_type, "digest": layer.digest, "size": size,
                                              "from": self.base_name})
            self.base_layers.append(_Layer(reused, f"using existing layer {layer.digest}", info))
        with contextlib.suppress(StoreError, mf.ManifestError):
            self.base_config = mf.ModelConfig.parse(self.store.read_blob(record.manifest.config.digest))

    def _check_inputs(self) -> None:
        models = [f for f in self.inputs if f.kind == "gguf" and f.role == "model"]
        if len(models) > 1:
            raise CreateError("more than one model GGUF in 'files': split GGUF files are not supported, merge them "
                              "into one file first")
        if any(f.kind == "gguf" and f.role == "adapter" for f in self.inputs):
            raise CreateError("a LoRA adapter was given as a model file: pass it in 'adapters' (ADAPTER)")
        if any(f.kind == "safetensors" for f in self.inputs):
            _load_convert()
        elif self._model_info() is None:
            raise CreateError("no model weights: 'files' holds only a projector")
        if self.adapters:
            if any(a.kind == "safetensors" for a in self.adapters):
                raise CreateError("safetensors adapters are not supported: convert the adapter to GGUF first")
            ggufs = [a for a in self.adapters if a.kind == "gguf"]
            if len(ggufs) > 1:
                raise CreateError("only one adapter is currently supported")
            adapter = ggufs[0]
            if adapter.role != "adapter":
                raise CreateError(f"{adapter.name!r} is not a LoRA adapter (its general.type is not 'adapter')")
            base = self._model_info()
            assert adapter.info is not None
            if base is not None and adapter.info.architecture != base.architecture:
                raise CreateError(f"adapter architecture {adapter.info.architecture!r} does not match the model's "
                                  f"{base.architecture!r}")

    def _check_draft(self) -> None:
        """One GGUF language model whose vocabulary is the model's (checked here when the model's GGUF is already
        known, after conversion otherwise)."""
        if not self.drafts:
            return
        if any(d.kind == "safetensors" for d in self.drafts):
            raise CreateError(f"DRAFT must be a GGUF file: {NOT_GGUF}")
        ggufs = [d for d in self.drafts if d.kind == "gguf"]
        if len(ggufs) > 1:
            raise CreateError("more than one GGUF in 'draft_files': a DRAFT is one GGUF file (split GGUF files are "
                              "not supported)")
        draft = ggufs[0]
        if draft.role != "model":
            raise CreateError(f"{draft.name!r} is not a draft model: its general.type is {draft.role!r}")
        base = self._model_info()
        if base is not None:
            self._check_vocab(base)

    def _check_vocab(self, base: GGUFInfo) -> None:
        draft = next(d for d in self.drafts if d.kind == "gguf")
        assert draft.info is not None
        reason = speculative.vocab_mismatch(base, draft.info)
        if reason:
            raise CreateError(f"the DRAFT model's vocabulary does not match the model's, so it cannot draft for it: "
                              f"{reason}")
        self.draft_checked = True

    def _model_info(self) -> GGUFInfo | None:
        for f in self.inputs:
            if f.kind == "gguf" and f.role == "model":
                return f.info
        for layer in self.base_layers:
            if layer.media_type == mf.MEDIA_MODEL:
                return layer.info
        return None

    def _prepare_quantize(self, qtype: str) -> None:
        if qtype not in QUANT_TYPES:
            raise CreateError(f"unsupported quantization type {qtype}")
        info = self._model_info()
        if info is not None and info.file_type not in QUANTIZE_SOURCES and info.file_type != qtype:
            raise CreateError("quantization is only supported for F16, BF16 and F32 models")
        try:
            import corral.convert  # noqa: F401 - only checks that quantization is available
        except ImportError as exc:
            raise CreateError(f"quantization is unavailable on this server: {exc}", 500) from None
        self.quantize = qtype

    # -- the work -----------------------------------------------------------------------------------------------

    def run(self) -> Iterator[Progress]:
        """Build and write the model, yielding progress objects; raises :class:`CreateError` on failure."""
        assert self.target is not None, "prepare() first"
        new_weights: list[_Layer] = []
        if any(f.kind == "safetensors" for f in self.inputs):
            yield from self._convert(new_weights)
        else:
            for f in self.inputs:
                if f.kind != "gguf":
                    continue
                yield {"status": "parsing GGUF"}
                weights = mf.Layer(mediaType=_WEIGHT_TYPES[f.role], digest=f.digest, size=f.blob.stat().st_size)
                new_weights.append(_Layer(weights, f"using existing layer {f.digest}", f.info))
        for adapter in self.adapters:
            if adapter.kind == "gguf":
                yield {"status": "parsing GGUF"}
                weights = mf.Layer(mediaType=mf.MEDIA_ADAPTER, digest=adapter.digest, size=adapter.blob.stat().st_size)
                new_weights.append(_Layer(weights, f"using existing layer {adapter.digest}", adapter.info))
        layers = _replace_weights(list(self.base_layers), new_weights)
        if not self.spec.from_:
            layers.extend(self._detect(layers))
        yield from self._add_draft(layers)
        if self.quantize:
            yield from self._quantize(layers)
        layers = self._apply_settings(layers)
        config = self._config(layers)
        for layer in layers:
            if layer.status:
                yield {"status": layer.status}
        yield {"status": "writing manifest"}
        self._write(layers, config)
        self._prune()
        yield {"status": "success"}

    def _add_draft(self, layers: list[_Layer]) -> Iterator[Progress]:
        """The DRAFT GGUF as the draft layer, in place of the base model's; after the model's layers, as Ollama
        appends it."""
        for draft in self.drafts:
            if draft.kind != "gguf":
                continue
            if not self.draft_checked:  # the model's GGUF came out of conversion
                model = next((layer.info for layer in layers if layer.media_type == mf.MEDIA_MODEL), None)
                if model is not None:
                    self._check_vocab(model)
            yield {"status": "parsing GGUF"}
            layer = mf.Layer(mediaType=mf.MEDIA_DRAFT, digest=draft.digest, size=draft.blob.stat().st_size)
            layers[:] = [old for old in layers if old.media_type != mf.MEDIA_DRAFT]
            layers.append(_Layer(layer, f"using existing layer {draft.digest}", draft.info))

    def _blob(self, media_type: str, data: bytes, status: str = "") -> _Layer:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        existed = self.store.has_blob(digest)
        if not existed:
            self.store.write_bytes(data, digest)
        default = f"{'using existing' if existed else 'creating new'} layer {digest}"
        return _Layer(mf.Layer(mediaType=media_type, digest=digest, size=len(data)), status or default)

    def _import(self, path: Path, media_type: str) -> _Layer:
        """A file the pipeline produced (conversion, quantization) as a layer, read back from the store."""
        with path.open("rb") as f:
            hasher = hashlib.sha256()
            for chunk in iter(lambda: f.read(1 << 20), b""):
                hasher.update(chunk)
        existed = self.store.has_blob("sha256:" + hasher.hexdigest())
        digest, size = self.store.import_file(path, link=True)
        try:
            info = read_gguf_info(self.store.blob_path(digest))
        except InvalidGGUF as exc:
            raise CreateError(f"the produced GGUF does not read back: {exc}", 500) from None
        status = f"{'using existing' if existed else 'creating new'} layer {digest}"
        return _Layer(mf.Layer(mediaType=media_type, digest=digest, size=size), status, info)

    def _convert(self, out: list[_Layer]) -> Iterator[Progress]:
        convert = _load_convert()
        staging = Path(tempfile.mkdtemp(prefix=".tmp-create-", dir=self.store.root))
        try:
            source = staging / "src"
            for f in self.inputs:
                target = source / f.name
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(f.blob, target)
                except OSError:
                    shutil.copyfile(f.blob, target)
            result = staging / "model.gguf"
            yield {"status": "converting model"}

            def work(progress: Callable[[str, int, int], None]) -> None:
                convert.convert_directory(source, result, progress)

            try:
                yield from _run_with_progress(work, lambda stage, done, total: _bar(stage, done, total))
            except ValueError as exc:  # ConvertError: the files cannot be converted
                raise CreateError(f"cannot convert the model: {exc}") from None
            yield {"status": "parsing GGUF"}
            out.append(self._import(result, mf.MEDIA_MODEL))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _detect(self, layers: list[_Layer]) -> list[_Layer]:
        """Template, params (stop tokens) and default-system layers for a recognised chat template."""
        from corral.templates.detect import detect

        model = next((layer for layer in layers if layer.media_type == mf.MEDIA_MODEL), None)
        if model is None or model.info is None or not model.info.chat_template:
            return []
        info = model.info
        found = detect(info.chat_template, bos_token=info.bos_token, eos_token=info.eos_token,
                       add_bos=info.metadata.get("tokenizer.ggml.add_bos_token") is not False)
        if found is None:
            log.info("no builtin template matches the GGUF chat template; the engine will apply it")
            return []
        added = [self._blob(mf.MEDIA_TEMPLATE, found.template.encode(), f"using autodetected template {found.name}")]
        if found.params:
            added.append(self._blob(mf.MEDIA_PARAMS, gojson.encode(found.params)))
        if found.system:
            added.append(self._blob(mf.MEDIA_SYSTEM, found.system.encode()))
        return added

    def _quantize(self, layers: list[_Layer]) -> Iterator[Progress]:
        index = next((i for i, layer in enumerate(layers) if layer.media_type == mf.MEDIA_MODEL), None)
        if index is None or layers[index].info is None:
            raise CreateError("there is no model layer to quantize")
        info = layers[index].info
        assert info is not None
        if info.file_type == self.quantize:
            return
        if info.file_type not in QUANTIZE_SOURCES:
            raise CreateError("quantization is only supported for F16, BF16 and F32 models")
        status = f"quantizing {info.file_type} model to {self.quantize}"
        yield {"status": status, "digest": QUANTIZE_DIGEST}
        from corral.convert import quantize_gguf

        self.store.blobs_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".tmp-quantize-", dir=self.store.blobs_dir)
        os.close(fd)
        result = Path(name)
        try:
            def work(progress: Callable[[str, int, int], None]) -> None:
                quantize_gguf(info.path, result, self.quantize, progress)

            try:
                yield from _run_with_progress(work, lambda _stage, done, total: {
                    "status": status, "digest": QUANTIZE_DIGEST, "total": total, "completed": done})
            except ValueError as exc:
                raise CreateError(str(exc)) from None
            layers[index] = self._import(result, mf.MEDIA_MODEL)
        finally:
            result.unlink(missing_ok=True)

    def _apply_settings(self, layers: list[_Layer]) -> list[_Layer]:
        """Ollama's setTemplate, setSystem, setLicense, setParameters and setMessages, in that order."""
        spec = self.spec
        if spec.template:
            layers = [layer for layer in layers if layer.media_type not in _TEMPLATE_TYPES]
            layers.append(self._blob(mf.MEDIA_TEMPLATE, spec.template.encode()))
        if spec.system:
            layers = [layer for layer in layers if layer.media_type != mf.MEDIA_SYSTEM]
            layers.append(self._blob(mf.MEDIA_SYSTEM, spec.system.encode()))
        for text in spec.license:
            if text:
                layers.append(self._blob(mf.MEDIA_LICENSE, text.encode()))
        params = {k: v for k, v in (spec.parameters or {}).items() if v is not None}
        for layer in layers:
            if layer.media_type == mf.MEDIA_PARAMS:
                for key, value in self._read_params(layer).items():
                    params.setdefault(key, value)
        if params:
            layers = [layer for layer in layers if layer.media_type != mf.MEDIA_PARAMS]
            layers.append(self._blob(mf.MEDIA_PARAMS, gojson.encode(params)))
        if spec.messages:
            layers = [layer for layer in layers if layer.media_type != mf.MEDIA_MESSAGES]
            layers.append(self._blob(mf.MEDIA_MESSAGES, gojson.encode(spec.messages, sort_keys=False)))
        return layers

    def _read_params(self, layer: _Layer) -> dict[str, Any]:
        try:
            value = gojson.decode(self.store.read_blob(layer.layer.digest))
        except (StoreError, ValueError):
            raise CreateError(f"the params layer {layer.layer.digest} is unreadable", 500) from None
        return value if isinstance(value, dict) else {}

    def _config(self, layers: list[_Layer]) -> mf.ModelConfig:
        """The config blob: the base model's, with the weights' facts read again (quantization changes them)."""
        base = self.base_config
        cfg = base.model_copy(deep=True) if base is not None else mf.ModelConfig()
        families: list[str] = []
        model_info = None
        for layer in layers:
            if layer.info is None or layer.media_type in (mf.MEDIA_ADAPTER, mf.MEDIA_DRAFT):
                continue
            if layer.media_type == mf.MEDIA_MODEL and model_info is None:
                model_info = layer.info
            if layer.info.architecture not in families:
                families.append(layer.info.architecture)
        if model_info is not None:
            cfg.model_format = "gguf"
            cfg.model_family = model_info.architecture
            cfg.model_type = model_info.parameter_size
            cfg.file_type = model_info.file_type
            cfg.model_families = families
        draft = next((layer for layer in layers if layer.media_type == mf.MEDIA_DRAFT), None)
        if draft is None:
            cfg.draft = None
        elif draft.info is not None:  # Ollama's ConfigV2.Draft
            cfg.draft = mf.DraftConfig(model_format="gguf", architecture=draft.info.architecture)
        for key in ("renderer", "parser", "requires"):
            value = getattr(self.spec, key)
            if value:
                setattr(cfg, key, value.removeprefix("v") if key == "requires" else value)
        cfg.architecture, cfg.os = "amd64", "linux"
        cfg.rootfs = mf.RootFS(type="layers", diff_ids=[layer.layer.digest for layer in layers])
        return cfg

    def _write(self, layers: list[_Layer], config: mf.ModelConfig) -> None:
        assert self.target is not None
        digest, size = self.store.write_bytes(config.to_json_bytes())
        manifest = mf.Manifest(config=mf.Layer(mediaType=mf.MEDIA_CONFIG, digest=digest, size=size),
                               layers=[layer.layer for layer in layers])
        try:
            self.store.write_manifest(self.target, manifest)
        except StoreError as exc:
            raise CreateError(f"cannot write the manifest: {exc}", 500) from None

    def _prune(self) -> None:
        """Remove the previous manifest's blobs that no manifest references any more (Ollama's RemoveLayers)."""
        if self.old is None or env.noprune():
            return
        candidates = {canonical_digest(layer.digest) for layer in self.old.blobs()}
        for digest in self.store.remove_unreferenced(candidates):  # under the store's lock (shared stores)
            log.info("removed unused layer %s", digest)


def _bar(stage: str, done: int, total: int) -> Progress:
    return {"status": stage, "total": total, "completed": done} if total else {"status": stage}


def _replace_weights(layers: list[_Layer], new: list[_Layer]) -> list[_Layer]:
    """``new`` weights take the place of the base's layers of the same type (all of them); a type the base lacks
    is appended."""
    out = list(layers)
    for media_type in dict.fromkeys(layer.media_type for layer in new):
        group = [layer for layer in new if layer.media_type == media_type]
        index = next((i for i, old in enumerate(out) if old.media_type == media_type), len(out))
        out = ([old for old in out[:index] if old.media_type != media_type] + group
               + [old for old in out[index:] if old.media_type != media_type])
    return out
