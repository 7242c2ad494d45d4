"""Manifest and config-blob formats, serialised byte for byte as Ollama writes them.

Ollama writes created manifests and config blobs with Go's ``json.Encoder``: compact separators, ``<``, ``>``,
``&``, U+2028 and U+2029 escaped, a trailing newline, struct field order, and ``omitempty`` fields left out when
empty. The digest Ollama shows for a model is the sha256 of the manifest file, and a config blob is addressed by
its own sha256, so the bytes have to match exactly for a store to be shared between the two programs.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from corral.errors import ManifestError

# Manifest and config media types (Docker distribution v2, which Ollama's registry speaks).
MEDIA_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_CONFIG = "application/vnd.docker.container.image.v1+json"

# Layer media types.
MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_PROMPT = "application/vnd.ollama.image.prompt"  # legacy alias of the template layer
MEDIA_SYSTEM = "application/vnd.ollama.image.system"
MEDIA_PARAMS = "application/vnd.ollama.image.params"
MEDIA_MESSAGES = "application/vnd.ollama.image.messages"
MEDIA_LICENSE = "application/vnd.ollama.image.license"
MEDIA_ADAPTER = "application/vnd.ollama.image.adapter"
MEDIA_PROJECTOR = "application/vnd.ollama.image.projector"
MEDIA_DRAFT = "application/vnd.ollama.image.draft"
MEDIA_TENSOR = "application/vnd.ollama.image.tensor"  # safetensors tensor blob (MLX models)
MEDIA_JSON = "application/vnd.ollama.image.json"  # safetensors config file (MLX models)
MEDIA_EMBED = "application/vnd.ollama.image.embed"  # deprecated, ignored

DIGEST_RE = re.compile(r"sha256[:-][0-9a-fA-F]{64}")  # always used with fullmatch: "$" would allow "\n"

_GO_HTML_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_GO_HTML_RE = re.compile("[<>&\u2028\u2029]")
_LONE_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def go_json(value: Any) -> bytes:
    """Encode like Go's ``json.NewEncoder(w).Encode(v)``; ``value`` must already be in struct field order."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    text = _GO_HTML_RE.sub(lambda m: _GO_HTML_ESCAPES[m.group()], text)
    # Go writes invalid UTF-8 as U+FFFD; a Python str can only carry that as a lone surrogate.
    text = _LONE_SURROGATE_RE.sub("\ufffd", text)
    return text.encode("utf-8") + b"\n"


def _load_object(data: bytes | str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ManifestError(f"{what} is not a JSON object")
    return value


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "value"
    return f"{where}: {first.get('msg', 'invalid')}"


class Layer(BaseModel):
    """One manifest entry (a layer or the config): what the blob is, its digest and its size."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    media_type: str = Field(alias="mediaType")
    digest: str
    size: StrictInt = Field(ge=0)
    from_: str = Field(default="", alias="from")
    name: str = ""

    @field_validator("digest")
    @classmethod
    def _valid_digest(cls, value: str) -> str:
        # CVE-2024-37032: a digest becomes a file name, so nothing but sha256 hex is allowed through.
        if not DIGEST_RE.fullmatch(value):
            raise ValueError("invalid digest format")
        return value

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.from_:
            out["from"] = self.from_
        if self.name:
            out["name"] = self.name
        return out


class Manifest(BaseModel):
    """A schemaVersion 2 manifest: one config blob and an ordered list of layers."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    schema_version: StrictInt = Field(default=2, alias="schemaVersion")
    media_type: str = Field(default=MEDIA_MANIFEST, alias="mediaType")
    config: Layer
    layers: list[Layer] = Field(default_factory=list)

    @field_validator("layers", mode="before")
    @classmethod
    def _null_layers(cls, value: Any) -> Any:
        # Go writes a nil slice as null.
        return [] if value is None else value

    @classmethod
    def parse(cls, data: bytes | str) -> Manifest:
        """Parse manifest bytes; raises :class:`ManifestError` for anything malformed (never another exception)."""
        obj = _load_object(data, "manifest")
        try:
            return cls.model_validate(obj)
        except ValidationError as exc:
            raise ManifestError(f"manifest is malformed: {_validation_message(exc)}") from None

    @property
    def size(self) -> int:
        """Sum of the layer sizes plus the config size: the size Ollama lists for a model."""
        return sum(layer.size for layer in self.layers) + self.config.size

    def blobs(self) -> list[Layer]:
        """Every blob the manifest references: the layers, then the config."""
        return [*self.layers, self.config]

    def first_layer(self, media_type: str) -> Layer | None:
        for layer in self.layers:
            if layer.media_type == media_type:
                return layer
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schemaVersion": self.schema_version,
            "mediaType": self.media_type,
            "config": self.config.to_dict(),
            "layers": [layer.to_dict() for layer in self.layers],
        }

    def to_json_bytes(self) -> bytes:
        """The bytes Ollama writes for a created manifest (``json.Encoder``, trailing newline)."""
        return go_json(self.to_dict())


class RootFS(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str = "layers"
    diff_ids: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "diff_ids": self.diff_ids}


class DraftConfig(BaseModel):
    """A speculative-decoding draft model stored in the same manifest."""

    model_config = ConfigDict(extra="ignore")

    model_format: str = ""
    architecture: str = ""
    tensor_prefix: str = ""
    config: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v}


class ModelConfig(BaseModel):
    """The config blob (Ollama's ``ConfigV2``): what /api/tags and /api/show report as a model's details.

    Defaults are the values Ollama's create starts from (``amd64``, ``linux``, rootfs type ``layers``). Unknown
    fields written by other Ollama versions are kept and written back after the known ones.
    """

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model_format: str = ""
    model_family: str = ""
    model_families: list[str] | None = None
    model_type: str = ""  # shown as parameter_size
    file_type: str = ""  # shown as quantization_level
    renderer: str = ""
    parser: str = ""
    requires: str = ""
    remote_host: str = ""
    remote_model: str = ""
    capabilities: list[str] | None = None
    context_length: int = 0
    embedding_length: int = 0
    base_name: str = ""
    draft: DraftConfig | None = None
    architecture: str = "amd64"
    os: str = "linux"
    rootfs: RootFS = Field(default_factory=RootFS)

    @classmethod
    def parse(cls, data: bytes | str) -> ModelConfig:
        obj = _load_object(data, "model config")
        try:
            return cls.model_validate(obj)
        except ValidationError as exc:
            raise ManifestError(f"model config is malformed: {_validation_message(exc)}") from None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model_format": self.model_format,
            "model_family": self.model_family,
            "model_families": self.model_families,
            "model_type": self.model_type,
            "file_type": self.file_type,
        }
        # omitempty fields, in ConfigV2's field order.
        for key in ("renderer", "parser", "requires", "remote_host", "remote_model"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.capabilities:
            out["capabilities"] = list(self.capabilities)
        if self.context_length:
            out["context_length"] = self.context_length
        if self.embedding_length:
            out["embedding_length"] = self.embedding_length
        if self.base_name:
            out["base_name"] = self.base_name
        if self.draft is not None:
            out["draft"] = self.draft.to_dict()
        out["architecture"] = self.architecture
        out["os"] = self.os
        out["rootfs"] = self.rootfs.to_dict()
        for key, value in (self.model_extra or {}).items():
            out.setdefault(key, value)
        return out

    def to_json_bytes(self) -> bytes:
        """The config blob's bytes as Ollama writes them (its sha256 is the config layer's digest)."""
        return go_json(self.to_dict())
