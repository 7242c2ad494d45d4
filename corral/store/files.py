"""Filesystem helpers of the store: digest spellings, stamps, atomic-write details and leftovers of writers that died.

Shared by :mod:`corral.store.store` and :mod:`corral.store.prune`; nothing here knows a ``Store``.
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

from corral.errors import InvalidDigest, StoreError

from .manifest import Manifest, ManifestError

DIGEST_RE = re.compile(r"sha256[:-]([0-9a-fA-F]{64})")  # always used with fullmatch: "$" would allow "\n"
DIGEST_ANYWHERE_RE = re.compile(r"sha256[:-]([0-9a-fA-F]{64})")
PARTIAL_RE = re.compile(r"sha256-([0-9a-f]{64})-partial(?:-\d+)?")  # a download's data and part-state files
LOCK_FILE_RE = re.compile(r"sha256-([0-9a-f]{64})\.(pin|download)")
TMP_PREFIX = ".tmp-"  # never a valid digest or name part, so Ollama's prune and ours both recognise leftovers
TMP_BLOB = TMP_PREFIX + "blob-"

Stamp = tuple[int, int, int] | None  # mtime_ns, size, inode; None when missing
_RACY_NS = 2_000_000_000  # coarser than any filesystem's mtime granularity Corral is likely to meet


def canonical_digest(digest: str) -> str:
    """``sha256:<lowercase hex>`` for any accepted spelling (``sha256:`` or ``sha256-``, any hex case)."""
    match = DIGEST_RE.fullmatch(digest) if isinstance(digest, str) else None
    if match is None:
        raise InvalidDigest(digest)
    return "sha256:" + match.group(1).lower()


def inside(base: Path, path: Path) -> bool:
    b, p = os.path.normpath(base), os.path.normpath(path)
    return p != b and os.path.commonpath([b, p]) == b


def fsync_dir(path: Path) -> None:
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


def oserror(action: str, exc: OSError) -> StoreError:
    return StoreError(f"{action}: {exc.strerror or exc.__class__.__name__}")


def referenced_in(raw: bytes) -> set[str]:
    """Digests a manifest references; for bytes that do not parse, every digest-shaped string (conservative)."""
    try:
        return {canonical_digest(layer.digest) for layer in Manifest.parse(raw).blobs()}
    except ManifestError:
        text = raw.decode("utf-8", "replace")
        return {"sha256:" + m.lower() for m in DIGEST_ANYWHERE_RE.findall(text)}


def stamp(path: str) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def settled(stamp: tuple[int, int, int], now_ns: int) -> bool:
    """Whether a stamp is old enough to vouch for its file: a second change in the same clock tick as the last one
    would leave the mtime as it was (git's "racily clean" rule)."""
    return stamp[0] < now_ns - _RACY_NS


def abandoned(path: Path) -> bool:
    """Whether a temporary blob's writer is gone: a writer holds an exclusive flock on it until it is placed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def older(path: Path, now: float, min_age: float) -> bool:
    try:
        return now - os.stat(path).st_mtime >= min_age
    except OSError:
        return False


def unlink_quiet(path: Path) -> bool:
    try:
        os.unlink(path)
    except OSError:
        return False
    return True
