"""JSON bytes as Ollama's ``json.NewEncoder(w).Encode`` writes the params and messages layers.

A layer is addressed by the sha256 of its bytes, so the same Modelfile must give the same bytes as Ollama: map
keys sorted, no spaces, ``<``/``>``/``&`` escaped, a trailing newline, and numbers in Go's float format (``1`` where
Python writes ``1.0``, ``1e-7`` where Python writes ``1e-07``).
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

from corral.store.manifest import go_json


def go_float(value: float) -> str:
    """Go's ``encoding/json`` text for a float64: shortest digits, exponent form below 1e-6 or from 1e21 on."""
    if not math.isfinite(value):
        raise ValueError(f"json: unsupported value: {value}")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    magnitude = abs(value)
    if 1e-6 <= magnitude < 1e21:
        text = format(Decimal(repr(value)), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    mantissa, _, exponent = repr(value).partition("e")
    mantissa = mantissa.removesuffix(".0")
    sign = "-" if exponent.startswith("-") else "+"
    return f"{mantissa}e{sign}{int(exponent.lstrip('+-'))}"


def _encode(value: Any, out: list[str], *, sort_keys: bool) -> None:
    if value is None or isinstance(value, bool | str):
        out.append(go_json(value).decode("utf-8").rstrip("\n"))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(go_float(value))
    elif isinstance(value, dict):
        items = sorted(value.items()) if sort_keys else list(value.items())
        out.append("{")
        for i, (key, item) in enumerate(items):
            if i:
                out.append(",")
            _encode(str(key), out, sort_keys=sort_keys)
            out.append(":")
            _encode(item, out, sort_keys=True)  # nested values are Go maps: always sorted
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out, sort_keys=sort_keys)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def encode(value: Any, *, sort_keys: bool = True) -> bytes:
    """``value`` encoded like Go's ``json.Encoder``; ``sort_keys=False`` keeps the order of the outermost objects
    (a Go struct's field order), while nested objects are sorted like Go maps."""
    out: list[str] = []
    _encode(value, out, sort_keys=sort_keys)
    return ("".join(out) + "\n").encode("utf-8")


def decode(data: bytes) -> Any:
    return json.loads(data)
