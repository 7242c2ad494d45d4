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
    __slots__ = ("minus", "plus", "plus_v", "prec", "sharp", "sharp_v", "space", "width", "zero")

    def __init__(self) -> None:
        self.minus = self.plus = self.plus_v = self.sharp = self.sharp_v = self.space = self.zero = False
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


def _hex_float(x: float, prec: int | None, upper: bool) -> str:
    """strconv's ``'x'`` format of ``x >= 0``: ``0x1.hhhp+dd``, the mantissa normalised to a leading 1 (subnormals
    too), shortest hex digits, or ``prec`` digits rounded half to even."""
    mant, exp = 0, 0
    if x:
        m, e = math.frexp(x)  # x = m * 2**e, 0.5 <= m < 1: the leading 1 lands on bit 60
        mant, exp = int(m * (1 << 61)), e - 1
    if prec is not None and prec < 15:
        shift = prec * 4
        extra = (mant << shift) & ((1 << 60) - 1)
        mant >>= 60 - shift
        if extra | (mant & 1) > 1 << 59:
            mant += 1
        mant <<= 60 - shift
        if mant & (1 << 61):  # rounded up to 2.0
            mant >>= 1
            exp += 1
    frac = format(mant & ((1 << 60) - 1), "015x")
    frac = frac.rstrip("0") if prec is None else frac[:prec].ljust(prec, "0")
    s = "0x" + str(mant >> 60) + ("." + frac if frac else "") + "p" + ("-" if exp < 0 else "+") + f"{abs(exp):02d}"
    return s.upper() if upper else s


def _binary_float(x: float) -> str:
    """strconv's ``'b'`` format of ``x >= 0``: the integer mantissa and the power of two, ``4503599627370496p-52``."""
    if x >= 2.0**-1022:
        m, e = math.frexp(x)
        return f"{int(m * (1 << 53))}p{e - 53:+d}"
    return f"{int(math.ldexp(x, 1074))}p-1074"


def _sharp_float(num: str, verb: str, prec: int | None) -> str:
    """Go's ``#`` flag on a formatted float: always a decimal point, and for ``%g`` (and ``%x``) trailing zeros up to
    the precision (6 by default), counting significant characters as Go's fmt does."""
    digits = (6 if prec is None else prec) if verb in "gGx" else 0
    body, tail, point, nonzero = num, "", False, False
    for i, c in enumerate(num):
        if c == ".":
            point = True
        elif c in "pP" or (c in "eE" and verb not in "xX"):
            body, tail = num[:i], num[i:]
            break
        else:
            nonzero = nonzero or c != "0"
            digits -= nonzero
    if not point:
        digits -= body == "0"
        body += "."
    return body + "0" * max(digits, 0) + tail


def _float_body(a: float, verb: str, prec: int | None) -> str:
    """``a >= 0`` under a float verb, before the sign, the ``#`` flag and padding."""
    if verb in "xX":
        return _hex_float(a, prec, verb == "X")
    if verb == "b":
        return _binary_float(a)
    if verb in "vgG" and prec is None:
        return _go_float(a, upper=verb == "G")
    if verb in "vgG":  # %.3v is %.3g
        return format(a, f".{max(prec or 0, 1)}{'G' if verb == 'G' else 'g'}")
    return format(a, f".{6 if prec is None else prec}{verb.lower() if verb == 'F' else verb}")


def _fmt_float(v: float, verb: str, sp: _Spec) -> str:
    if verb not in "vgGeEfFxXb":
        return _bad_verb(verb, v)
    if v != v or math.isinf(v):
        s = "NaN" if v != v else ("-Inf" if v < 0 else "+Inf")
        if s == "+Inf" and not sp.plus:
            s = " Inf" if sp.space else "+Inf"
        return sp.pad(s)
    s = _float_body(abs(v), verb, sp.prec)
    if sp.sharp and verb not in "vb":  # %#v is Go syntax, which for a float is plain %g
        s = _sharp_float(s, verb, sp.prec)
    neg = v < 0 or (v == 0 and math.copysign(1.0, v) < 0)
    sign = "-" if neg else "+" if sp.plus else " " if sp.space else ""
    if sp.zero and not sp.minus and sp.width is not None and len(sign + s) < sp.width:
        return sign + "0" * (sp.width - len(sign + s)) + s  # after the sign, before any 0x
    return sp.pad(sign + s)


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


