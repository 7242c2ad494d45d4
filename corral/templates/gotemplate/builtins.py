"""The functions a template can call: Go's ``text/template`` builtins (``and``, ``eq``, ``index``, ``printf``...)
and Ollama's additions (``json``, ``currentDate``, ``yesterdayDate``, ``toTypeScriptType``), with Go's
truthiness, comparison rules and error messages."""

from __future__ import annotations

import datetime
import re
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

from .gofmt import fmt_value, go_sprint, go_sprintf, go_sprintln, go_type
from .gojson import go_json

__all__ = ["BUILTINS", "FuncEntry", "FuncError", "short_circuit", "truth"]


class FuncError(Exception):
    """Raised by a template function; reported as ``error calling NAME: MSG``."""


def truth(v: Any) -> bool:
    """Go template truthiness: false, 0, nil and empty strings/slices/maps are false; structs are true."""
    if v is None or v is False:
        return False
    if v is True:
        return True
    cls = v.__class__
    if cls is str or cls is list or cls is dict or cls is tuple:
        return len(v) > 0
    if cls is int or cls is float:
        return v != 0  # type: ignore[no-any-return]
    if isinstance(v, (str, bytes, bytearray, list, tuple, Mapping)):
        return len(v) > 0
    if isinstance(v, (int, float, complex)):
        return v != 0
    return True


_KINDS: dict[type, str] = {
    bool: "bool",
    int: "int",
    float: "float",
    str: "string",
    complex: "complex",
    type(None): "invalid",
}


def _kind(v: Any) -> str:
    k = _KINDS.get(v.__class__)
    if k is not None:
        return k
    if v is None:
        return "invalid"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    if isinstance(v, complex):
        return "complex"
    return "other"


def _f_eq(a: Any, *bs: Any) -> bool:
    if len(bs) == 1:
        b = bs[0]
        cls = a.__class__
        if cls is b.__class__ and (cls is str or cls is int or cls is bool or cls is float):
            return bool(a == b)
    if not bs:
        raise FuncError("missing argument for comparison")
    k1 = _kind(a)
    for b in bs:
        k2 = _kind(b)
        if k1 != k2:
            if k1 != "invalid" and k2 != "invalid":
                raise FuncError("incompatible types for comparison")
            truth = False
        elif k1 == "invalid":
            truth = True
        elif k1 != "other":
            truth = a == b
        else:
            for x in (a, b):
                if isinstance(x, (list, Mapping, bytearray)):
                    raise FuncError(f"non-comparable type {fmt_value(x)}: {go_type(x)}")
            truth = a is b or (type(a) is type(b) and a == b)
        if truth:
            return True
    return False


def _f_ne(a: Any, b: Any) -> bool:
    return not _f_eq(a, b)


def _f_lt(a: Any, b: Any) -> bool:
    k1, k2 = _kind(a), _kind(b)
    for k in (k1, k2):
        if k in ("invalid", "other"):
            raise FuncError("invalid type for comparison")
    if k1 != k2:
        raise FuncError("incompatible types for comparison")
    if k1 in ("bool", "complex"):
        raise FuncError("invalid type for comparison")
    return bool(a < b)


def _f_le(a: Any, b: Any) -> bool:
    return _f_lt(a, b) or _f_eq(a, b)


def _f_gt(a: Any, b: Any) -> bool:
    return not _f_le(a, b)


def _f_ge(a: Any, b: Any) -> bool:
    return not _f_lt(a, b)


def _f_not(a: Any) -> bool:
    return not truth(a)


def _f_len(v: Any) -> int:
    if isinstance(v, str):
        return len(v) if v.isascii() else len(v.encode("utf-8", "surrogatepass"))
    if isinstance(v, (bytes, bytearray, list, tuple, Mapping)):
        return len(v)
    if v is None:
        raise FuncError("len of nil pointer")
    raise FuncError(f"len of type {go_type(v)}")


def _index_arg(ix: Any, cap: int) -> int:
    if ix is None:
        raise FuncError("cannot index slice/array with nil")
    if isinstance(ix, bool) or not isinstance(ix, int):
        raise FuncError(f"cannot index slice/array with type {go_type(ix)}")
    if ix < 0 or ix > cap:
        raise FuncError(f"index out of range: {ix}")
    return int(ix)


def _f_index(item: Any, *indexes: Any) -> Any:
    if item is None:
        raise FuncError("index of untyped nil")
    for ix in indexes:
        if item is None:
            raise FuncError("index of nil pointer")
        if isinstance(item, (str, bytes, bytearray, list, tuple)):
            seq = item.encode("utf-8", "surrogatepass") if isinstance(item, str) else item
            x = _index_arg(ix, len(seq))
            if x >= len(seq):
                raise FuncError(f"index out of range: {x}")
            item = seq[x]
        elif isinstance(item, Mapping):  # a map[string]any: Go does not convert the key
            if ix is None:
                raise FuncError("value is nil; should be of type string")
            if not isinstance(ix, str):
                raise FuncError(f"value has type {go_type(ix)}; should be string")
            item = item.get(ix)
        else:
            raise FuncError(f"can't index item of type {go_type(item)}")
    return item


