"""Go's ``encoding/json`` for Go values in Python: what Ollama's ``json`` template function and the ``String``
methods of its template types (JSON of themselves) print: compact, map keys sorted, struct fields by their tags,
``<>&`` escaped, floats as Go formats them."""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping
from typing import Any

from .gofmt import GoStruct, digits_e, digits_f, float_digits, go_type

__all__ = ["NIL_EMPTY", "OMITEMPTY", "OMITNIL", "go_json"]

OMITEMPTY = 1
"""JSON field flag: leave out when empty (false, 0, "", nil, empty list/map), as Go's ``omitempty``."""
NIL_EMPTY = 2
"""JSON field flag: an empty list or map stands for a Go nil slice/map and encodes as ``null``."""
OMITNIL = 4
"""JSON field flag: leave out only when ``None`` (``omitempty`` on a Go interface field)."""


class _Unsupported(Exception):
    """A value ``encoding/json`` refuses; :func:`go_json` turns it into ``ValueError``."""


def _json_float(x: float) -> str:
    """Go's float64 encoding: positional, but exponent form below 1e-6 and from 1e21 on (``1e-7``, ``1e+21``)."""
    if x != x or math.isinf(x):
        raise _Unsupported("unsupported value")
    if x == 0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    a = abs(x)
    digits, dp = float_digits(a)
    if a < 1e-6 or a >= 1e21:
        s = digits_e(digits, dp)
        if s[-3] == "-" and s[-2] == "0":
            s = s[:-2] + s[-1]
    else:
        s = digits_f(digits, dp)
    return "-" + s if x < 0 else s


_JSON_ESC_RE = re.compile('[\x00-\x1f"\\\\<>&\u2028\u2029\ud800-\udfff]')
_JSON_ESC = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def _json_esc(m: re.Match[str]) -> str:
    c = m.group()
    e = _JSON_ESC.get(c)
    if e is not None:
        return e
    if "\ud800" <= c <= "\udfff":
        return "\\ufffd"
    return f"\\u{ord(c):04x}"


def _json_str(s: str) -> str:
    return '"' + _JSON_ESC_RE.sub(_json_esc, s) + '"'


def _json_empty(v: Any) -> bool:
    if v is None or v is False or (v.__class__ in (int, float) and v == 0) or v == "":
        return True
    return isinstance(v, (list, tuple, Mapping, bytes, bytearray)) and len(v) == 0


def _json_enc(v: Any, out: list[str]) -> None:
    cls = v.__class__
    if cls is str:
        out.append(_json_str(v))
    elif v is None:
        out.append("null")
    elif cls is bool:
        out.append("true" if v else "false")
    elif cls is int:
        out.append(str(v))
    elif cls is float:
        out.append(_json_float(v))
    else:
        hook = getattr(cls, "__go_json__", None)
        if hook is not None:
            _json_enc(hook(v), out)
        elif isinstance(v, GoStruct):
            spec = v._json if v._json is not None else tuple((f, f, 0) for f in v._fields)
            out.append("{")
            first = True
            for attr, key, flags in spec:
                x = getattr(v, attr)
                if (flags & OMITEMPTY and _json_empty(x)) or (flags & OMITNIL and x is None):
                    continue
                if not first:
                    out.append(",")
                first = False
                out.append(_json_str(key))
                out.append(":")
                if flags & NIL_EMPTY and isinstance(x, (list, tuple, Mapping)) and not x:
                    out.append("null")
                else:
                    _json_enc(x, out)
            out.append("}")
        elif isinstance(v, Mapping):
            items = list(v.items()) if getattr(cls, "_go_ordered", False) else None
            if items is None:
                try:
                    items = sorted(((k if isinstance(k, str) else _json_key(k)), x) for k, x in v.items())
                except TypeError:
                    items = sorted(((_json_key(k), x) for k, x in v.items()), key=lambda kv: kv[0])
            out.append("{")
            for idx, (k, x) in enumerate(items):
                if idx:
                    out.append(",")
                out.append(_json_str(k if isinstance(k, str) else _json_key(k)))
                out.append(":")
                _json_enc(x, out)
            out.append("}")
        elif isinstance(v, (bytes, bytearray)):
            out.append('"' + base64.b64encode(bytes(v)).decode() + '"')
        elif isinstance(v, (list, tuple)):
            out.append("[")
            for idx, x in enumerate(v):
                if idx:
                    out.append(",")
                _json_enc(x, out)
            out.append("]")
        elif isinstance(v, bool):
            out.append("true" if v else "false")
        elif isinstance(v, int):
            out.append(str(int(v)))
        elif isinstance(v, float):
            out.append(_json_float(float(v)))
        elif isinstance(v, str):
            out.append(_json_str(str(v)))
        else:
            raise _Unsupported(f"json: unsupported type: {go_type(v)}")


def _json_key(k: Any) -> str:
    if isinstance(k, str):
        return k
    if isinstance(k, int) and not isinstance(k, bool):
        return str(k)
    raise _Unsupported(f"json: unsupported type: map[{go_type(k)}]interface {{}}")


def go_json(v: Any) -> str:
    """Go's ``json.Marshal`` output for a value: compact, map keys sorted, ``<>&`` escaped as ``\\u003c``...

    Raises ``ValueError`` for what Go refuses (NaN, infinities, unsupported types)."""
    out: list[str] = []
    try:
        _json_enc(v, out)
    except _Unsupported as e:
        raise ValueError(str(e)) from None
    return "".join(out)