def _fmt_arg(v: Any, verb: str, sp: _Spec, nested: bool = False) -> str:
    """One operand of ``Sprintf``; ``nested``: an element of a slice or map, where Go prints a nil as ``<nil>``
    whatever the verb (a nil operand itself gets ``%!d(<nil>)``)."""
    if sp.sharp_v:
        return _fmt_go_syntax(v, sp, nested)
    if verb == "T":
        return sp.pad(go_type(v))
    if v is None:
        return "<nil>" if nested else sp.pad("<nil>") if verb == "v" else _bad_verb(verb, v)
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
            return "{" + " ".join(f + ":" + _fmt_arg(getattr(v, f), verb, sp, True) for f in v._fields) + "}"
        return "{" + " ".join(_fmt_arg(getattr(v, f), verb, sp, True) for f in v._fields) + "}"
    if isinstance(v, Mapping):
        pairs = (_fmt_arg(k, verb, sp, True) + ":" + _fmt_arg(x, verb, sp, True) for k, x in sorted_items(v))
        return "map[" + " ".join(pairs) + "]"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(_fmt_arg(x, verb, sp, True) for x in v) + "]"
    if verb in "vs":
        return sp.pad(fmt_value(v))
    return _bad_verb(verb, v)


def _fmt_go_syntax(v: Any, sp: _Spec, nested: bool) -> str:
    """``%#v``: the value as Go source, e.g. ``[]interface {}{1, "a", interface {}(nil)}``."""
    if v is None:
        return "interface {}(nil)" if nested else sp.pad("<nil>")
    if isinstance(v, str):
        return sp.pad(go_quote(v))
    if isinstance(v, (bool, int, float)):
        sp.sharp_v = False
        try:
            return _fmt_arg(v, "v", sp)
        finally:
            sp.sharp_v = True
    if isinstance(v, GoStruct):
        name = v._go_type
        fields = ", ".join(f + ":" + _fmt_go_syntax(getattr(v, f), sp, True) for f in v._fields)
        return ("&" + name[1:] if name.startswith("*") else name) + "{" + fields + "}"
    if isinstance(v, Mapping):
        items = sorted_items(v)
        body = ", ".join(_fmt_go_syntax(k, sp, True) + ":" + _fmt_go_syntax(x, sp, True) for k, x in items)
        return go_type(v) + "{" + body + "}"
    if isinstance(v, (list, tuple)):
        return go_type(v) + "{" + ", ".join(_fmt_go_syntax(x, sp, True) for x in v) + "}"
    return sp.pad(fmt_value(v))


_FLAGS = {"-": "minus", "+": "plus", "#": "sharp", " ": "space", "0": "zero"}
_MAX_WIDTH = 1_000_000
"""Widths and precisions above this are refused (``%!(BADWIDTH)``), as Go refuses them from ``*`` arguments."""


