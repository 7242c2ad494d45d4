"""Go literal syntax both ways, as ``strconv`` has it: quoting strings and runes for messages and ``%q``, and
reading the string, character and number constants of template source."""

from __future__ import annotations

import re

__all__ = ["go_quote", "go_quote_rune", "go_rune", "parse_char", "parse_number", "unquote"]


def go_rune(c: str) -> str:
    """A character as Go's lexer names it in errors: ``U+0040 '@'``."""
    return f"U+{ord(c):04X} {go_quote_rune(ord(c))}"


def go_quote_rune(r: int) -> str:
    """Go's ``strconv.QuoteRune``; an invalid code point quotes as U+FFFD, as Go does."""
    if r == ord("'"):
        return "'\\''"
    if r == ord('"'):
        return "'\"'"
    return "'" + go_quote(chr(r) if 0 <= r <= 0x10FFFF and not 0xD800 <= r <= 0xDFFF else "\ufffd")[1:-1] + "'"


_QUOTE_ESC = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}


def go_quote(s: str, ascii_only: bool = False) -> str:
    """Go's ``strconv.Quote`` (``QuoteToASCII`` with ``ascii_only``)."""
    out = ['"']
    for c in s:
        if c in _QUOTE_ESC:
            out.append(_QUOTE_ESC[c])
        elif c == " " or (c.isprintable() and (not ascii_only or ord(c) < 128)):
            out.append(c)
        else:
            r = ord(c)
            if r < 0x80 or 0xD800 <= r <= 0xDFFF:
                out.append("\\ufffd" if r >= 0x80 else f"\\x{r:02x}")
            elif r < 0x10000:
                out.append(f"\\u{r:04x}")
            else:
                out.append(f"\\U{r:08x}")
    out.append('"')
    return "".join(out)


_SIMPLE_ESC = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def unquote(s: str) -> str:
    """Go's ``strconv.Unquote`` for string and raw-string literals; ``ValueError`` on bad syntax."""
    if s.startswith("`"):
        if len(s) < 2 or not s.endswith("`") or "`" in s[1:-1]:
            raise ValueError("invalid syntax")
        return s[1:-1].replace("\r", "")
    if len(s) < 2 or s[0] != '"' or s[-1] != '"':
        raise ValueError("invalid syntax")
    body = s[1:-1]
    if "\\" not in body:
        if '"' in body or "\n" in body:
            raise ValueError("invalid syntax")
        return body
    return _unescape(body, '"')


def _unescape(body: str, quote: str) -> str:
    out = bytearray()
    i = 0
    n = len(body)
    while i < n:
        c = body[i]
        if c == quote or c == "\n":
            raise ValueError("invalid syntax")
        if c != "\\":
            out += c.encode("utf-8", "surrogatepass")
            i += 1
            continue
        if i + 1 >= n:
            raise ValueError("invalid syntax")
        e = body[i + 1]
        i += 2
        if e in _SIMPLE_ESC:
            out += _SIMPLE_ESC[e].encode()
        elif e == quote:
            out += e.encode()
        elif e in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[e]
            h = body[i : i + width]
            if len(h) != width or any(ch not in "0123456789abcdefABCDEF" for ch in h):
                raise ValueError("invalid syntax")
            i += width
            v = int(h, 16)
            if e == "x":
                out.append(v)
            else:
                if v > 0x10FFFF or 0xD800 <= v <= 0xDFFF:
                    raise ValueError("invalid syntax")
                out += chr(v).encode()
        elif e in "01234567":
            o = body[i - 1 : i + 2]
            if len(o) != 3 or any(ch not in "01234567" for ch in o) or int(o, 8) > 255:
                raise ValueError("invalid syntax")
            i += 2
            out.append(int(o, 8))
        else:
            raise ValueError("invalid syntax")
    return out.decode("utf-8", "replace")


def parse_char(text: str) -> int:
    """The code point of a character constant (``'a'``, ``'\\n'``, ``'\\x41'``); ``ValueError`` when malformed."""
    body = text[1:-1]
    if not body:
        raise ValueError(f"malformed character constant: {text}")
    if body[0] != "\\":
        if len(body) != 1:
            raise ValueError(f"malformed character constant: {text}")
        return ord(body)
    esc = body[1:2]
    if esc and (esc == "x" or esc in "01234567"):
        if len(body) != 4:
            raise ValueError(f"malformed character constant: {text}")
        digits = body[2:] if esc == "x" else body[1:]
        try:
            value = int(digits, 16 if esc == "x" else 8)
        except ValueError:
            raise ValueError("invalid syntax") from None
        if value > 255:
            raise ValueError("invalid syntax")
        return value
    s = _unescape(body, "'")
    if len(s) != 1:
        raise ValueError(f"malformed character constant: {text}")
    return ord(s)


_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def parse_number(text: str) -> int | float:
    """The value a Go template number constant takes when used without a typed context (``idealConstant``).

    Complex constants (every one ends in ``i``) are refused: no Python value stands for a Go complex128 here."""
    if text.endswith("i"):
        raise ValueError(f"complex constants are not supported: {go_quote(text)}")
    value: int | None = None
    body = text.lstrip("+-")
    neg = text.startswith("-")
    try:
        if re.fullmatch(r"0[0-7_]*[0-7]", body):
            value = int(body.replace("_", ""), 8)
        elif re.fullmatch(r"0[xXoObB][0-9a-fA-F_]+|[1-9][0-9_]*|0", body):
            value = int(body, 0)
    except ValueError:
        value = None
    if value is not None:
        value = -value if neg else value
        is_hex = len(body) > 2 and body[1] in "xX"
        if is_hex or not any(ch in text for ch in ".eEpP"):
            if not -(1 << 64) < value < (1 << 64):
                raise ValueError(f"integer overflow: {go_quote(text)}")
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise ValueError(f"{text} overflows int")
            return value
    try:
        if len(body) > 2 and body[0] == "0" and body[1] in "xX":
            f = float.fromhex(text.replace("_", ""))
        else:
            if "_" in text:
                raise ValueError
            f = float(text)
    except ValueError:
        raise ValueError(f"illegal number syntax: {go_quote(text)}") from None
    if not any(ch in text for ch in ".eEpP"):
        raise ValueError(f"integer overflow: {go_quote(text)}")
    return f

