"""Progress objects of pull and push, shaped like Ollama's ``api.ProgressResponse``.

``digest``, ``total`` and ``completed`` are ``omitempty`` there, so a zero or empty value is left out, and clients
(the ``ollama`` Python library, Open WebUI, Corral's own CLI) read a missing ``completed`` as 0.
"""

from __future__ import annotations

from typing import Any

Progress = dict[str, Any]


def status(text: str) -> Progress:
    """A step without a size: ``pulling manifest``, ``writing manifest``, ``success``."""
    return {"status": text}


def blob(verb: str, digest: str, total: int, completed: int) -> Progress:
    """``<verb> <digest[7:19]>`` with the blob's byte counts."""
    out: Progress = {"status": f"{verb} {digest[7:19]}", "digest": digest}
    if total:
        out["total"] = total
    if completed:
        out["completed"] = completed
    return out
