"""Ollama's startup prune of a store, safe while other processes use the same store.

Unreferenced blobs, leftovers of interrupted writes and empty manifest directories go; what another process is
using stays: a blob held for a manifest not written yet, a download in progress, a temporary blob whose writer is
alive (it holds an ``flock`` on the file).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from corral.errors import StoreError

from . import locks
from .files import (
    DIGEST_RE,
    LOCK_FILE_RE,
    PARTIAL_RE,
    TMP_BLOB,
    TMP_PREFIX,
    abandoned,
    canonical_digest,
    inside,
    older,
    unlink_quiet,
)
from .names import InvalidModelName, ModelName


class Store(Protocol):
    """What the prune needs of a :class:`corral.store.store.Store`."""

    blobs_dir: Path
    manifests_dir: Path
    locks_dir: Path

    def exclusive(self) -> AbstractContextManager[None]: ...

    def manifest_files(self) -> Iterator[tuple[Path, list[str]]]: ...

    def record_of_file(self, path: Path, name: ModelName) -> Any: ...

    def blob_path(self, digest: str) -> Path: ...

    def remove_blob(self, digest: str) -> bool: ...

    def download_lock(self, digest: str) -> locks.LockFile: ...

log = logging.getLogger("corral.store.store")


@dataclass
class PruneResult:
    removed_blobs: list[str] = field(default_factory=list)
    removed_dirs: int = 0
    skipped: bool = False
    reason: str = ""


def prune(store: Store, min_age: float = 3600.0) -> PruneResult:
    """Run only when every manifest parses.

    Blob files at least ``min_age`` seconds old are removed when no manifest references them or when their name is
    not a valid digest (partial downloads, leftovers of interrupted writes). Empty directories under ``manifests/``
    are removed. The age rule spares blobs a pull or create is writing right now; so do the locks, however old the
    files: a blob that another process holds (a pull or create whose manifest is not written yet) and the
    ``-partial`` files of a download in progress in another process stay. A temporary blob nobody holds is a killed
    writer's and goes at once.
    """
    with store.exclusive():
        result = PruneResult()
        now = time.time()
        refs: set[str] = set()
        for path, parts in store.manifest_files():
            if parts[3].startswith("."):
                if parts[3].startswith(TMP_PREFIX) and older(path, now, min_age):
                    unlink_quiet(path)
                continue
            try:
                name = ModelName.from_parts(*parts)
                record = store.record_of_file(path, name)
            except (InvalidModelName, StoreError) as exc:
                result.skipped = True
                result.reason = f"corrupt manifests detected, skipping prune: {exc}"
                log.warning("%s", result.reason)
                return result
            refs |= {canonical_digest(layer.digest) for layer in record.manifest.blobs()}

        try:
            entries = list(os.scandir(store.blobs_dir))
        except OSError:
            entries = []
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    continue
                if entry.name.startswith(TMP_BLOB) and abandoned(Path(entry.path)):
                    if unlink_quiet(Path(entry.path)):  # its writer died (kill -9): no need to wait
                        result.removed_blobs.append(entry.name)
                    continue
                if now - entry.stat(follow_symlinks=False).st_mtime < min_age:
                    continue
            except OSError:
                continue
            if not inside(store.blobs_dir, Path(entry.path)):
                continue
            match = DIGEST_RE.fullmatch(entry.name)
            if match is not None:
                digest = "sha256:" + match.group(1).lower()
                if digest in refs:
                    continue
                if Path(entry.path) == store.blob_path(digest):
                    if store.remove_blob(digest):
                        result.removed_blobs.append(entry.name)
                    continue
            partial = PARTIAL_RE.fullmatch(entry.name)
            if partial is not None and locks.is_busy(store.download_lock("sha256:" + partial.group(1))):
                continue  # another process is downloading this blob right now
            if unlink_quiet(Path(entry.path)):
                result.removed_blobs.append(entry.name)
        _tidy_locks(store)
        result.removed_dirs = _prune_empty_dirs(store)
        log.info("pruned %d unused blobs", len(result.removed_blobs))
        return result



def _tidy_locks(store: Store) -> None:
    """Remove the lock files of blobs nobody holds (a pull that failed before it could tidy up)."""
    try:
        names = os.listdir(store.locks_dir)
    except OSError:
        return
    for name in names:
        if LOCK_FILE_RE.fullmatch(name):
            lock = locks.LockFile(store.locks_dir / name)
            if lock.acquire(blocking=False):
                lock.release(remove=True)


def _prune_empty_dirs(store: Store) -> int:
    removed = 0
    if not store.manifests_dir.is_dir():
        return 0
    for directory, _dirs, _files in os.walk(store.manifests_dir, topdown=False):
        path = Path(directory)
        if path == store.manifests_dir or not inside(store.manifests_dir, path) or path.is_symlink():
            continue
        try:
            os.rmdir(path)
            removed += 1
        except OSError:
            continue
    return removed
