"""The ``files`` and ``adapters`` maps of ``/api/create``: names checked, blobs found, file kinds recognised.

Every key is a client-chosen relative path (the CLI's upload name) and every value a digest of a blob uploaded
with ``POST /api/blobs``. Keys may later become paths of a staging directory (safetensors conversion), so anything
that is not a plain relative path is refused first. GGUF files are read header-first through the bounded reader
of :mod:`corral.store.gguf_info`, so a truncated or hostile file is a clear 400, never a crash (CVE-2024-39720).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from corral.errors import CreateError, InvalidDigest, InvalidGGUF
from corral.store.gguf_info import GGUF_MAGIC, GGUFInfo, read_gguf_info
from corral.store.store import Store, canonical_digest

MAX_FILES = 1024
NOT_GGUF = "supplied file was not in GGUF format"


@dataclass
class InputFile:
    """One entry of a ``files``/``adapters`` map."""

    name: str  # the relative path the client gave
    digest: str  # sha256:<hex>
    blob: Path
    kind: str  # "gguf", "safetensors" or "other" (config and tokenizer files that travel with safetensors)
    info: GGUFInfo | None = None
    role: str = ""  # for GGUF: "model", "projector" or "adapter"


def check_path(name: str) -> None:
    """Ollama's ``fs.ValidPath`` plus its extra rule against ``\\`` and ``:``: relative, slash-separated, no
    empty, ``.`` or ``..`` element, no control characters."""
    parts = name.split("/")
    if (not name or name == "." or any(p in ("", ".", "..") for p in parts) or any(c in name for c in "\\:")
            or any(not c.isprintable() for c in name)):
        raise CreateError(f"file path must be relative: {name!r}")


def _magic(blob: Path) -> bytes:
    try:
        with blob.open("rb") as f:
            return f.read(4)
    except OSError:
        raise CreateError("cannot read an uploaded blob", 500) from None


def _gguf_role(info: GGUFInfo) -> str:
    kind = info.metadata.get("general.type")
    if kind == "adapter":
        return "adapter"
    if kind in ("projector", "mmproj") or info.architecture == "clip":
        return "projector"
    if info.block_count == 0 and info.metadata.get(f"{info.architecture}.vision.block_count"):
        return "projector"  # a standalone vision model
    return "model"


def _read(name: str, digest: str, store: Store) -> InputFile:
    try:
        digest = canonical_digest(digest)
    except InvalidDigest:
        raise CreateError(f"invalid digest for {name!r}: invalid digest format") from None
    blob = store.blob_path(digest)
    if not blob.is_file():
        raise CreateError(f"blob not found for {name!r} (digest {digest}); upload it first with POST /api/blobs")
    if name.endswith(".safetensors"):
        return InputFile(name, digest, blob, "safetensors")
    magic = _magic(blob)
    if magic != GGUF_MAGIC:
        if name.endswith(".gguf"):
            raise CreateError(NOT_GGUF)
        return InputFile(name, digest, blob, "other")
    try:
        info = read_gguf_info(blob)
    except InvalidGGUF as exc:
        raise CreateError(f"invalid GGUF file {name!r}: {exc}") from None
    role = _gguf_role(info)
    if role != "adapter" and not info.tensor_infos:
        raise CreateError(f"invalid GGUF file {name!r}: it holds no tensors")
    return InputFile(name, digest, blob, "gguf", info, role)


def collect(store: Store, files: dict[str, str] | None, what: str = "files") -> list[InputFile]:
    """The entries of a ``files``/``adapters`` map, sorted by name; raises :class:`CreateError` (400)."""
    if not files:
        return []
    if len(files) > MAX_FILES:
        raise CreateError(f"too many {what}: {len(files)} exceeds maximum {MAX_FILES}")
    for name in files:
        check_path(name)
    entries = [_read(name, files[name], store) for name in sorted(files)]
    kinds = {e.kind for e in entries} - {"other"}
    if len(kinds) > 1:
        raise CreateError(f"mixed model file types: found both {' and '.join(sorted(kinds))} inputs")
    if not kinds:
        raise CreateError(NOT_GGUF)
    return entries
