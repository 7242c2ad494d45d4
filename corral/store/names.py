"""Model names: Ollama's ``[scheme://][host/][namespace/]model[:tag]`` grammar, parsed strictly.

A name becomes four directory levels under ``manifests/``, so parsing is also the store's first line of defence
against path traversal: every accepted part is ASCII, starts with a letter, digit or underscore, and holds only
characters that cannot form ``..``, a separator or a drive letter on their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from corral.errors import InvalidModelName

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

MAX_HOST_LENGTH = 350
MAX_PART_LENGTH = 80
# Longest text worth looking at: a scheme plus four maximal parts and their separators.
MAX_NAME_LENGTH = 32 + MAX_HOST_LENGTH + 3 * MAX_PART_LENGTH + 3

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
# First character alphanumeric or "_", then the part's own set (Ollama's isValidPart).
_PART_RES = {
    "host": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:\-]*"),
    "namespace": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]*"),
    "model": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*"),
    "tag": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*"),
}
_PART_RULES = {
    "host": "letters, digits, '_', '-', '.' and ':'",
    "namespace": "letters, digits, '_' and '-'",
    "model": "letters, digits, '_', '-' and '.'",
    "tag": "letters, digits, '_', '-' and '.'",
}


def _fail(text: object, reason: str) -> InvalidModelName:
    shown = f"{text[:117]}..." if isinstance(text, str) and len(text) > 120 else text
    return InvalidModelName(f"invalid model name {shown!r}: {reason}")


def _check_part(kind: str, value: str, text: object) -> None:
    limit = MAX_HOST_LENGTH if kind == "host" else MAX_PART_LENGTH
    if not value:
        raise _fail(text, f"the {kind} is empty")
    if len(value) > limit:
        raise _fail(text, f"the {kind} is longer than {limit} characters")
    if not _PART_RES[kind].fullmatch(value):
        if not (value[0].isascii() and (value[0].isalnum() or value[0] == "_")):
            raise _fail(text, f"the {kind} must start with a letter, a digit or '_'")
        raise _fail(text, f"the {kind} may only contain {_PART_RULES[kind]}")


@dataclass(frozen=True)
class ModelName:
    """A fully qualified, validated name; construct it with :func:`parse_name` or :meth:`from_parts`."""

    host: str
    namespace: str
    model: str
    tag: str

    def __post_init__(self) -> None:
        for kind in ("host", "namespace", "model", "tag"):
            value = getattr(self, kind)
            if not isinstance(value, str):
                raise _fail(value, f"the {kind} must be a string")
            _check_part(kind, value, f"{self.host}/{self.namespace}/{self.model}:{self.tag}")

    @classmethod
    def from_parts(cls, host: str, namespace: str, model: str, tag: str) -> ModelName:
        """Build a name from four parts, e.g. the directory levels of a manifest path; validates each part."""
        return cls(host, namespace, model, tag)

    def parts(self) -> tuple[str, str, str, str]:
        """The four path components of this name's manifest, in order."""
        return (self.host, self.namespace, self.model, self.tag)

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Case-folded parts: Ollama matches existing names case-insensitively (ASCII only, as parts are ASCII)."""
        return (self.host.lower(), self.namespace.lower(), self.model.lower(), self.tag.lower())

    def display_shortest(self) -> str:
        """Ollama's DisplayShortest: drop the default host (and then the default namespace); always keep ``:tag``."""
        if self.host.lower() != DEFAULT_HOST:
            prefix = f"{self.host}/{self.namespace}/"
        elif self.namespace.lower() != DEFAULT_NAMESPACE:
            prefix = f"{self.namespace}/"
        else:
            prefix = ""
        return f"{prefix}{self.model}:{self.tag}"

    def display_long(self) -> str:
        """Every part spelled out: ``host/namespace/model:tag``."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    def __str__(self) -> str:
        return self.display_long()


def split_scheme(text: str) -> tuple[str | None, str]:
    """Split an optional ``scheme://`` prefix off a name; the registry client needs it (``http://`` means insecure)."""
    match = _SCHEME_RE.match(text)
    if match is None:
        return None, text
    return match.group(1).lower(), text[match.end() :]


def parse_name(text: str) -> ModelName:
    """Parse ``[scheme://][host/][namespace/]model[:tag]`` and fill Ollama's defaults.

    The tag is split at the last ``:`` only when it follows the last ``/`` (so ``host:port/ns/m`` works); the rest
    is split from the right on ``/``. Anything that is not a valid name raises :class:`InvalidModelName`.
    """
    if not isinstance(text, str):
        raise _fail(text, "a model name must be a string")
    if not text:
        raise _fail(text, "the name is empty")
    if len(text) > MAX_NAME_LENGTH:
        raise _fail(text, f"the name is longer than {MAX_NAME_LENGTH} characters")
    if not text.isascii():
        raise _fail(text, "model names may only contain ASCII characters")
    if any(ord(c) < 0x20 or c == "\x7f" for c in text):
        raise _fail(text, "model names may not contain control characters")
    if "\\" in text:
        raise _fail(text, "model names may not contain '\\'")
    if text.startswith("/"):
        raise _fail(text, "a model name is not a path")

    _scheme, rest = split_scheme(text)

    tag = DEFAULT_TAG
    colon, slash = rest.rfind(":"), rest.rfind("/")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not tag:
            raise _fail(text, "the tag after ':' is empty")

    pieces = rest.split("/")
    if len(pieces) > 3:
        raise _fail(text, "too many '/'-separated parts (at most host/namespace/model:tag)")
    for piece in pieces:
        if piece in (".", ".."):
            raise _fail(text, "'.' and '..' are not name parts")
    model = pieces[-1]
    namespace = pieces[-2] if len(pieces) >= 2 else DEFAULT_NAMESPACE
    host = pieces[-3] if len(pieces) >= 3 else DEFAULT_HOST
    for kind, value in (("host", host), ("namespace", namespace), ("model", model), ("tag", tag)):
        _check_part(kind, value, text)
    return ModelName(host, namespace, model, tag)
