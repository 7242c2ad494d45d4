"""Pieces both conversion and quantization use: progress reporting and publishing the output file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

ProgressFn = Callable[[str, int, int], None]


class CallbackFailed(Exception):
    """An exception raised by the caller's progress callback, carried past the ``except Exception`` that turns
    everything else into ``ConvertError``, so a callback can cancel the work with its own exception."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


def report(progress: ProgressFn | None, status: str, done: int, total: int) -> None:
    if progress is None:
        return
    try:
        progress(status, done, total)
    except Exception as exc:
        raise CallbackFailed(exc) from exc


def publish(tmp: Path, dst: Path) -> None:
    """Rename the finished, fsynced temp file onto ``dst`` with ordinary permissions (mkstemp makes it 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, dst)
