"""Go values in Python: :class:`GoStruct`, Go's type names, and how Go's ``fmt`` prints values (``Sprint``,
``Sprintln``, ``Sprintf``), which is what actions, ``print`` and ``printf`` in a template must reproduce byte for
byte."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from .literals import go_quote, go_quote_rune

__all__ = [
    "GoStruct",
    "digits_e",
    "digits_f",
    "float_digits",
    "fmt_value",
    "go_sprint",
    "go_sprintf",
    "go_sprintln",
    "go_type",
    "sorted_items",
]


class GoStruct:
    """Base for values that behave like Go structs in templates.

    ``_fields`` are the Go field names (also the Python attribute names), in declaration order; reading any other
    field is an execution error, as in Go.  ``_json`` lists ``(field, json_key, flags)`` for ``encoding/json``
    (defaults to every field under its Go name).  Subclasses may define Go-style methods with exported
    (capitalised) names, e.g. ``String``; templates call them like fields.
    """

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    _json: ClassVar[tuple[tuple[str, str, int], ...] | None] = None
    _go_type: ClassVar[str] = "struct"


def go_type(v: Any) -> str:
    """The Go type name a value stands for (used in ``%T`` and error messages)."""
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, str):
        return "string"
    if isinstance(v, GoStruct):
        return v._go_type
    if isinstance(v, (bytes, bytearray)):
        return "[]uint8"
    if isinstance(v, (list, tuple)):
        return "[]interface {}"
    if isinstance(v, Mapping):
        return "map[string]interface {}"
    if callable(v):
        return "func"
    return type(v).__name__


def float_digits(x: float) -> tuple[str, int]:
    """Shortest round-trip decimal digits of ``x > 0`` and the decimal point position (value = 0.DIGITS x 10^dp)."""
    mant, _, exp = repr(x).partition("e")
    ip, _, fp = mant.partition(".")
    raw = ip + fp
    stripped = raw.lstrip("0")
    dp = len(ip) - (len(raw) - len(stripped)) + (int(exp) if exp else 0)
    return stripped.rstrip("0") or "0", dp


def digits_e(digits: str, dp: int, upper: bool = False) -> str:
    """Digits as d.ddde±XX (Go's exponent form, at least two exponent digits)."""
    exp = dp - 1
    s = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return s + ("E" if upper else "e") + ("-" if exp < 0 else "+") + f"{abs(exp):02d}"


def digits_f(digits: str, dp: int) -> str:
    """Digits in positional form, no exponent."""
    if dp <= 0:
        return "0." + "0" * -dp + digits
    if dp >= len(digits):
        return digits + "0" * (dp - len(digits))
    return digits[:dp] + "." + digits[dp:]


def _go_float(x: float, upper: bool = False) -> str:
    """Go's ``%v``/``%g`` of a float64: shortest digits; exponent form below 1e-4 and from 1e6 (``1e+06``)."""
    if x != x:
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if x == 0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    digits, dp = float_digits(abs(x))
    exp = dp - 1
    s = digits_e(digits, dp, upper) if exp < -4 or exp >= 6 else digits_f(digits, dp)
    return "-" + s if x < 0 else s


_BASIC = (str, int, float, bool, complex, bytes, bytearray, list, tuple, dict, type(None))


def _stringer(v: Any) -> str | None:
    """Result of a Go-style ``String()`` method, or None when the value is not a Stringer."""
    cls = v.__class__
    if cls in _BASIC:
        return None
    m = getattr(cls, "String", None)
    if m is None or not callable(m):
        return None
    s = v.String()
    return s if isinstance(s, str) else str(s)


def sorted_items(m: Mapping[Any, Any]) -> list[tuple[Any, Any]]:
    """A map's items in Go's print and ``range`` order: sorted keys (keys of mixed types grouped by type)."""
    try:
        return sorted(m.items(), key=lambda kv: kv[0])
    except TypeError:
        return sorted(m.items(), key=lambda kv: (type(kv[0]).__name__, str(kv[0])))


def fmt_value(v: Any) -> str:
    """``fmt``'s ``%v`` of a value."""
    cls = v.__class__
    if cls is str:
        return v  # type: ignore[no-any-return]
    if cls is bool:
        return "true" if v else "false"
    if cls is int:
        return str(v)
    if cls is float:
        return _go_float(v)
    if v is None:
        return "<nil>"
    s = _stringer(v)
    if s is not None:
        return s
    if isinstance(v, GoStruct):
        return "{" + " ".join(fmt_value(getattr(v, f)) for f in v._fields) + "}"
    if isinstance(v, Mapping):
        return "map[" + " ".join(fmt_value(k) + ":" + fmt_value(x) for k, x in sorted_items(v)) + "]"
    if isinstance(v, (bytes, bytearray)):
        return "[" + " ".join(str(b) for b in v) + "]"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(fmt_value(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(int(v))
    if isinstance(v, float):
        return _go_float(float(v))
    if isinstance(v, str):
        return str(v)
    if callable(v):
        return f"{id(v):#x}"
    return str(v)


def go_sprint(args: Iterable[Any]) -> str:
    """Go's ``fmt.Sprint``: operands in ``%v``, a space between two operands when neither is a string."""
    out: list[str] = []
    prev_str = False
    for i, a in enumerate(args):
        is_str = isinstance(a, str)
        if i and not is_str and not prev_str:
            out.append(" ")
        out.append(fmt_value(a))
        prev_str = is_str
    return "".join(out)


def go_sprintln(args: Iterable[Any]) -> str:
    """Go's ``fmt.Sprintln``: always a space between operands, and a newline."""
    return " ".join(fmt_value(a) for a in args) + "\n"


class _Spec:
    __slots__ = ("minus", "plus", "plus_v", "prec", "sharp", "space", "width", "zero")

    def __init__(self) -> None:
        self.minus = self.plus = self.plus_v = self.sharp = self.space = self.zero = False
        self.width: int | None = None
        self.prec: int | None = None

    def pad(self, s: str, numeric: bool = False) -> str:
        w = self.width
        if w is None or len(s) >= w:
            return s
        if self.minus:
            return s + " " * (w - len(s))
        if self.zero and numeric:
            sign = s[0] if s[:1] in ("-", "+", " ") else ""
            body = s[len(sign) :]
            prefix = ""
            if body[:2].lower() in ("0x", "0b", "0o"):
                prefix, body = body[:2], body[2:]
            return sign + prefix + "0" * (w - len(s)) + body
        return " " * (w - len(s)) + s


def _bad_verb(verb: str, v: Any) -> str:
    if v is None:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({go_type(v)}={fmt_value(v)})"


def _fmt_int(v: int, verb: str, sp: _Spec) -> str:
    if verb == "c":
        return sp.pad(chr(v) if 0 <= v <= 0x10FFFF and not 0xD800 <= v <= 0xDFFF else "\ufffd")
    if verb == "q":
        return sp.pad(go_quote_rune(v))
    if verb == "U":
        s = f"U+{v:04X}" if v >= 0 else f"U+-{-v:04X}"
        if sp.sharp and 0 <= v <= 0x10FFFF:
            s += " '" + chr(v) + "'"
        return sp.pad(s)
    a = abs(v)
    prefix = ""
    if verb in "vd":
        digits = str(a)
    elif verb == "b":
        digits, prefix = format(a, "b"), ("0b" if sp.sharp else "")
    elif verb == "o":
        digits, prefix = format(a, "o"), ("0" if sp.sharp else "")
    elif verb == "O":
        digits, prefix = format(a, "o"), "0o"
    elif verb == "x":
        digits, prefix = format(a, "x"), ("0x" if sp.sharp else "")
    elif verb == "X":
        digits, prefix = format(a, "X"), ("0X" if sp.sharp else "")
    else:
        return _bad_verb(verb, v)
    if sp.prec is not None:
        digits = "" if sp.prec == 0 and a == 0 else digits.zfill(sp.prec)
    sign = "-" if v < 0 else "+" if sp.plus else " " if sp.space else ""
    zero = sp.zero and sp.prec is None and not sp.minus
    saved, sp.zero = sp.zero, zero
    s = sp.pad(sign + prefix + digits, numeric=True)
    sp.zero = saved
    return s


def _fmt_float(v: float, verb: str, sp: _Spec) -> str:
    if verb not in "vgGeEfF":
        return _bad_verb(verb, v)
    if v != v or math.isinf(v):
        s = "NaN" if v != v else ("-Inf" if v < 0 else "+Inf")
        if s == "+Inf" and not sp.plus:
            s = " Inf" if sp.space else "+Inf"
        return sp.pad(s)
    if verb in "vgG" and sp.prec is None:
        s = _go_float(abs(v), upper=verb == "G")
    else:
        prec = 6 if sp.prec is None else sp.prec
        if verb in "gG":
            s = format(abs(v), f".{max(prec, 1)}{verb}")
        else:
            s = format(abs(v), f".{prec}{verb.lower() if verb == 'F' else verb}")
    neg = v < 0 or (v == 0 and math.copysign(1.0, v) < 0)
    sign = "-" if neg else "+" if sp.plus else " " if sp.space else ""
    return sp.pad(sign + s, numeric=True)


def _fmt_str(s: str, verb: str, sp: _Spec, orig: Any) -> str:
    if verb in "vs":
        if sp.prec is not None:
            s = s[: sp.prec]
        return sp.pad(s)
    if verb == "q":
        if sp.prec is not None:
            s = s[: sp.prec]
        if sp.sharp and "`" not in s and all(c == "\t" or (c.isprintable() and c != "\ufeff") for c in s):
            return sp.pad("`" + s + "`")
        return sp.pad(go_quote(s, ascii_only=sp.plus))
    if verb in "xX":
        b = s.encode("utf-8", "replace")
        if sp.prec is not None:
            b = b[: sp.prec]
        fmt_ = "{:02x}" if verb == "x" else "{:02X}"
        parts = [fmt_.format(c) for c in b]
        if sp.space:
            pre = ("0x" if verb == "x" else "0X") if sp.sharp else ""
            return sp.pad(" ".join(pre + p for p in parts))
        return sp.pad((("0x" if verb == "x" else "0X") if sp.sharp and b else "") + "".join(parts))
    return _bad_verb(verb, orig)


def _fmt_arg(v: Any, verb: str, sp: _Spec) -> str:
    if verb == "T":
        return sp.pad(go_type(v))
    if v is None:
        return sp.pad("<nil>") if verb == "v" else _bad_verb(verb, v)
    if verb in "vsxXq":
        s = _stringer(v)
        if s is not None:
            return _fmt_str(s, verb, sp, v)
    if isinstance(v, bool):
        return sp.pad("true" if v else "false") if verb in "tv" else _bad_verb(verb, v)
    if isinstance(v, int):
        return _fmt_int(int(v), verb, sp)
    if isinstance(v, float):
        return _fmt_float(float(v), verb, sp)
    if isinstance(v, str):
        return _fmt_str(str(v), verb, sp, v)
    if isinstance(v, (bytes, bytearray)):
        if verb in "sqxX":
            return _fmt_str(bytes(v).decode("utf-8", "replace"), verb, sp, v)
        return "[" + " ".join(_fmt_int(b, verb, sp) for b in v) + "]"
    if isinstance(v, GoStruct):
        if sp.plus_v:
            return "{" + " ".join(f + ":" + _fmt_arg(getattr(v, f), verb, sp) for f in v._fields) + "}"
        return "{" + " ".join(_fmt_arg(getattr(v, f), verb, sp) for f in v._fields) + "}"
    if isinstance(v, Mapping):
        items = sorted_items(v)
        return "map[" + " ".join(_fmt_arg(k, verb, sp) + ":" + _fmt_arg(x, verb, sp) for k, x in items) + "]"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(_fmt_arg(x, verb, sp) for x in v) + "]"
    if verb in "vs":
        return sp.pad(fmt_value(v))
    return _bad_verb(verb, v)


def go_sprintf(fmt: str, args: list[Any] | tuple[Any, ...]) -> str:
    """Go's ``fmt.Sprintf`` for the verbs templates use (``%s %d %v %q %x %f %e %g %t %c %T`` and friends),
    including Go's ``%!d(string=x)``, ``%!s(MISSING)`` and ``%!(EXTRA ...)`` markers."""
    out: list[str] = []
    n = len(fmt)
    i = 0
    argi = 0
    nargs = len(args)
    while i < n:
        j = fmt.find("%", i)
        if j < 0:
            out.append(fmt[i:])
            break
        out.append(fmt[i:j])
        i = j + 1
        sp = _Spec()
        while i < n and fmt[i] in "-+# 0":
            c = fmt[i]
            if c == "-":
                sp.minus = True
            elif c == "+":
                sp.plus = True
            elif c == "#":
                sp.sharp = True
            elif c == " ":
                sp.space = True
            else:
                sp.zero = True
            i += 1
        bad_width = bad_prec = False
        if i < n and fmt[i] == "*":
            i += 1
            if argi < nargs and type(args[argi]) is int:
                w = args[argi]
                if w < 0:
                    sp.minus, w = True, -w
                if w > 1_000_000:
                    bad_width = True
                else:
                    sp.width = w
            else:
                bad_width = True
            argi += 1
        else:
            k = i
            while i < n and fmt[i].isdigit() and fmt[i].isascii():
                i += 1
            if i > k:
                w = int(fmt[k:i])
                if w > 1_000_000:
                    bad_width = True
                else:
                    sp.width = w
        if i < n and fmt[i] == ".":
            i += 1
            if i < n and fmt[i] == "*":
                i += 1
                if argi < nargs and type(args[argi]) is int:
                    p = args[argi]
                    if p > 1_000_000:
                        bad_prec = True
                    elif p >= 0:
                        sp.prec = p
                else:
                    bad_prec = True
                argi += 1
            else:
                k = i
                while i < n and fmt[i].isdigit() and fmt[i].isascii():
                    i += 1
                p = int(fmt[k:i]) if i > k else 0
                if p > 1_000_000:
                    bad_prec = True
                else:
                    sp.prec = p
        if bad_width:
            out.append("%!(BADWIDTH)")
        if bad_prec:
            out.append("%!(BADPREC)")
        if i >= n:
            out.append("%!(NOVERB)")
            break
        verb = fmt[i]
        i += 1
        if verb == "%":
            out.append("%")
            continue
        if argi >= nargs:
            out.append(f"%!{verb}(MISSING)")
            continue
        a = args[argi]
        argi += 1
        if verb == "v" and sp.plus:  # %+v names struct fields instead of signing numbers
            sp.plus, sp.plus_v = False, True
        out.append(_fmt_arg(a, verb, sp))
    if argi < nargs:
        extra = ", ".join("<nil>" if a is None else f"{go_type(a)}={fmt_value(a)}" for a in args[argi:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)
