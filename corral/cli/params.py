"""Typing of user-supplied values before they travel to the server: model parameters, keep-alive, think levels.

The CLI checks these itself (as Ollama's does) so that a typo is reported at once, with Ollama's wording, instead
of failing a request after a model has loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from corral.config import parse_go_duration
from corral.errors import ParamError

# Ollama's api.Options json tags and their Go kinds (COMPAT.md §2.13 and §7).
INT_PARAMS = frozenset(
    {"num_keep", "seed", "num_predict", "top_k", "repeat_last_n", "num_ctx", "num_batch", "num_gpu", "main_gpu",
     "num_thread", "draft_num_predict"}
)
FLOAT_PARAMS = frozenset(
    {"top_p", "min_p", "typical_p", "temperature", "repeat_penalty", "presence_penalty", "frequency_penalty"}
)
BOOL_PARAMS = frozenset({"use_mmap"})
LIST_PARAMS = frozenset({"stop"})
# Accepted in old Modelfiles; Ollama warns and drops them.
DEPRECATED_PARAMS = frozenset(
    {"penalize_newline", "low_vram", "f16_kv", "logits_all", "vocab_only", "use_mlock", "mirostat", "mirostat_tau",
     "mirostat_eta"}
)
KNOWN_PARAMS = INT_PARAMS | FLOAT_PARAMS | BOOL_PARAMS | LIST_PARAMS

THINK_LEVELS = ("high", "medium", "low", "max")


def _go_list(values: Sequence[str]) -> str:
    return "[" + " ".join(values) + "]"


def _parse_go_int(text: str) -> int:
    """``strconv.ParseInt(s, 0, 0)``-ish: decimal with optional sign, also 0x/0o/0b prefixes and underscores."""
    return int(text.replace("_", ""), 0) if text[:2].lower() in ("0x", "0o", "0b") else int(text, 10)


def _parse_go_bool(text: str) -> bool:
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(text)


def format_params(params: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """``api.FormatParams``: turn ``{name: [raw values]}`` into typed option values, or raise :class:`ParamError`."""
    out: dict[str, Any] = {}
    for key, values in params.items():
        if key not in KNOWN_PARAMS:
            raise ParamError(f"unknown parameter '{key}'")
        if not values:
            raise ParamError(f"missing value for parameter '{key}'")
        first = values[0]
        try:
            if key in FLOAT_PARAMS:
                out[key] = float(first)
            elif key in INT_PARAMS:
                out[key] = _parse_go_int(first)
            elif key in BOOL_PARAMS:
                out[key] = _parse_go_bool(first)
            else:
                out[key] = list(values)
        except ValueError:
            kind = "float" if key in FLOAT_PARAMS else "int" if key in INT_PARAMS else "bool"
            raise ParamError(f"invalid {kind} value {_go_list(values)}") from None
    return out


def keep_alive_value(text: str) -> str | int:
    """A ``--keepalive`` flag (Go duration syntax) as the API wants it: ``"5m0s"``-style, or ``-1`` for forever.

    Raises ``ValueError`` with Go's message (``time: invalid duration "x"``) on bad input.
    """
    seconds = parse_go_duration(text)
    if seconds < 0:
        return -1
    from corral.cli.format import go_duration

    return go_duration(round(seconds * 1_000_000_000))


def think_value(text: str) -> bool | str:
    """``--think[=true|false|high|medium|low|max]``; a bare ``--think`` arrives here as ``"true"``."""
    if text in ("", "true"):
        return True
    if text == "false":
        return False
    if text in THINK_LEVELS:
        return text
    raise ParamError(f'invalid value for --think: "{text}" (must be true, false, high, medium, low, or max)')


def go_quote(text: str) -> str:
    """Go's ``%q`` for an ASCII-friendly string: double quotes with backslash escapes."""
    escaped = []
    for ch in text:
        if ch == '"':
            escaped.append('\\"')
        elif ch == "\\":
            escaped.append("\\\\")
        elif ch == "\n":
            escaped.append("\\n")
        elif ch == "\t":
            escaped.append("\\t")
        elif ch == "\r":
            escaped.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            escaped.append(f"\\x{ord(ch):02x}")
        else:
            escaped.append(ch)
    return '"' + "".join(escaped) + '"'
