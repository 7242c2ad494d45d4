"""Models as OCI image-layout tar archives: ``corral export`` and ``corral import``.

An archive holds the store's own bytes in the layout every OCI tool reads (``oci-layout``, ``index.json``,
``blobs/sha256/<hex>`` for the manifest, the config and each layer), so a model moves between machines without a
registry and comes back with the same manifest digest. Both directions work on the local store directly, as
Ollama's store is a local directory: no server is involved. Blobs stream through in chunks, never whole in memory.

An archive is untrusted input. Nothing is ever extracted by path: every member must be a regular file (or one of
the layout's two directories) at a known layout path, so ``..``, absolute paths, links and devices are refused
before anything is written (Zip Slip). Each blob is hashed while it streams into the store through
:meth:`Store.write_blob` and refused on a mismatch, and the manifest is written last, so a failed import never
leaves a manifest that points at a missing or partial blob.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tarfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from corral.errors import ArchiveError, DigestMismatch, InvalidDigest, InvalidModelName, ManifestError
from corral.store.manifest import Manifest
from corral.store.names import parse_name
from corral.store.store import MAX_MANIFEST_BYTES, Store, canonical_digest

OCI_LAYOUT_VERSION = "1.0.0"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
MAX_INDEX_BYTES = 1 << 20  # an index naming one model is a few hundred bytes
_CHUNK = 1 << 20
_BLOB_RE = re.compile(r"blobs/sha256/([0-9a-f]{64})")
_LAYOUT_DIRS = frozenset({"blobs", "blobs/sha256"})
_LAYOUT_FILES = frozenset({"oci-layout", "index.json"})

Progress = Callable[[str, int, int], None]
"""Called as ``progress(digest, completed_bytes, total_bytes)`` while a blob streams."""


@dataclass(frozen=True)
class ExportResult:
    name: str  # the model's shortest display name
    blobs: int  # config and layers written (the manifest not counted)
    size: int  # bytes of config and layers


@dataclass(frozen=True)
class ImportResult:
    name: str
    written: int  # blobs streamed into the store
    reused: int  # blobs the store already had
    size: int  # the model's size (config and layers)


# ------------------------------------------------------------------------------------------------------- export


class _CountingReader(io.RawIOBase):
    """Wraps a blob file so tarfile's copy loop reports progress as it reads."""

    def __init__(self, handle: BinaryIO, digest: str, total: int, progress: Progress | None) -> None:
        super().__init__()
        self._handle = handle
        self._digest = digest
        self._total = total
        self._progress = progress
        self._done = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self._done += len(data)
        if self._progress is not None:
            self._progress(self._digest, self._done, self._total)
        return data


def _tarinfo(name: str, size: int, mtime: int, *, directory: bool = False) -> tarfile.TarInfo:
    """A member with neutral ownership, so archives of the same model differ only by their mtimes."""
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.mtime = mtime
    info.mode = 0o755 if directory else 0o644
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    tar.addfile(_tarinfo(name, len(data), mtime), io.BytesIO(data))


def export_model(store: Store, model: str, out: IO[bytes], progress: Progress | None = None) -> ExportResult:
    """Write ``model`` as an OCI image-layout tar onto ``out`` (a stream: only ``write`` is used).

    The manifest goes in byte for byte (its digest is the model's ID) and ``index.json`` names the model in
    ``org.opencontainers.image.ref.name``; the metadata comes first so a streaming reader knows what follows.
    """
    record = store.read_manifest(model)
    blobs: dict[str, int] = {}
    for layer in record.manifest.blobs():
        blobs.setdefault(canonical_digest(layer.digest), layer.size)
    for digest, size in blobs.items():
        if store.blob_size(digest) != size:
            raise ArchiveError(f"blob {digest} of {record.name.display_shortest()} is missing or has the wrong size")
    mtime = int(record.modified_at.timestamp())
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            {
                "mediaType": record.manifest.media_type,
                "digest": "sha256:" + record.digest,
                "size": len(record.raw),
                "annotations": {REF_NAME: record.name.display_long()},
            }
        ],
    }
    # copybufsize: tarfile copies blobs in 16 KiB pieces otherwise
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, copybufsize=_CHUNK) as tar:  # type: ignore[call-overload]
        _add_bytes(tar, "oci-layout", json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION}).encode(), mtime)
        _add_bytes(tar, "index.json", json.dumps(index, indent=2).encode() + b"\n", mtime)
        for directory in ("blobs", "blobs/sha256"):
            tar.addfile(_tarinfo(directory, 0, mtime, directory=True))
        _add_bytes(tar, f"blobs/sha256/{record.digest}", record.raw, mtime)
        for digest, size in blobs.items():
            hex_part = digest.removeprefix("sha256:")
            try:
                handle = open(store.blob_path(digest), "rb")  # noqa: SIM115 - closed by the with below
            except OSError as exc:
                raise ArchiveError(f"cannot read blob {digest}: {exc.strerror or exc}") from None
            with handle:
                if os.fstat(handle.fileno()).st_size != size:
                    raise ArchiveError(f"blob {digest} changed size while it was exported")
                reader = _CountingReader(handle, digest, size, progress)
                tar.addfile(_tarinfo(f"blobs/sha256/{hex_part}", size, mtime), reader)
    return ExportResult(name=record.name.display_shortest(), blobs=len(blobs), size=sum(blobs.values()))