class _Printf:
    """State of one ``Sprintf`` call, after Go's ``pp.doPrintf``: the next argument, whether an explicit ``[n]``
    index reordered them (which silences ``%!(EXTRA ...)``), and whether the current verb's index was good."""

    __slots__ = ("argi", "args", "fmt", "good", "out", "reordered")

    def __init__(self, fmt: str, args: list[Any] | tuple[Any, ...]) -> None:
        self.fmt = fmt
        self.args = args
        self.argi = 0
        self.reordered = False
        self.good = True
        self.out: list[str] = []

    def arg_index(self, i: int) -> tuple[int, bool]:
        """An explicit ``[n]`` at ``i`` selects argument n (1-based): (next position, whether one was there)."""
        fmt = self.fmt
        if i >= len(fmt) or fmt[i] != "[":
            return i, False
        self.reordered = True
        close = fmt.find("]", i + 1)
        if len(fmt) - i < 3 or close < 0:
            self.good = False
            return i + 1, False
        digits = fmt[i + 1 : close]
        if not (digits.isascii() and digits.isdigit() and len(digits) < 8):
            self.good = False
            return close + 1, False
        if 1 <= int(digits) <= len(self.args):
            self.argi = int(digits) - 1
        else:
            self.good = False
        return close + 1, True

    def int_arg(self) -> int | None:
        """A ``*`` width or precision: the next argument if it is an int of sensible size, else None."""
        if self.argi >= len(self.args):
            return None
        v = self.args[self.argi]
        self.argi += 1
        return v if type(v) is int and -_MAX_WIDTH <= v <= _MAX_WIDTH else None

    def number(self, i: int) -> tuple[int | None, int]:
        """Decimal digits at ``i``: (their value or None, next position)."""
        fmt = self.fmt
        k = i
        while i < len(fmt) and "0" <= fmt[i] <= "9":
            i += 1
        return (int(fmt[k:i]) if i > k else None), i

    def directive(self, i: int) -> int:
        """One ``%...`` directive, ``i`` just after the ``%``; returns where the text after it starts."""
        fmt = self.fmt
        sp = _Spec()
        self.good = True
        while i < len(fmt) and fmt[i] in _FLAGS:
            setattr(sp, _FLAGS[fmt[i]], True)
            i += 1
        sp.zero = sp.zero and not sp.minus
        i, after_index = self.width(*self.arg_index(i), sp)
        if i + 1 < len(fmt) and fmt[i] == ".":  # a '.' just before the end is the verb
            self.good = self.good and not after_index  # "%[3].2d"
            i, after_index = self.precision(*self.arg_index(i + 1), sp)
        if not after_index:
            i, after_index = self.arg_index(i)
        if i >= len(fmt):
            self.out.append("%!(NOVERB)")
            return i
        self.verb(fmt[i], sp)
        return i + 1

    def width(self, i: int, after_index: bool, sp: _Spec) -> tuple[int, bool]:
        """A width: digits, or ``*`` taking it from the next argument (negative: left-justified)."""
        if i < len(self.fmt) and self.fmt[i] == "*":
            w = self.int_arg()
            if w is None:
                self.out.append("%!(BADWIDTH)")
            else:
                sp.width = abs(w)
                sp.minus = sp.minus or w < 0
            return i + 1, False
        w, i = self.number(i)
        if w is not None and w > _MAX_WIDTH:
            self.out.append("%!(BADWIDTH)")
        else:
            sp.width = w
        self.good = self.good and not (after_index and w is not None)  # "%[3]2d"
        return i, after_index

    def precision(self, i: int, after_index: bool, sp: _Spec) -> tuple[int, bool]:
        """A precision after the '.': digits (none means 0), or ``*`` from the next argument (negative: bad)."""
        if i < len(self.fmt) and self.fmt[i] == "*":
            p = self.int_arg()
            if p is None or p < 0:
                self.out.append("%!(BADPREC)")
            else:
                sp.prec = p
            return i + 1, False
        p, i = self.number(i)
        if p is not None and p > _MAX_WIDTH:
            self.out.append("%!(BADPREC)")
        else:
            sp.prec = p or 0
        return i, after_index

    def verb(self, verb: str, sp: _Spec) -> None:
        """The verb applied to the current argument, or Go's marker for why it cannot be."""
        if verb == "%":  # takes no argument, ignores width and precision
            self.out.append("%")
        elif not self.good:
            self.out.append(f"%!{verb}(BADINDEX)")
        elif self.argi >= len(self.args):
            self.out.append(f"%!{verb}(MISSING)")
        else:
            if verb == "v" and sp.plus:  # %+v names struct fields instead of signing numbers
                sp.plus, sp.plus_v = False, True
            if verb == "v" and sp.sharp:  # %#v prints Go syntax
                sp.sharp, sp.sharp_v = False, True
            self.out.append(_fmt_arg(self.args[self.argi], verb, sp))
            self.argi += 1


def go_sprintf(fmt: str, args: list[Any] | tuple[Any, ...]) -> str:
    """Go's ``fmt.Sprintf``: flags, widths, precisions, ``*`` and ``[n]`` argument indexes, the verbs templates
    use (``%s %d %v %q %x %f %e %g %t %c %T`` and friends), and Go's ``%!d(string=x)``, ``%!s(MISSING)``,
    ``%!v(BADINDEX)`` and ``%!(EXTRA ...)`` markers."""
    pf = _Printf(fmt, args)
    out = pf.out
    i, n = 0, len(fmt)
    while i < n:
        j = fmt.find("%", i)
        if j < 0:
            out.append(fmt[i:])
            break
        out.append(fmt[i:j])
        i = pf.directive(j + 1)
    if not pf.reordered and pf.argi < len(args):
        extra = ", ".join("<nil>" if a is None else f"{go_type(a)}={fmt_value(a)}" for a in args[pf.argi :])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)
