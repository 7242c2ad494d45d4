"""Advisory file locks that let several Corral processes (replicas) share one model store safely.

Blobs and manifests are already written to temporary files and renamed, so a reader never sees half a file. What
renames alone cannot order is a writer against a remover: a pull placing a blob whose manifest does not exist yet,
while another replica deletes a model that shared the blob or prunes "unreferenced" blobs at start-up. These locks
do, with ``flock(2)`` on small files under ``<store>/.locks/`` (outside ``blobs/`` and ``manifests/``, so the layout
Ollama reads is unchanged):

- ``store.lock``, exclusive, around every change of what the manifests reference and every blob removal: writing
  a manifest (check its blobs, rename it into place), copy, delete, prune. Each holds it for milliseconds.
- ``sha256-<hex>.pin``, shared, by whoever needs a blob that no manifest references yet (a pull from its first look
  at the blob to its manifest, a blob just written for a create). A remover takes it exclusive and without waiting:
  when it is held, the blob stays (an unreferenced blob left for a later prune, never a manifest without its blob).
- ``sha256-<hex>.download``, exclusive, by the one process that downloads, verifies and places a blob; another
  replica pulling the same blob waits for it, and prune leaves its ``-partial`` files alone.

``flock`` locks belong to an open file description, so two holders in one process exclude each other as two
processes do, and the kernel drops a dead process's locks. A lock file may be removed only by a holder of its
exclusive lock; :meth:`LockFile.acquire` checks after locking that the file it locked is still the one at its path.
A store that cannot hold lock files (a read-only ``OLLAMA_MODELS``) works unlocked, as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_DIR = ".locks"


class LockFile:
    """One ``flock`` on one file; not reentrant (a second :meth:`acquire` on a held lock is an error)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        self.held = False
        self.shared = False

    def acquire(self, *, shared: bool = False, blocking: bool = True) -> bool:
        """Take the lock; False only when ``blocking`` is off and another holder has it."""
        if self.held:
            raise RuntimeError(f"lock {self.path.name} is already held")
        operation = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
        while True:
            try:
                fd = self._open()
            except OSError as exc:
                # A read-only store, or a directory this user may not write: nothing to coordinate with then.
                _warn_unlocked(self.path.parent, exc)
                self.fd, self.held, self.shared = None, True, shared
                return True
            try:
                fcntl.flock(fd, operation)
            except BlockingIOError:
                os.close(fd)
                return False
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd, self.held, self.shared = fd, True, shared
                return True
            os.close(fd)  # removed (and maybe re-created) by its last exclusive holder while we waited: retry

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        try:
            return os.open(self.path, flags, 0o644)
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, flags, 0o644)

    def release(self, *, remove: bool = False) -> None:
        """Drop the lock; ``remove`` (only with the exclusive lock) deletes the lock file first."""
        if not self.held:
            return
        fd, self.fd, self.held = self.fd, None, False
        if fd is None:
            return
        if remove and not self.shared:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        os.close(fd)  # closing the last descriptor of the description releases the flock

    def release_and_tidy(self) -> None:
        """Drop a lock and remove its file when nobody else holds it (so ``.locks/`` does not grow per blob)."""
        self.release()
        if self.acquire(blocking=False):
            self.release(remove=True)

    def __enter__(self) -> LockFile:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


_warned: set[str] = set()


def _warn_unlocked(directory: Path, exc: OSError) -> None:
    if str(directory) not in _warned:
        _warned.add(str(directory))
        log.warning("cannot use lock files in %s (%s): this process does not coordinate with other Corral "
                    "processes sharing the store", directory, exc.strerror or exc.__class__.__name__)


def locks_dir(root: Path) -> Path:
    return root / LOCK_DIR


def blob_lock(root: Path, digest_hex: str, kind: str) -> LockFile:
    """The ``pin`` or ``download`` lock of one blob (``digest_hex`` already validated: 64 lowercase hex)."""
    return LockFile(locks_dir(root) / f"sha256-{digest_hex}.{kind}")


def is_busy(lock: LockFile) -> bool:
    """Whether someone else holds ``lock`` (in any mode), checked by taking it exclusively for an instant."""
    if lock.acquire(blocking=False):
        lock.release()
        return False
    return True


__all__ = ["LOCK_DIR", "LockFile", "blob_lock", "is_busy", "locks_dir"]