def export_to_path(store: Store, model: str, path: Path, progress: Progress | None = None) -> ExportResult:
    """Export into a temporary file beside ``path`` and rename it into place, so a failure leaves no half tar."""
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
    try:
        with open(tmp, "xb") as out:
            result = export_model(store, model, out, progress)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # name the archive the user asked for, not the temporary file
        raise ArchiveError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return result


# ------------------------------------------------------------------------------------------------------- import


def _refuse(member: tarfile.TarInfo, why: str) -> ArchiveError:
    return ArchiveError(f"refusing archive member {member.name!r}: {why}")


def _layout_members(members: list[tarfile.TarInfo]) -> dict[str, tarfile.TarInfo]:
    """The archive's files by layout path; any member that is not a plain file or directory of the layout is
    refused here, before anything is read or written."""
    files: dict[str, tarfile.TarInfo] = {}
    for member in members:
        name = member.name
        while name.startswith("./"):
            name = name[2:]
        name = name.rstrip("/") if member.isdir() else name
        if member.isdir() and name in ("", "."):
            continue
        if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
            raise _refuse(member, "absolute paths are not allowed")
        if "\\" in name or any(part in ("", ".", "..") for part in name.split("/")):
            raise _refuse(member, "the path leaves the image layout")
        if member.issym() or member.islnk():
            raise _refuse(member, "links are not allowed")
        if member.isdir():
            if name not in _LAYOUT_DIRS:
                raise _refuse(member, "not part of an OCI image layout")
            continue
        if not member.isreg() or member.issparse():
            raise _refuse(member, "only regular files are allowed")
        if name not in _LAYOUT_FILES and not _BLOB_RE.fullmatch(name):
            raise _refuse(member, "not part of an OCI image layout")
        if name in files:
            raise _refuse(member, "it appears twice")
        files[name] = member
    return files


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
    if member.size > limit:
        raise ArchiveError(f"{member.name} is larger than {limit} bytes")
    handle = tar.extractfile(member)
    if handle is None:
        raise _refuse(member, "only regular files are allowed")
    with handle:
        return handle.read(limit + 1)


def _read_json(tar: tarfile.TarFile, files: dict[str, tarfile.TarInfo], name: str) -> dict[str, Any]:
    member = files.get(name)
    if member is None:
        raise ArchiveError(f"not an OCI image layout: {name} is missing")
    try:
        value = json.loads(_read_member(tar, member, MAX_INDEX_BYTES))
    except (ValueError, UnicodeDecodeError):
        raise ArchiveError(f"{name} is not valid JSON") from None
    if not isinstance(value, dict):
        raise ArchiveError(f"{name} is not a JSON object")
    return value


def _manifest_descriptor(index: dict[str, Any]) -> tuple[str, int, str | None]:
    """The one manifest the index lists: its digest, size and ref-name annotation."""
    entries = index.get("manifests")
    if not isinstance(entries, list) or not entries:
        raise ArchiveError("index.json lists no manifest")
    if len(entries) > 1:
        raise ArchiveError(f"the archive holds {len(entries)} manifests; corral imports one model per archive")
    entry = entries[0]
    if not isinstance(entry, dict):
        raise ArchiveError("index.json: the manifest descriptor is not an object")
    try:
        digest = canonical_digest(entry.get("digest"))  # type: ignore[arg-type]
    except InvalidDigest:
        raise ArchiveError("index.json: the manifest digest is not a sha256 digest") from None
    size = entry.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ArchiveError("index.json: the manifest size is missing or invalid")
    annotations = entry.get("annotations")
    ref = annotations.get(REF_NAME) if isinstance(annotations, dict) else None
    return digest, size, ref if isinstance(ref, str) and ref else None


