"""The blob and manifest store, laid out exactly as Ollama's ``~/.ollama/models``.

::

    <root>/blobs/sha256-<64 hex>                          content-addressed, verified, written atomically
    <root>/manifests/<host>/<namespace>/<model>/<tag>     manifest JSON

Every path is built from a validated :class:`ModelName` or digest and checked to lie inside the root, so no name
or digest that arrives over the API can reach another file (CVE-2024-37032). Blobs are written to a temporary file,
hashed as they are written, fsynced and renamed; a manifest is written only after every blob it names is present
with the right size, so an interrupted pull, create or crash never leaves a manifest that points at a missing or
partial blob. Error messages name models and digests, never filesystem paths (CVE-2024-39719 leaked them).

Several processes may share one store (replicas behind a load balancer): the lock protocol in :mod:`.locks` orders
manifest writes against blob removals, so no interleaving of pulls, creates, copies, deletes and start-up prunes in
different processes leaves a manifest that names a missing blob, and a live download's files are never pruned.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from corral.errors import CorruptManifest, DigestMismatch, InvalidDigest, MissingBlob, ModelNotFound, StoreError

from . import locks
from .manifest import Manifest, ManifestError
from .names import InvalidModelName, ModelName, parse_name

log = logging.getLogger(__name__)

DIGEST_RE = re.compile(r"sha256[:-]([0-9a-fA-F]{64})")  # always used with fullmatch: "$" would allow "\n"
_DIGEST_ANYWHERE_RE = re.compile(r"sha256[:-]([0-9a-fA-F]{64})")
MAX_MANIFEST_BYTES = 4 << 20  # real manifests are a few kilobytes; refuse to slurp anything huge
_CHUNK = 1 << 20
_TMP_PREFIX = ".tmp-"  # never a valid digest or name part, so Ollama's prune and ours both recognise leftovers
_PARTIAL_RE = re.compile(r"sha256-([0-9a-f]{64})-partial(?:-\d+)?")  # a download's data and part-state files
_LOCK_FILE_RE = re.compile(r"sha256-([0-9a-f]{64})\.(pin|download)")
_FRESH_HOLD_S = 3600.0  # how long a blob written for a manifest-to-be stays pinned if that manifest never comes
_FRESH_MAX = 512


def canonical_digest(digest: str) -> str:
    """``sha256:<lowercase hex>`` for any accepted spelling (``sha256:`` or ``sha256-``, any hex case)."""
    match = DIGEST_RE.fullmatch(digest) if isinstance(digest, str) else None
    if match is None:
        raise InvalidDigest(digest)
    return "sha256:" + match.group(1).lower()


@dataclass(frozen=True)
class ManifestRecord:
    """A manifest as found on disk, with what /api/tags reports about it."""

    name: ModelName
    manifest: Manifest
    raw: bytes
    digest: str  # hex sha256 of the manifest file bytes, no prefix (Ollama's model "ID")
    size: int  # layers plus config
    modified_at: datetime  # manifest file mtime, timezone-aware (local zone, as Go reports it)


@dataclass
class PruneResult:
    removed_blobs: list[str] = field(default_factory=list)
    removed_dirs: int = 0
    skipped: bool = False
    reason: str = ""


def _inside(base: Path, path: Path) -> bool:
    b, p = os.path.normpath(base), os.path.normpath(path)
    return p != b and os.path.commonpath([b, p]) == b


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _oserror(action: str, exc: OSError) -> StoreError:
    return StoreError(f"{action}: {exc.strerror or exc.__class__.__name__}")


def _referenced_in(raw: bytes) -> set[str]:
    """Digests a manifest references; for bytes that do not parse, every digest-shaped string (conservative)."""
    try:
        return {canonical_digest(layer.digest) for layer in Manifest.parse(raw).blobs()}
    except ManifestError:
        text = raw.decode("utf-8", "replace")
        return {"sha256:" + m.lower() for m in _DIGEST_ANYWHERE_RE.findall(text)}


_Stamp = tuple[int, int, int] | None  # mtime_ns, size, inode; None when missing
_RACY_NS = 2_000_000_000  # coarser than any filesystem's mtime granularity Corral is likely to meet


def _stamp(path: str) -> _Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _settled(stamp: tuple[int, int, int], now_ns: int) -> bool:
    """Whether a stamp is old enough to vouch for its file: a second change in the same clock tick as the last one
    would leave the mtime as it was (git's "racily clean" rule)."""
    return stamp[0] < now_ns - _RACY_NS


class Store:
    """An Ollama-compatible model store rooted at ``root`` (``$OLLAMA_MODELS``); safe to share between threads."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(os.path.abspath(root))
        self.blobs_dir = self.root / "blobs"
        self.manifests_dir = self.root / "manifests"
        self._lock = threading.RLock()
        self._listing: tuple[list[tuple[str, _Stamp]], tuple[tuple[str, int, int], ...]] | None = None
        self.locks_dir = locks.locks_dir(self.root)
        self._store_lock = locks.LockFile(self.locks_dir / "store.lock")
        self._store_depth = 0
        # Blobs this process wrote for a manifest it has not written yet, pinned against other processes' removers.
        self._fresh: dict[str, tuple[locks.LockFile, float]] = {}
        weakref.finalize(self, _release_all, self._fresh)

    # ------------------------------------------------------------------------------------------- locking

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """The store-wide lock (this thread's, reentrant) around changes of references and blob removals."""
        with self._lock:
            if self._store_depth == 0:
                self._store_lock.acquire()
            self._store_depth += 1
            try:
                yield
            finally:
                self._store_depth -= 1
                if self._store_depth == 0:
                    self._store_lock.release()

    def pin(self, digest: str, *, blocking: bool = True) -> locks.LockFile | None:
        """Hold a blob against removal by any process until the returned lock is released (``release_and_tidy``).

        A remover holds a blob for milliseconds; ``blocking`` waits for it, otherwise None says "try again". The
        blob may or may not exist."""
        lock = self._blob_lock(digest, "pin")
        return lock if lock.acquire(shared=True, blocking=blocking) else None

    def download_lock(self, digest: str) -> locks.LockFile:
        """The lock the one process downloading ``digest`` holds (unacquired)."""
        return self._blob_lock(digest, "download")

    def _blob_lock(self, digest: str, kind: str) -> locks.LockFile:
        return locks.blob_lock(self.root, canonical_digest(digest)[len("sha256:"):], kind)

    def _hold_fresh(self, digest: str) -> None:
        """Pin a blob this process is writing for a manifest it will write next; called before the blob appears."""
        now = time.monotonic()
        with self._lock:
            held = self._fresh.get(digest)
            if held is not None:
                self._fresh[digest] = (held[0], now)
                return
            for old, (lock, since) in list(self._fresh.items()):
                if now - since > _FRESH_HOLD_S or len(self._fresh) >= _FRESH_MAX:
                    del self._fresh[old]
                    lock.release_and_tidy()
            pin = self.pin(digest)
            assert pin is not None
            self._fresh[digest] = (pin, now)

    def _drop_fresh(self, digests: Iterable[str]) -> None:
        with self._lock:
            for digest in digests:
                held = self._fresh.pop(canonical_digest(digest), None)
                if held is not None:
                    held[0].release_and_tidy()

    def _remove_blob(self, digest: str) -> bool:
        """Remove an unreferenced blob unless some process holds it (then it stays, for a later prune).

        Called with the store lock held, after the caller found no manifest referencing ``digest``."""
        digest = canonical_digest(digest)
        self._drop_fresh([digest])  # this process's own hold: removing it is this process's decision
        claim = self._blob_lock(digest, "pin")
        if not claim.acquire(blocking=False):
            log.info("kept blob %s: a pull or create in progress holds it", digest)
            return False
        try:
            os.unlink(self.blob_path(digest))
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.warning("could not remove blob %s: %s", digest, exc.strerror)
            return False
        finally:
            claim.release(remove=True)

    # ----------------------------------------------------------------------------------------------- blobs

    def blob_path(self, digest: str) -> Path:
        """``blobs/sha256-<hex>`` for a digest matching ``^sha256[:-][0-9a-fA-F]{64}$``; anything else is refused."""
        hex_part = canonical_digest(digest)[len("sha256:") :]
        path = self.blobs_dir / f"sha256-{hex_part}"
        if not _inside(self.blobs_dir, path):  # cannot happen for a validated digest; kept as a second lock
            raise InvalidDigest(digest)
        return path

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def blob_size(self, digest: str) -> int | None:
        try:
            st = os.stat(self.blob_path(digest))
        except OSError:
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def read_blob(self, digest: str, max_bytes: int = 16 << 20) -> bytes:
        """A small blob's bytes (template, system, params, license, messages, config)."""
        path = self.blob_path(digest)
        try:
            with open(path, "rb") as f:
                data = f.read(max_bytes + 1)
        except FileNotFoundError:
            raise MissingBlob(f"blob {canonical_digest(digest)} is missing") from None
        except OSError as exc:
            raise _oserror(f"cannot read blob {canonical_digest(digest)}", exc) from None
        if len(data) > max_bytes:
            raise StoreError(f"blob {canonical_digest(digest)} is larger than {max_bytes} bytes")
        return data

    def _tmp_path(self, directory: Path, kind: str) -> Path:
        return directory / f"{_TMP_PREFIX}{kind}-{uuid.uuid4().hex}"

    def write_blob(self, chunks: Iterable[bytes], expected_digest: str | None = None) -> tuple[str, int]:
        """Stream ``chunks`` into a blob, hashing as it writes; returns ``("sha256:<hex>", size)``.

        The data lands in a temporary file in ``blobs/`` and is renamed into place only after it is fsynced and
        its digest checked against ``expected_digest``; on a mismatch, an error from ``chunks`` or an interrupt,
        the temporary file is removed and no blob appears.
        """
        expected = canonical_digest(expected_digest) if expected_digest is not None else None
        try:
            self.blobs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _oserror("cannot create the blobs directory", exc) from None
        tmp = self._tmp_path(self.blobs_dir, "blob")
        placed = False
        try:
            try:
                f = open(tmp, "xb")  # noqa: SIM115 - closed below, after fsync
            except OSError as exc:
                raise _oserror("cannot write blob", exc) from None
            hasher = hashlib.sha256()
            size = 0
            with f:
                for chunk in chunks:
                    if not chunk:
                        continue
                    try:
                        f.write(chunk)
                    except OSError as exc:
                        raise _oserror("cannot write blob", exc) from None
                    hasher.update(chunk)
                    size += len(chunk)
                try:
                    f.flush()
                    os.fsync(f.fileno())
                except OSError as exc:
                    raise _oserror("cannot write blob", exc) from None
            digest = "sha256:" + hasher.hexdigest()
            if expected is not None and digest != expected:
                raise DigestMismatch(expected, digest)
            self._hold_fresh(digest)
            try:
                os.chmod(tmp, 0o644)
                os.replace(tmp, self.blob_path(digest))
            except OSError as exc:
                raise _oserror(f"cannot store blob {digest}", exc) from None
            placed = True
            _fsync_dir(self.blobs_dir)
            return digest, size
        finally:
            if not placed:
                self._unlink_quiet(tmp)

    def write_bytes(self, data: bytes, expected_digest: str | None = None) -> tuple[str, int]:
        return self.write_blob([data], expected_digest)

    def import_file(self, path: str | os.PathLike[str], link: bool = True) -> tuple[str, int]:
        """Add a local file as a blob; returns ``("sha256:<hex>", size)``.

        With ``link`` the file is hard-linked into ``blobs/`` when it is on the same filesystem (no second copy of
        a multi-gigabyte GGUF; later in-place edits of the original would show through, as with any hard link),
        otherwise it is copied through :meth:`write_blob`. Only regular files are accepted, so a device or FIFO
        path cannot hang or exhaust the server (CVE-2024-39721).
        """
        src = Path(path)
        try:
            st = os.stat(src)
        except FileNotFoundError:
            raise StoreError("cannot import the file: it does not exist") from None
        except OSError as exc:
            raise _oserror("cannot import the file", exc) from None
        if not stat.S_ISREG(st.st_mode):
            raise StoreError("cannot import the file: it is not a regular file")
        if link:
            linked = self._import_by_link(src)
            if linked is not None:
                return linked
        try:
            with open(src, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise StoreError("cannot import the file: it is not a regular file")
                return self.write_blob(iter(lambda: f.read(_CHUNK), b""))
        except OSError as exc:
            raise _oserror("cannot import the file", exc) from None

    def _import_by_link(self, src: Path) -> tuple[str, int] | None:
        try:
            self.blobs_dir.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        tmp = self._tmp_path(self.blobs_dir, "link")
        try:
            os.link(src, tmp)
        except OSError:
            return None  # another filesystem, or links not allowed: copy instead
        placed = False
        try:
            hasher = hashlib.sha256()
            size = 0
            with open(tmp, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise StoreError("cannot import the file: it is not a regular file")
                for chunk in iter(lambda: f.read(_CHUNK), b""):
                    hasher.update(chunk)
                    size += len(chunk)
            digest = "sha256:" + hasher.hexdigest()
            final = self.blob_path(digest)
            self._hold_fresh(digest)
            if not final.is_file():
                os.replace(tmp, final)
                placed = True
                _fsync_dir(self.blobs_dir)
            return digest, size
        except OSError as exc:
            raise _oserror("cannot import the file", exc) from None
        finally:
            if not placed:
                self._unlink_quiet(tmp)

    # ------------------------------------------------------------------------------------------- manifests

    def _name(self, name: str | ModelName) -> ModelName:
        return name if isinstance(name, ModelName) else parse_name(name)

    def manifest_path(self, name: str | ModelName) -> Path:
        """Where ``name``'s manifest lives (whether or not it exists), checked to lie inside ``manifests/``."""
        n = self._name(name)
        path = self.manifests_dir.joinpath(*n.parts())
        if not _inside(self.manifests_dir, path):
            raise InvalidModelName(f"invalid model name {n.display_long()!r}")
        return path

    def _find_on_disk(self, name: ModelName) -> ModelName | None:
        """Depth-first, case-insensitive search for ``name``'s manifest, exact spellings tried first."""
        wanted = name.parts()

        def walk(directory: Path, depth: int, found: list[str]) -> list[str] | None:
            try:
                entries = os.listdir(directory)
            except OSError:
                return None
            part = wanted[depth]
            candidates = ([part] if part in entries else []) + sorted(
                e for e in entries if e != part and e.lower() == part.lower()
            )
            for entry in candidates:
                path = directory / entry
                if depth == 3:
                    if path.is_file():
                        return [*found, entry]
                elif path.is_dir():
                    hit = walk(path, depth + 1, [*found, entry])
                    if hit is not None:
                        return hit
            return None

        hit = walk(self.manifests_dir, 0, [])
        if hit is None:
            return None
        try:
            return ModelName.from_parts(*hit)
        except InvalidModelName:
            return None

    def existing_name(self, name: str | ModelName) -> ModelName:
        """The on-disk spelling of a manifest matching ``name`` case-insensitively, else ``name`` itself.

        Ollama writes pulls, creates and copies to the existing spelling (``getExistingName``), so ``Llama3`` and
        ``llama3`` never become two models.
        """
        n = self._name(name)
        return self._find_on_disk(n) or n

    def settled_stamp(self, name: ModelName) -> tuple[int, int, int] | None:
        """(mtime, size, inode) of a manifest that has not changed for a while, for caches of what it means; None
        when it is missing or changed too recently for its mtime to tell a second change (see ``listing_key``)."""
        stamp = _stamp(str(self.manifest_path(name)))
        if stamp is None or not _settled(stamp, time.time_ns()):
            return None
        return stamp

    def resolve(self, name: str | ModelName) -> ModelName:
        """The on-disk spelling of an existing model; raises :class:`ModelNotFound`."""
        n = self._name(name)
        found = self._find_on_disk(n)
        if found is None:
            raise ModelNotFound(name if isinstance(name, str) else n)
        return found

    def _read_raw(self, path: Path, name: ModelName) -> tuple[bytes, os.stat_result]:
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise CorruptManifest(f"manifest for {name.display_shortest()} is not a regular file")
                raw = f.read(MAX_MANIFEST_BYTES + 1)
        except FileNotFoundError:
            raise ModelNotFound(name) from None
        except IsADirectoryError:
            raise CorruptManifest(f"manifest for {name.display_shortest()} is not a regular file") from None
        except OSError as exc:
            raise _oserror(f"cannot read the manifest for {name.display_shortest()}", exc) from None
        if len(raw) > MAX_MANIFEST_BYTES:
            raise CorruptManifest(f"manifest for {name.display_shortest()} is too large")
        return raw, st

    def _record(self, name: ModelName, raw: bytes, st: os.stat_result) -> ManifestRecord:
        try:
            manifest = Manifest.parse(raw)
        except ManifestError as exc:
            raise CorruptManifest(f"manifest for {name.display_shortest()} is malformed: {exc}") from None
        return ManifestRecord(
            name=name,
            manifest=manifest,
            raw=raw,
            digest=hashlib.sha256(raw).hexdigest(),
            size=manifest.size,
            modified_at=datetime.fromtimestamp(st.st_mtime).astimezone(),
        )

    def read_manifest(self, name: str | ModelName) -> ManifestRecord:
        """Read and parse a model's manifest (found case-insensitively)."""
        found = self.resolve(name)
        raw, st = self._read_raw(self.manifest_path(found), found)
        return self._record(found, raw, st)

    def _check_blobs(self, manifest: Manifest) -> None:
        for layer in manifest.blobs():
            size = self.blob_size(layer.digest)
            if size is None:
                raise MissingBlob(f"blob {canonical_digest(layer.digest)} referenced by the manifest is missing")
            if size != layer.size:
                raise MissingBlob(
                    f"blob {canonical_digest(layer.digest)} is {size} bytes but the manifest says {layer.size}"
                )

    def _write_manifest_file(self, path: Path, raw: bytes) -> None:
        for attempt in range(3):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise _oserror("cannot create the manifest directory", exc) from None
            tmp = self._tmp_path(path.parent, "manifest")
            placed = False
            try:
                with open(tmp, "xb") as f:
                    f.write(raw)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
                placed = True
                _fsync_dir(path.parent)
                return
            except FileNotFoundError as exc:
                # Another process (or Ollama) removed the empty directory between mkdir and open: make it again.
                if attempt == 2:
                    raise _oserror("cannot write the manifest", exc) from None
            except OSError as exc:
                raise _oserror("cannot write the manifest", exc) from None
            finally:
                if not placed:
                    self._unlink_quiet(tmp)

    def write_manifest_bytes(self, name: str | ModelName, raw: bytes) -> ManifestRecord:
        """Store manifest bytes as they are (a pull keeps the registry's exact bytes, so the digest matches).

        The bytes must parse and every blob they name must already be in the store with the declared size.
        A manifest whose name differs only by case is replaced in place, keeping its on-disk spelling.
        """
        try:
            manifest = Manifest.parse(raw)
        except ManifestError as exc:
            raise CorruptManifest(str(exc)) from None
        n = self._name(name)
        with self.exclusive():  # no other process removes a blob between the check and the rename
            self._check_blobs(manifest)
            target = self.existing_name(n)
            path = self.manifest_path(target)
            self._write_manifest_file(path, raw)
            raw_back, st = self._read_raw(path, target)
            record = self._record(target, raw_back, st)
        self._drop_fresh(canonical_digest(layer.digest) for layer in manifest.blobs())
        return record

    def write_manifest(self, name: str | ModelName, manifest: Manifest) -> ManifestRecord:
        """Write a manifest the way Ollama's create does (``json.Encoder`` bytes), after checking its blobs."""
        return self.write_manifest_bytes(name, manifest.to_json_bytes())

    def _manifest_entries(self, dirs: list[tuple[str, _Stamp]] | None = None,
                          ) -> Iterator[tuple[os.DirEntry[str], list[str]]]:
        """Every file exactly four levels under ``manifests/`` (Ollama globs ``*/*/*/*``), with its parts, sorted.

        ``os.scandir`` rather than pathlib: directory entries carry their type, so a walk costs one system call per
        directory and no Path objects. ``dirs`` collects each directory scanned with its stamp, taken before the
        scan so that a change during the walk shows up as a newer stamp next time."""
        def entries(directory: str, want_dir: bool) -> list[os.DirEntry[str]]:
            if dirs is not None:
                dirs.append((directory, _stamp(directory)))
            try:
                with os.scandir(directory) as it:
                    found = [e for e in it if (e.is_dir() if want_dir else e.is_file())]
            except OSError:
                return []
            return sorted(found, key=lambda e: e.name)

        for host in entries(str(self.manifests_dir), True):
            for namespace in entries(host.path, True):
                for model in entries(namespace.path, True):
                    for tag in entries(model.path, False):
                        yield tag, [host.name, namespace.name, model.name, tag.name]

    def _manifest_files(self) -> Iterator[tuple[Path, list[str]]]:
        for entry, parts in self._manifest_entries():
            yield Path(entry.path), parts

    def listing_key(self) -> tuple[tuple[str, int, int], ...]:
        """Changes whenever a manifest is added, removed or rewritten (by this process or another): for caches.

        ``/api/tags`` asks on every poll, so the last walk is kept with a stamp of every directory and file it saw,
        and reused while all stamps hold: adding, removing or renaming an entry changes its directory's mtime, a
        rewrite changes the file's stamp. Stamps taken within ``_RACY_NS`` of a change are not trusted (a second
        change in the same clock tick would leave the mtime as it was), so until things settle every call walks.
        """
        cached = self._listing
        if cached is not None and all(_stamp(path) == stamp for path, stamp in cached[0]):
            return cached[1]
        started = time.time_ns()
        stamps: list[tuple[str, _Stamp]] = []
        key = []
        files: list[tuple[str, _Stamp]] = []
        for entry, _parts in self._manifest_entries(stamps):
            try:
                st = entry.stat()
            except OSError:
                continue
            files.append((entry.path, (st.st_mtime_ns, st.st_size, st.st_ino)))
            key.append((entry.path, st.st_mtime_ns, st.st_size))
        stamps += files
        result = tuple(key)
        settled = all(stamp is None or _settled(stamp, started) for _path, stamp in stamps)
        self._listing = (stamps, result) if settled else None
        return result

    def list_models(self) -> list[ManifestRecord]:
        """All readable manifests, newest first; a malformed one is skipped with a warning, never an error."""
        records: list[ManifestRecord] = []
        for path, parts in self._manifest_files():
            if parts[3].startswith(_TMP_PREFIX):
                continue
            try:
                name = ModelName.from_parts(*parts)
            except InvalidModelName:
                log.warning("skipping manifest with an invalid name: %s", "/".join(parts))
                continue
            try:
                raw, st = self._read_raw(path, name)
                records.append(self._record(name, raw, st))
            except StoreError as exc:
                log.warning("skipping bad manifest %s: %s", name.display_shortest(), exc)
        records.sort(key=lambda r: r.modified_at, reverse=True)
        return records

    def referenced_digests(self) -> set[str]:
        """Every blob digest (``sha256:<hex>``) some manifest references; unparsable ones count conservatively."""
        refs: set[str] = set()
        for path, _parts in self._manifest_files():
            if path.name.startswith(_TMP_PREFIX):
                continue
            try:
                with open(path, "rb") as f:
                    raw = f.read(MAX_MANIFEST_BYTES + 1)
            except OSError:
                continue
            refs |= _referenced_in(raw)
        return refs

    def _prune_parents(self, path: Path) -> int:
        """Remove empty directories from ``path``'s parent up to, not including, ``manifests/``."""
        removed = 0
        directory = path.parent
        while _inside(self.manifests_dir, directory):
            try:
                os.rmdir(directory)
            except OSError:
                break
            removed += 1
            directory = directory.parent
        return removed

    def delete(self, name: str | ModelName) -> list[str]:
        """Remove a model: its manifest, then empty parent directories, then blobs no other manifest references.

        Returns the digests of the blobs removed. A manifest that no longer parses can still be deleted; its
        blobs are then found by scanning its bytes for digests.
        """
        with self.exclusive():
            found = self.resolve(name)
            path = self.manifest_path(found)
            raw, _st = self._read_raw(path, found)
            candidates = _referenced_in(raw)
            try:
                os.unlink(path)
            except FileNotFoundError:
                raise ModelNotFound(found) from None
            except OSError as exc:
                raise _oserror(f"cannot delete {found.display_shortest()}", exc) from None
            self._prune_parents(path)
            in_use = self.referenced_digests()
            return [digest for digest in sorted(candidates - in_use) if self._remove_blob(digest)]

    def remove_unreferenced(self, digests: Iterable[str]) -> list[str]:
        """Remove those of ``digests`` that no manifest references any more (the layers a pull replaced)."""
        with self.exclusive():
            in_use = self.referenced_digests()
            return [digest for digest in sorted({canonical_digest(d) for d in digests} - in_use)
                    if self._remove_blob(digest)]

    def copy(self, src: str | ModelName, dst: str | ModelName) -> ManifestRecord:
        """Copy a manifest file byte for byte under a new name (blobs are shared, not copied)."""
        with self.exclusive():  # the source's blobs stay until the copy references them too
            source = self.resolve(src)
            raw, _st = self._read_raw(self.manifest_path(source), source)
            target = self.existing_name(self._name(dst))
            path = self.manifest_path(target)
            self._write_manifest_file(path, raw)
            raw_back, st = self._read_raw(path, target)
            return self._record(target, raw_back, st)

    def prune(self, min_age: float = 3600.0) -> PruneResult:
        """Ollama's startup prune, run only when every manifest parses.

        Blob files at least ``min_age`` seconds old are removed when no manifest references them or when their
        name is not a valid digest (partial downloads, leftovers of interrupted writes). Empty directories under
        ``manifests/`` are removed. The age rule spares blobs a pull or create is writing right now; so do the
        locks, however old the files: a blob that another process holds (a pull or create whose manifest is not
        written yet) and the ``-partial`` files of a download in progress in another process stay.
        """
        with self.exclusive():
            result = PruneResult()
            now = time.time()
            refs: set[str] = set()
            for path, parts in self._manifest_files():
                if parts[3].startswith("."):
                    if parts[3].startswith(_TMP_PREFIX) and self._older(path, now, min_age):
                        self._unlink_quiet(path)
                    continue
                try:
                    name = ModelName.from_parts(*parts)
                    raw, st = self._read_raw(path, name)
                    record = self._record(name, raw, st)
                except (InvalidModelName, StoreError) as exc:
                    result.skipped = True
                    result.reason = f"corrupt manifests detected, skipping prune: {exc}"
                    log.warning("%s", result.reason)
                    return result
                refs |= {canonical_digest(layer.digest) for layer in record.manifest.blobs()}

            try:
                entries = list(os.scandir(self.blobs_dir))
            except OSError:
                entries = []
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        continue
                    if now - entry.stat(follow_symlinks=False).st_mtime < min_age:
                        continue
                except OSError:
                    continue
                if not _inside(self.blobs_dir, Path(entry.path)):
                    continue
                match = DIGEST_RE.fullmatch(entry.name)
                if match is not None:
                    digest = "sha256:" + match.group(1).lower()
                    if digest in refs:
                        continue
                    if Path(entry.path) == self.blob_path(digest):
                        if self._remove_blob(digest):
                            result.removed_blobs.append(entry.name)
                        continue
                partial = _PARTIAL_RE.fullmatch(entry.name)
                if partial is not None and locks.is_busy(self.download_lock("sha256:" + partial.group(1))):
                    continue  # another process is downloading this blob right now
                if self._unlink_quiet(Path(entry.path)):
                    result.removed_blobs.append(entry.name)
            self._tidy_locks()
            result.removed_dirs = self._prune_empty_dirs()
            log.info("pruned %d unused blobs", len(result.removed_blobs))
            return result

    def _tidy_locks(self) -> None:
        """Remove the lock files of blobs nobody holds (a pull that failed before it could tidy up)."""
        try:
            names = os.listdir(self.locks_dir)
        except OSError:
            return
        for name in names:
            if _LOCK_FILE_RE.fullmatch(name):
                lock = locks.LockFile(self.locks_dir / name)
                if lock.acquire(blocking=False):
                    lock.release(remove=True)

    @staticmethod
    def _older(path: Path, now: float, min_age: float) -> bool:
        try:
            return now - os.stat(path).st_mtime >= min_age
        except OSError:
            return False

    @staticmethod
    def _unlink_quiet(path: Path) -> bool:
        try:
            os.unlink(path)
        except OSError:
            return False
        return True

    def _prune_empty_dirs(self) -> int:
        removed = 0
        if not self.manifests_dir.is_dir():
            return 0
        for directory, _dirs, _files in os.walk(self.manifests_dir, topdown=False):
            path = Path(directory)
            if path == self.manifests_dir or not _inside(self.manifests_dir, path) or path.is_symlink():
                continue
            try:
                os.rmdir(path)
                removed += 1
            except OSError:
                continue
        return removed


def _release_all(fresh: dict[str, tuple[locks.LockFile, float]]) -> None:
    """A collected Store's pins go with it."""
    for lock, _since in fresh.values():
        lock.release()
    fresh.clear()


__all__ = [
    "CorruptManifest",
    "DigestMismatch",
    "InvalidDigest",
    "ManifestRecord",
    "MissingBlob",
    "ModelNotFound",
    "PruneResult",
    "Store",
    "StoreError",
    "canonical_digest",
]