def _f_slice(item: Any, *indexes: Any) -> Any:
    if item is None:
        raise FuncError("slice of untyped nil")
    if len(indexes) > 3:
        raise FuncError(f"too many slice indexes: {len(indexes)}")
    if isinstance(item, str):
        if len(indexes) == 3:
            raise FuncError("cannot 3-index slice a string")
        seq: Any = item if item.isascii() else item.encode("utf-8", "surrogatepass")
    elif isinstance(item, (list, tuple, bytes, bytearray)):
        seq = item
    else:
        raise FuncError(f"can't slice item of type {go_type(item)}")
    idx = [0, len(seq), len(seq)]
    for i, ix in enumerate(indexes):
        idx[i] = _index_arg(ix, len(seq))
    if idx[0] > idx[1]:
        raise FuncError(f"invalid slice index: {idx[0]} > {idx[1]}")
    if len(indexes) == 3 and idx[1] > idx[2]:
        raise FuncError(f"invalid slice index: {idx[1]} > {idx[2]}")
    out = seq[idx[0] : idx[1]]
    if isinstance(item, str) and isinstance(out, bytes):
        return out.decode("utf-8", "replace")
    return out


def _f_print(*args: Any) -> str:
    return go_sprint(args)


def _f_println(*args: Any) -> str:
    return go_sprintln(args)


def _f_printf(fmt: Any, *args: Any) -> str:
    if not isinstance(fmt, str):
        raise FuncError(f"wrong type for value; expected string; got {go_type(fmt)}")
    return go_sprintf(fmt, args)


def _eval_args(args: tuple[Any, ...]) -> str:
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return go_sprint(["<no value>" if a is None else a for a in args])


_HTML_ESC = {"\0": "\ufffd", '"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;", ">": "&gt;"}
_HTML_RE = re.compile("[\0\"'&<>]")


def _f_html(*args: Any) -> str:
    return _HTML_RE.sub(lambda m: _HTML_ESC[m.group()], _eval_args(args))


_JS_ESC = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "<": "\\u003C",
    ">": "\\u003E",
    "&": "\\u0026",
    "=": "\\u003D",
}


def _js_esc(m: re.Match[str]) -> str:
    c = m.group()
    if c in _JS_ESC:
        return _JS_ESC[c]
    if ord(c) < 0x80:
        return f"\\u00{ord(c):02X}"
    return c if c.isprintable() else f"\\u{ord(c):04X}"


_JS_RE = re.compile("[\\\\'\"<>&=\x00-\x1f\x80-\U0010ffff]")


def _f_js(*args: Any) -> str:
    return _JS_RE.sub(_js_esc, _eval_args(args))


def _f_urlquery(*args: Any) -> str:
    return urllib.parse.quote_plus(_eval_args(args), safe="")


def _f_call(fn: Any, *args: Any) -> Any:
    if fn is None:
        raise FuncError("call of nil")
    if not callable(fn):
        raise FuncError(f"non-function {fmt_value(fn)} of type {go_type(fn)}")
    return fn(*args)


def _f_json(v: Any) -> str:
    # Ollama ignores the marshal error and returns the (empty) result.
    try:
        return go_json(v)
    except ValueError:
        return ""


def _date_args(args: tuple[Any, ...]) -> None:
    for a in args:
        if not isinstance(a, str):
            raise FuncError(f"wrong type for value; expected string; got {go_type(a)}")


def _f_current_date(*args: Any) -> str:
    _date_args(args)  # Ollama accepts and ignores a format argument
    return datetime.date.today().strftime("%Y-%m-%d")


def _f_yesterday_date(*args: Any) -> str:
    _date_args(args)
    return (datetime.date.today() - datetime.timedelta(days=1)).strftime("%Y-%m-%d")


def _f_to_typescript_type(v: Any) -> str:
    m = getattr(v, "ToTypeScriptType", None)
    if m is not None and callable(m):
        return str(m())
    return "any"


def short_circuit(*_args: Any) -> Any:
    """The table entry of ``and``/``or``: the compiler evaluates their arguments lazily itself."""
    raise AssertionError("unreachable")


FuncEntry: TypeAlias = tuple[Callable[..., Any], int, int | None]
"""A function table entry: (function, fewest arguments, most arguments or None for any number)."""

BUILTINS: dict[str, FuncEntry] = {
    "and": (short_circuit, 1, None),
    "or": (short_circuit, 1, None),
    "not": (_f_not, 1, 1),
    "len": (_f_len, 1, 1),
    "index": (_f_index, 1, None),
    "slice": (_f_slice, 1, None),
    "eq": (_f_eq, 1, None),
    "ne": (_f_ne, 2, 2),
    "lt": (_f_lt, 2, 2),
    "le": (_f_le, 2, 2),
    "gt": (_f_gt, 2, 2),
    "ge": (_f_ge, 2, 2),
    "print": (_f_print, 0, None),
    "printf": (_f_printf, 1, None),
    "println": (_f_println, 0, None),
    "html": (_f_html, 0, None),
    "js": (_f_js, 0, None),
    "urlquery": (_f_urlquery, 0, None),
    "call": (_f_call, 1, None),
    # Ollama's additions (template/template.go)
    "json": (_f_json, 1, 1),
    "currentDate": (_f_current_date, 0, None),
    "yesterdayDate": (_f_yesterday_date, 0, None),
    "toTypeScriptType": (_f_to_typescript_type, 1, 1),
}