def _blob_chunks(
    tar: tarfile.TarFile, member: tarfile.TarInfo, digest: str, progress: Progress | None
) -> Iterator[bytes]:
    handle = tar.extractfile(member)
    if handle is None:
        raise _refuse(member, "only regular files are allowed")
    done = 0
    with handle:
        while chunk := handle.read(_CHUNK):
            done += len(chunk)
            if progress is not None:
                progress(digest, done, member.size)
            yield chunk
    if done != member.size:
        raise ArchiveError(f"blob {digest} is truncated in the archive")


def import_archive(
    store: Store, path: str | os.PathLike[str], name: str | None = None, progress: Progress | None = None
) -> ImportResult:
    """Import the model in the OCI image-layout tar at ``path`` (plain or compressed) into ``store``.

    The model is stored under ``name``, else under the index's ``org.opencontainers.image.ref.name``. Every blob
    is checked against the manifest (present, right size, right sha256) before the manifest is written; blobs the
    store already holds are not copied again. On failure, blobs this import added are removed again unless
    another model references them.
    """
    try:
        tar = tarfile.open(path, mode="r:*")  # noqa: SIM115 - closed by the with below
    except tarfile.TarError as exc:
        raise ArchiveError(f"not a tar archive: {exc}") from None
    with tar:
        try:
            files = _layout_members(tar.getmembers())
        except tarfile.TarError as exc:
            raise ArchiveError(f"the archive is damaged: {exc}") from None
        layout = _read_json(tar, files, "oci-layout")
        if not isinstance(layout.get("imageLayoutVersion"), str):
            raise ArchiveError("oci-layout has no imageLayoutVersion")
        digest, size, ref = _manifest_descriptor(_read_json(tar, files, "index.json"))

        hex_part = digest.removeprefix("sha256:")
        member = files.get(f"blobs/sha256/{hex_part}")
        if member is None:
            raise ArchiveError(f"the manifest {digest} is not in the archive")
        if member.size != size or size > MAX_MANIFEST_BYTES:
            raise ArchiveError(f"the manifest {digest} is {member.size} bytes but index.json says {size}")
        raw = _read_member(tar, member, MAX_MANIFEST_BYTES)
        got = "sha256:" + hashlib.sha256(raw).hexdigest()
        if got != digest:
            raise ArchiveError(f'digest mismatch for the manifest, expected "{digest}", got "{got}"')
        try:
            manifest = Manifest.parse(raw)
        except ManifestError as exc:
            raise ArchiveError(str(exc)) from None

        target_text = name or ref
        if not target_text:
            raise ArchiveError("the archive does not name its model; give a name with --name")
        try:
            target = parse_name(target_text)
        except InvalidModelName as exc:
            raise ArchiveError(f"{exc}; give a name with --name" if not name else str(exc)) from None

        # Plan everything before writing anything: a missing or mis-sized blob fails with the store untouched.
        wanted: dict[str, int] = {}
        for layer in manifest.blobs():
            wanted.setdefault(canonical_digest(layer.digest), layer.size)
        to_write: list[tuple[str, tarfile.TarInfo]] = []
        reused = 0
        for blob, blob_size in wanted.items():
            found = files.get(f"blobs/sha256/{blob.removeprefix('sha256:')}")
            in_store = store.blob_size(blob) == blob_size
            if found is None:
                if not in_store:
                    raise ArchiveError(f"blob {blob} referenced by the manifest is not in the archive")
                reused += 1
            elif found.size != blob_size:
                raise ArchiveError(
                    f"blob {blob} is {found.size} bytes in the archive but the manifest says {blob_size}"
                )
            elif in_store:
                reused += 1
            else:
                to_write.append((blob, found))

        written: list[str] = []
        try:
            for blob, found in to_write:
                try:
                    store.write_blob(_blob_chunks(tar, found, blob, progress), blob)
                except DigestMismatch as exc:
                    raise ArchiveError(f"blob {blob} does not match its digest (got {exc.got})") from None
                except tarfile.TarError as exc:
                    raise ArchiveError(f"the archive is damaged: {exc}") from None
                written.append(blob)
            record = store.write_manifest_bytes(target, raw)
        except BaseException:
            with contextlib.suppress(Exception):
                store.remove_unreferenced(written)
            raise
    return ImportResult(name=record.name.display_shortest(), written=len(written), reused=reused,
                        size=manifest.size)


__all__ = [
    "REF_NAME",
    "ArchiveError",
    "ExportResult",
    "ImportResult",
    "Progress",
    "export_model",
    "export_to_path",
    "import_archive",
]
