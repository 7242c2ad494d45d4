"""An interpreter for Go's ``text/template`` language, as Ollama uses it for model ``TEMPLATE`` layers.

Ollama models carry their chat format as a Go template, so Corral has to render those templates byte for byte
as Go does: the same trim markers, truthiness, ``range`` order, comparison rules, ``print``/``printf`` formatting
and ``json`` output.  The template is parsed once into a public AST (so later code can inspect it, e.g. to find
the tool-call tag) and compiled into Python closures, so executing it per request is cheap.

Data model: Python values stand in for Go values.  A ``dict`` is a Go ``map[string]any`` (a missing key gives
``nil``, printed as ``<no value>``, as Go does under ``missingkey=zero`` for interface-valued maps); a list is a
slice; ``None`` is ``nil``; ``int``/``float``/``str``/``bool`` are the Go basic kinds.  :class:`GoStruct`
subclasses behave as Go structs (unknown fields are errors, JSON follows their tags).  Any value whose class
defines a ``String()`` method prints through it, as a Go ``fmt.Stringer`` does.
"""

from __future__ import annotations

import base64
import datetime
import math
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from corral.errors import TemplateError

__all__ = [
    "MAX_DEPTH",
    "MAX_ITERATIONS",
    "MAX_OUTPUT",
    "ActionNode",
    "BoolNode",
    "BreakNode",
    "ChainNode",
    "CommandNode",
    "CommentNode",
    "ContinueNode",
    "DotNode",
    "FieldNode",
    "GoStruct",
    "IdentifierNode",
    "IfNode",
    "ListNode",
    "NilNode",
    "Node",
    "NumberNode",
    "PipeNode",
    "RangeNode",
    "StringNode",
    "Template",
    "TemplateError",
    "TemplateNode",
    "TextNode",
    "VariableNode",
    "WithNode",
    "go_json",
    "go_sprint",
    "go_sprintf",
    "parse",
]

MAX_OUTPUT = 16 * 1024 * 1024
"""Most characters one execution may write; a template that loops its way past this fails instead of eating RAM."""
MAX_DEPTH = 100
"""Deepest nesting of control structures, parentheses and ``{{template}}`` calls."""
MAX_ITERATIONS = 1_000_000
"""Most ``range`` iterations plus ``{{template}}`` calls in one execution (bounds ``{{range 1000000000}}``)."""


# ---------------------------------------------------------------------------------------------------------------
# AST


class Node:
    """Base of all parse-tree nodes; ``pos`` is the offset of the node in the template source."""

    __slots__ = ("pos",)

    def __init__(self, pos: int) -> None:
        self.pos = pos

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self}>"


class TextNode(Node):
    """Plain text between actions (already trimmed by ``{{-``/``-}}``)."""

    __slots__ = ("text",)

    def __init__(self, pos: int, text: str) -> None:
        super().__init__(pos)
        self.text = text

    def __str__(self) -> str:
        return _go_quote(self.text)


class CommentNode(Node):
    """A ``{{/* ... */}}`` comment; kept in the tree, produces no output."""

    __slots__ = ("text",)

    def __init__(self, pos: int, text: str) -> None:
        super().__init__(pos)
        self.text = text

    def __str__(self) -> str:
        return "{{" + self.text + "}}"


class ListNode(Node):
    """A sequence of nodes."""

    __slots__ = ("nodes",)

    def __init__(self, pos: int, nodes: list[Node] | None = None) -> None:
        super().__init__(pos)
        self.nodes: list[Node] = nodes if nodes is not None else []

    def __str__(self) -> str:
        return "".join(str(n) for n in self.nodes)


class FieldNode(Node):
    """``.A.B``: field (or map key, or niladic method) lookups starting at dot."""

    __slots__ = ("ident",)

    def __init__(self, pos: int, ident: tuple[str, ...]) -> None:
        super().__init__(pos)
        self.ident = ident

    def __str__(self) -> str:
        return "." + ".".join(self.ident)


class VariableNode(Node):
    """``$x`` or ``$x.A.B``; ``ident[0]`` is the variable name including ``$``."""

    __slots__ = ("ident",)

    def __init__(self, pos: int, ident: tuple[str, ...]) -> None:
        super().__init__(pos)
        self.ident = ident

    def __str__(self) -> str:
        return ".".join(self.ident)


class ChainNode(Node):
    """``(pipeline).A.B``: field lookups on the value of another term."""

    __slots__ = ("fields", "node")

    def __init__(self, pos: int, node: Node, fields: tuple[str, ...]) -> None:
        super().__init__(pos)
        self.node = node
        self.fields = fields

    def __str__(self) -> str:
        inner = f"({self.node})" if isinstance(self.node, PipeNode) else str(self.node)
        return inner + "".join("." + f for f in self.fields)


class IdentifierNode(Node):
    """A function name."""

    __slots__ = ("name",)

    def __init__(self, pos: int, name: str) -> None:
        super().__init__(pos)
        self.name = name

    def __str__(self) -> str:
        return self.name


class DotNode(Node):
    """``.``, the cursor."""

    __slots__ = ()

    def __str__(self) -> str:
        return "."


class NilNode(Node):
    """The untyped ``nil`` literal."""

    __slots__ = ()

    def __str__(self) -> str:
        return "nil"


class BoolNode(Node):
    """``true`` or ``false``."""

    __slots__ = ("value",)

    def __init__(self, pos: int, value: bool) -> None:
        super().__init__(pos)
        self.value = value

    def __str__(self) -> str:
        return "true" if self.value else "false"


class NumberNode(Node):
    """A numeric or character constant; ``value`` is the Go ideal constant's value (``int`` or ``float``)."""

    __slots__ = ("text", "value")

    def __init__(self, pos: int, text: str, value: int | float) -> None:
        super().__init__(pos)
        self.text = text
        self.value = value

    def __str__(self) -> str:
        return self.text


class StringNode(Node):
    """A string literal; ``quoted`` is the source form, ``text`` the unquoted value."""

    __slots__ = ("quoted", "text")

    def __init__(self, pos: int, quoted: str, text: str) -> None:
        super().__init__(pos)
        self.quoted = quoted
        self.text = text

    def __str__(self) -> str:
        return self.quoted


class CommandNode(Node):
    """One stage of a pipeline: an operand, or a function/method followed by arguments."""

    __slots__ = ("args",)

    def __init__(self, pos: int, args: list[Node] | None = None) -> None:
        super().__init__(pos)
        self.args: list[Node] = args if args is not None else []

    def __str__(self) -> str:
        return " ".join(f"({a})" if isinstance(a, PipeNode) else str(a) for a in self.args)


class PipeNode(Node):
    """``$x := cmd1 | cmd2``; ``decl`` are the declared (or, with ``is_assign``, assigned) variables."""

    __slots__ = ("cmds", "decl", "is_assign")

    def __init__(
        self,
        pos: int,
        decl: list[VariableNode] | None = None,
        cmds: list[CommandNode] | None = None,
        is_assign: bool = False,
    ) -> None:
        super().__init__(pos)
        self.decl: list[VariableNode] = decl if decl is not None else []
        self.cmds: list[CommandNode] = cmds if cmds is not None else []
        self.is_assign = is_assign

    def __str__(self) -> str:
        s = ""
        if self.decl:
            s = ", ".join(str(v) for v in self.decl) + (" = " if self.is_assign else " := ")
        return s + " | ".join(str(c) for c in self.cmds)


class ActionNode(Node):
    """``{{pipeline}}``: evaluates and prints (unless it only declares variables)."""

    __slots__ = ("pipe",)

    def __init__(self, pos: int, pipe: PipeNode) -> None:
        super().__init__(pos)
        self.pipe = pipe

    def __str__(self) -> str:
        return "{{" + str(self.pipe) + "}}"


class BranchNode(Node):
    """Common shape of ``if``, ``range`` and ``with``."""

    __slots__ = ("else_list", "list", "pipe")
    keyword: ClassVar[str] = ""

    def __init__(self, pos: int, pipe: PipeNode, list_: ListNode, else_list: ListNode | None = None) -> None:
        super().__init__(pos)
        self.pipe = pipe
        self.list = list_
        self.else_list = else_list

    def __str__(self) -> str:
        s = "{{" + self.keyword + " " + str(self.pipe) + "}}" + str(self.list)
        if self.else_list is not None:
            s += "{{else}}" + str(self.else_list)
        return s + "{{end}}"


class IfNode(BranchNode):
    """``{{if}}`` (an ``{{else if}}`` is an ``IfNode`` alone in the else list)."""

    __slots__ = ()
    keyword = "if"


class RangeNode(BranchNode):
    """``{{range}}``."""

    __slots__ = ()
    keyword = "range"


class WithNode(BranchNode):
    """``{{with}}``."""

    __slots__ = ()
    keyword = "with"


class BreakNode(Node):
    """``{{break}}``."""

    __slots__ = ()

    def __str__(self) -> str:
        return "{{break}}"


class ContinueNode(Node):
    """``{{continue}}``."""

    __slots__ = ()

    def __str__(self) -> str:
        return "{{continue}}"


class TemplateNode(Node):
    """``{{template "name" pipeline}}`` (also what ``{{block}}`` leaves in place)."""

    __slots__ = ("name", "pipe")

    def __init__(self, pos: int, name: str, pipe: PipeNode | None) -> None:
        super().__init__(pos)
        self.name = name
        self.pipe = pipe

    def __str__(self) -> str:
        if self.pipe is None:
            return "{{template " + _go_quote(self.name) + "}}"
        return "{{template " + _go_quote(self.name) + " " + str(self.pipe) + "}}"


class _End(Node):
    __slots__ = ()

    def __str__(self) -> str:
        return "{{end}}"


class _Else(Node):
    __slots__ = ()

    def __str__(self) -> str:
        return "{{else}}"


# ---------------------------------------------------------------------------------------------------------------
# Lexer

_T_ERROR, _T_EOF, _T_TEXT, _T_COMMENT, _T_LDELIM, _T_RDELIM, _T_SPACE = range(7)
_T_IDENT, _T_FIELD, _T_VAR, _T_DOT, _T_NUMBER, _T_CHARCONST, _T_COMPLEX = range(7, 14)
_T_STRING, _T_RAWSTRING, _T_BOOL, _T_NIL, _T_PIPE, _T_LPAREN, _T_RPAREN = range(14, 21)
_T_ASSIGN, _T_DECLARE, _T_CHAR = range(21, 24)
_T_BLOCK, _T_BREAK, _T_CONTINUE, _T_DEFINE, _T_ELSE, _T_END, _T_IF, _T_RANGE, _T_TEMPLATE, _T_WITH = range(24, 34)

_KEYWORDS = {
    "block": _T_BLOCK,
    "break": _T_BREAK,
    "continue": _T_CONTINUE,
    "define": _T_DEFINE,
    "else": _T_ELSE,
    "end": _T_END,
    "if": _T_IF,
    "range": _T_RANGE,
    "template": _T_TEMPLATE,
    "with": _T_WITH,
    "nil": _T_NIL,
}
_SPACE = " \t\r\n"


class _Tok:
    __slots__ = ("pos", "typ", "val")

    def __init__(self, typ: int, val: str, pos: int) -> None:
        self.typ = typ
        self.val = val
        self.pos = pos

    def __str__(self) -> str:
        if self.typ == _T_EOF:
            return "EOF"
        if self.typ == _T_ERROR:
            return self.val
        if self.typ >= _T_BLOCK or self.typ == _T_NIL:
            return "<" + self.val + ">"
        if len(self.val) > 10:
            return _go_quote(self.val[:10]) + "..."
        return _go_quote(self.val)


def _is_alnum(c: str) -> bool:
    return c == "_" or c.isalpha() or c.isdecimal()


def _lex(src: str) -> list[_Tok]:
    """Split the source into tokens the way Go's lexer does; a lexing error ends the list with an error token."""
    toks: list[_Tok] = []
    add = toks.append
    n = len(src)
    pos = 0

    def at_right_delim(p: int) -> tuple[bool, bool]:
        if p + 1 < n and src[p] in _SPACE and src[p + 1] == "-" and src.startswith("}}", p + 2):
            return True, True
        return src.startswith("}}", p), False

    def terminator(p: int) -> bool:
        if p >= n:
            return True
        c = src[p]
        return c in _SPACE or c in ".,|:()" or src.startswith("}}", p)

    while True:
        x = src.find("{{", pos)
        if x < 0:
            if pos < n:
                add(_Tok(_T_TEXT, src[pos:], pos))
            add(_Tok(_T_EOF, "", n))
            return toks
        after = x + 2
        trim = after + 1 < n and src[after] == "-" and src[after + 1] in _SPACE
        end = x
        if trim:
            end = pos + len(src[pos:x].rstrip(_SPACE))
        if end > pos:
            add(_Tok(_T_TEXT, src[pos:end], pos))
        p = after + 2 if trim else after
        if src.startswith("/*", p):
            close = src.find("*/", p + 2)
            if close < 0:
                add(_Tok(_T_ERROR, "unclosed comment", p))
                return toks
            q = close + 2
            delim, rtrim = at_right_delim(q)
            if not delim:
                add(_Tok(_T_ERROR, "comment ends before closing delimiter", q))
                return toks
            add(_Tok(_T_COMMENT, src[p:q], p))
            q += 4 if rtrim else 2
            if rtrim:
                while q < n and src[q] in _SPACE:
                    q += 1
            pos = q
            continue
        add(_Tok(_T_LDELIM, "{{", x))
        depth = 0
        while True:
            delim, rtrim = at_right_delim(p)
            if delim:
                if depth:
                    add(_Tok(_T_ERROR, "unclosed left paren", p))
                    return toks
                if rtrim:
                    p += 2
                add(_Tok(_T_RDELIM, "}}", p))
                p += 2
                if rtrim:
                    while p < n and src[p] in _SPACE:
                        p += 1
                break
            if p >= n:
                add(_Tok(_T_ERROR, "unclosed action", p))
                return toks
            c = src[p]
            start = p
            if c in _SPACE:
                while p < n and src[p] in _SPACE:
                    p += 1
                if src[p - 1] in _SPACE and p < n and src[p] == "-" and src.startswith("}}", p + 1):
                    p -= 1
                    if p == start:
                        continue
                add(_Tok(_T_SPACE, src[start:p], start))
            elif c == "=":
                add(_Tok(_T_ASSIGN, "=", p))
                p += 1
            elif c == ":":
                if not src.startswith(":=", p):
                    add(_Tok(_T_ERROR, "expected :=", p))
                    return toks
                add(_Tok(_T_DECLARE, ":=", p))
                p += 2
            elif c == "|":
                add(_Tok(_T_PIPE, "|", p))
                p += 1
            elif c == '"' or c == "'":
                p += 1
                while True:
                    d = src[p] if p < n else ""
                    p += 1
                    if d == "\\":
                        if p < n and src[p] != "\n":
                            p += 1
                            continue
                        d = ""
                    if d in ("", "\n"):
                        what = "quoted string" if c == '"' else "character constant"
                        add(_Tok(_T_ERROR, f"unterminated {what}", start))
                        return toks
                    if d == c:
                        break
                add(_Tok(_T_STRING if c == '"' else _T_CHARCONST, src[start:p], start))
            elif c == "`":
                close = src.find("`", p + 1)
                if close < 0:
                    add(_Tok(_T_ERROR, "unterminated raw quoted string", start))
                    return toks
                p = close + 1
                add(_Tok(_T_RAWSTRING, src[start:p], start))
            elif c == "$" or (c == "." and not (p + 1 < n and "0" <= src[p + 1] <= "9")):
                p += 1
                if terminator(p):
                    add(_Tok(_T_VAR if c == "$" else _T_DOT, c, start))
                    continue
                while p < n and _is_alnum(src[p]):
                    p += 1
                if not terminator(p):
                    add(_Tok(_T_ERROR, f"bad character {_go_rune(src[p])}", p))
                    return toks
                add(_Tok(_T_VAR if c == "$" else _T_FIELD, src[start:p], start))
            elif c in "+-." or "0" <= c <= "9":
                p, ok = _scan_number(src, p)
                typ = _T_NUMBER
                if ok and p < n and src[p] in "+-":
                    p, ok = _scan_number(src, p)
                    ok = ok and src[p - 1] == "i"
                    typ = _T_COMPLEX
                if not ok:
                    add(_Tok(_T_ERROR, f"bad number syntax: {_go_quote(src[start:p])}", start))
                    return toks
                add(_Tok(typ, src[start:p], start))
            elif _is_alnum(c):
                while p < n and _is_alnum(src[p]):
                    p += 1
                if not terminator(p):
                    add(_Tok(_T_ERROR, f"bad character {_go_rune(src[p])}", p))
                    return toks
                word = src[start:p]
                if word in _KEYWORDS:
                    add(_Tok(_KEYWORDS[word], word, start))
                elif word in ("true", "false"):
                    add(_Tok(_T_BOOL, word, start))
                else:
                    add(_Tok(_T_IDENT, word, start))
            elif c == "(":
                depth += 1
                add(_Tok(_T_LPAREN, "(", p))
                p += 1
            elif c == ")":
                depth -= 1
                if depth < 0:
                    add(_Tok(_T_ERROR, "unexpected right paren", p))
                    return toks
                add(_Tok(_T_RPAREN, ")", p))
                p += 1
            elif ord(c) < 128 and c.isprintable():
                add(_Tok(_T_CHAR, c, p))
                p += 1
            else:
                add(_Tok(_T_ERROR, f"unrecognized character in action: {_go_rune(c)}", p))
                return toks
        pos = p


def _scan_number(src: str, p: int) -> tuple[int, bool]:
    n = len(src)

    def accept(chars: str) -> bool:
        nonlocal p
        if p < n and src[p] in chars:
            p += 1
            return True
        return False

    def run(chars: str) -> None:
        nonlocal p
        while p < n and src[p] in chars:
            p += 1

    accept("+-")
    digits = "0123456789_"
    if accept("0"):
        if accept("xX"):
            digits = "0123456789abcdefABCDEF_"
        elif accept("oO"):
            digits = "01234567_"
        elif accept("bB"):
            digits = "01_"
    run(digits)
    if accept("."):
        run(digits)
    if len(digits) == 11 and accept("eE"):
        accept("+-")
        run("0123456789_")
    if len(digits) == 23 and accept("pP"):
        accept("+-")
        run("0123456789_")
    accept("i")
    if p < n and _is_alnum(src[p]):
        return p + 1, False
    return p, True


# ---------------------------------------------------------------------------------------------------------------
# Literals


_SIMPLE_ESC = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def _unquote(s: str) -> str:
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


def _parse_char(text: str) -> int:
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


def _parse_number(text: str, typ: int) -> int | float:
    """The value a Go template number constant takes when used without a typed context (``idealConstant``)."""
    if typ == _T_CHARCONST:
        return _parse_char(text)
    if typ == _T_COMPLEX or text.endswith("i"):
        raise ValueError(f"complex constants are not supported: {_go_quote(text)}")
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
                raise ValueError(f"integer overflow: {_go_quote(text)}")
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
        raise ValueError(f"illegal number syntax: {_go_quote(text)}") from None
    if not any(ch in text for ch in ".eEpP"):
        raise ValueError(f"integer overflow: {_go_quote(text)}")
    return f


# ---------------------------------------------------------------------------------------------------------------
# Parser


def _line_col(src: str, pos: int) -> tuple[int, int]:
    pos = max(0, min(pos, len(src)))
    line = src.count("\n", 0, pos) + 1
    col = pos - (src.rfind("\n", 0, pos) + 1) + 1
    return line, col


class _Parser:
    """Recursive-descent parser mirroring ``text/template/parse`` (same grammar, checks and messages)."""

    def __init__(self, src: str, name: str, funcs: Mapping[str, Any]) -> None:
        self.src = src
        self.name = name
        self.funcs = funcs
        self.toks = _lex(src)
        self.i = 0
        self.vars: list[str] = ["$"]
        self.range_depth = 0
        self.depth = 0
        self.trees: dict[str, ListNode] = {}

    # -- token helpers
    def next(self) -> _Tok:
        toks = self.toks
        tok = toks[self.i] if self.i < len(toks) else toks[-1]
        self.i += 1
        return tok

    def backup(self, n: int = 1) -> None:
        self.i -= n

    def peek(self) -> _Tok:
        toks = self.toks
        return toks[self.i] if self.i < len(toks) else toks[-1]

    def next_non_space(self) -> _Tok:
        tok = self.next()
        while tok.typ == _T_SPACE:
            tok = self.next()
        return tok

    def peek_non_space(self) -> _Tok:
        tok = self.next_non_space()
        self.backup()
        return tok

    def error(self, msg: str, pos: int | None = None) -> TemplateError:
        if pos is None:
            pos = self.toks[max(min(self.i, len(self.toks)) - 1, 0)].pos
        line, col = _line_col(self.src, pos)
        return TemplateError(f"template: {self.name}:{line}:{col}: {msg}")

    def unexpected(self, tok: _Tok, context: str) -> TemplateError:
        if tok.typ == _T_ERROR:
            return self.error(tok.val, tok.pos)
        return self.error(f"unexpected {tok} in {context}", tok.pos)

    def expect(self, typ: int, context: str) -> _Tok:
        tok = self.next_non_space()
        if tok.typ != typ:
            raise self.unexpected(tok, context)
        return tok

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"template nesting deeper than {MAX_DEPTH}")

    # -- grammar
    def parse(self) -> ListNode:
        root = ListNode(0)
        while self.peek().typ != _T_EOF:
            if self.peek().typ == _T_LDELIM:
                save = self.i
                self.next()
                if self.next_non_space().typ == _T_DEFINE:
                    self.parse_definition()
                    continue
                self.i = save
            node = self.text_or_action()
            if isinstance(node, (_End, _Else)):
                raise self.error(f"unexpected {node}", node.pos)
            root.nodes.append(node)
        return root

    def add_tree(self, name: str, body: ListNode, pos: int) -> None:
        old = self.trees.get(name)
        if old is not None and not _is_empty_tree(old):
            if _is_empty_tree(body):
                return
            raise self.error(f"template: multiple definition of template {_go_quote(name)}", pos)
        self.trees[name] = body

    def parse_definition(self) -> None:
        context = "define clause"
        tok = self.next_non_space()
        if tok.typ not in (_T_STRING, _T_RAWSTRING):
            raise self.unexpected(tok, context)
        name = self.unquote(tok)
        self.expect(_T_RDELIM, context)
        saved = self.vars, self.range_depth
        self.vars, self.range_depth = ["$"], 0
        self.enter()
        body, end = self.item_list()
        self.depth -= 1
        if not isinstance(end, _End):
            raise self.error(f"unexpected {end} in {context}", end.pos)
        self.vars, self.range_depth = saved
        self.add_tree(name, body, tok.pos)

    def item_list(self) -> tuple[ListNode, Node]:
        lst = ListNode(self.peek_non_space().pos)
        while self.peek_non_space().typ != _T_EOF:
            node = self.text_or_action()
            if isinstance(node, (_End, _Else)):
                return lst, node
            lst.nodes.append(node)
        raise self.error("unexpected EOF", len(self.src))

    def text_or_action(self) -> Node:
        tok = self.next_non_space()
        if tok.typ == _T_TEXT:
            return TextNode(tok.pos, tok.val)
        if tok.typ == _T_LDELIM:
            return self.action()
        if tok.typ == _T_COMMENT:
            return CommentNode(tok.pos, tok.val)
        raise self.unexpected(tok, "input")

    def action(self) -> Node:
        tok = self.next_non_space()
        typ = tok.typ
        if typ == _T_BLOCK:
            return self.block_control(tok)
        if typ in (_T_BREAK, _T_CONTINUE):
            word = tok.val
            nxt = self.next_non_space()
            if nxt.typ != _T_RDELIM:
                raise self.unexpected(nxt, "{{" + word + "}}")
            if self.range_depth == 0:
                raise self.error("{{" + word + "}} outside {{range}}", tok.pos)
            return BreakNode(tok.pos) if typ == _T_BREAK else ContinueNode(tok.pos)
        if typ == _T_ELSE:
            pk = self.peek_non_space()
            if pk.typ in (_T_IF, _T_WITH):
                return _Else(pk.pos)
            return _Else(self.expect(_T_RDELIM, "else").pos)
        if typ == _T_END:
            return _End(self.expect(_T_RDELIM, "end").pos)
        if typ == _T_IF:
            return IfNode(tok.pos, *self.parse_control("if"))
        if typ == _T_RANGE:
            return RangeNode(tok.pos, *self.parse_control("range"))
        if typ == _T_WITH:
            return WithNode(tok.pos, *self.parse_control("with"))
        if typ == _T_TEMPLATE:
            return self.template_control()
        self.backup()
        tok = self.peek()
        return ActionNode(tok.pos, self.pipeline("command", _T_RDELIM))

    def parse_control(self, context: str) -> tuple[PipeNode, ListNode, ListNode | None]:
        nvars = len(self.vars)
        self.enter()
        pipe = self.pipeline(context, _T_RDELIM)
        if context == "range":
            self.range_depth += 1
        body, nxt = self.item_list()
        if context == "range":
            self.range_depth -= 1
        else_list: ListNode | None = None
        if isinstance(nxt, _Else):
            if context == "if" and self.peek().typ == _T_IF:
                tok = self.next()
                else_list = ListNode(nxt.pos, [IfNode(tok.pos, *self.parse_control("if"))])
            elif context == "with" and self.peek().typ == _T_WITH:
                tok = self.next()
                else_list = ListNode(nxt.pos, [WithNode(tok.pos, *self.parse_control("with"))])
            else:
                else_list, end = self.item_list()
                if not isinstance(end, _End):
                    raise self.error(f"expected end; found {end}", end.pos)
        self.depth -= 1
        del self.vars[nvars:]
        return pipe, body, else_list

    def template_name(self, tok: _Tok, context: str) -> str:
        if tok.typ not in (_T_STRING, _T_RAWSTRING):
            raise self.unexpected(tok, context)
        return self.unquote(tok)

    def template_control(self) -> Node:
        context = "template clause"
        tok = self.next_non_space()
        name = self.template_name(tok, context)
        pipe = None
        if self.next_non_space().typ != _T_RDELIM:
            self.backup()
            pipe = self.pipeline(context, _T_RDELIM)
        return TemplateNode(tok.pos, name, pipe)

    def block_control(self, start: _Tok) -> Node:
        context = "block clause"
        tok = self.next_non_space()
        name = self.template_name(tok, context)
        pipe = self.pipeline(context, _T_RDELIM)
        saved = self.vars, self.range_depth
        self.vars, self.range_depth = ["$"], 0
        self.enter()
        body, end = self.item_list()
        self.depth -= 1
        self.vars, self.range_depth = saved
        if not isinstance(end, _End):
            raise self.error(f"unexpected {end} in {context}", end.pos)
        self.add_tree(name, body, tok.pos)
        return TemplateNode(start.pos, name, pipe)

    def pipeline(self, context: str, end: int) -> PipeNode:
        pipe = PipeNode(self.peek_non_space().pos)
        while True:
            v = self.peek_non_space()
            if v.typ != _T_VAR:
                break
            vi = self.i
            self.next()
            nxt = self.peek_non_space()
            if nxt.typ in (_T_ASSIGN, _T_DECLARE):
                pipe.is_assign = nxt.typ == _T_ASSIGN
                self.next_non_space()
                pipe.decl.append(VariableNode(v.pos, (v.val,)))
                self.vars.append(v.val)
            elif nxt.typ == _T_CHAR and nxt.val == ",":
                self.next_non_space()
                pipe.decl.append(VariableNode(v.pos, (v.val,)))
                self.vars.append(v.val)
                if context == "range" and len(pipe.decl) < 2:
                    if self.peek_non_space().typ in (_T_VAR, _T_RDELIM, _T_RPAREN):
                        continue
                    raise self.error("range can only initialize variables", nxt.pos)
                raise self.error(f"too many declarations in {context}", nxt.pos)
            else:
                self.i = vi
            break
        while True:
            tok = self.next_non_space()
            if tok.typ == end:
                if not pipe.cmds:
                    raise self.error(f"missing value for {context}", tok.pos)
                for k, cmd in enumerate(pipe.cmds[1:]):
                    if isinstance(cmd.args[0], (BoolNode, DotNode, NilNode, NumberNode, StringNode)):
                        raise self.error(f"non executable command in pipeline stage {k + 2}", cmd.pos)
                return pipe
            if tok.typ in (
                _T_BOOL,
                _T_CHARCONST,
                _T_COMPLEX,
                _T_DOT,
                _T_FIELD,
                _T_IDENT,
                _T_NUMBER,
                _T_NIL,
                _T_RAWSTRING,
                _T_STRING,
                _T_VAR,
                _T_LPAREN,
            ):
                self.backup()
                pipe.cmds.append(self.command())
            else:
                raise self.unexpected(tok, context)

    def command(self) -> CommandNode:
        cmd = CommandNode(self.peek_non_space().pos)
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                cmd.args.append(operand)
            tok = self.next()
            if tok.typ == _T_SPACE:
                continue
            if tok.typ in (_T_RDELIM, _T_RPAREN):
                self.backup()
            elif tok.typ != _T_PIPE:
                raise self.unexpected(tok, "operand")
            break
        if not cmd.args:
            raise self.error("empty command", cmd.pos)
        return cmd

    def operand(self) -> Node | None:
        node = self.term()
        if node is None:
            return None
        if self.peek().typ == _T_FIELD:
            fields: list[str] = []
            while self.peek().typ == _T_FIELD:
                fields.append(self.next().val[1:])
            if isinstance(node, FieldNode):
                return FieldNode(node.pos, node.ident + tuple(fields))
            if isinstance(node, VariableNode):
                return VariableNode(node.pos, node.ident + tuple(fields))
            if isinstance(node, (BoolNode, StringNode, NumberNode, NilNode, DotNode)):
                raise self.error(f"unexpected . after term {_go_quote(str(node))}", node.pos)
            return ChainNode(node.pos, node, tuple(fields))
        return node

    def term(self) -> Node | None:
        tok = self.next_non_space()
        typ = tok.typ
        if typ == _T_IDENT:
            if tok.val not in self.funcs:
                raise self.error(f"function {_go_quote(tok.val)} not defined", tok.pos)
            return IdentifierNode(tok.pos, tok.val)
        if typ == _T_DOT:
            return DotNode(tok.pos)
        if typ == _T_NIL:
            return NilNode(tok.pos)
        if typ == _T_VAR:
            if tok.val not in self.vars:
                raise self.error(f"undefined variable {_go_quote(tok.val)}", tok.pos)
            return VariableNode(tok.pos, (tok.val,))
        if typ == _T_FIELD:
            return FieldNode(tok.pos, (tok.val[1:],))
        if typ == _T_BOOL:
            return BoolNode(tok.pos, tok.val == "true")
        if typ in (_T_NUMBER, _T_CHARCONST, _T_COMPLEX):
            try:
                return NumberNode(tok.pos, tok.val, _parse_number(tok.val, typ))
            except ValueError as e:
                raise self.error(str(e), tok.pos) from None
        if typ == _T_LPAREN:
            self.enter()
            pipe = self.pipeline("parenthesized pipeline", _T_RPAREN)
            self.depth -= 1
            return pipe
        if typ in (_T_STRING, _T_RAWSTRING):
            return StringNode(tok.pos, tok.val, self.unquote(tok))
        self.backup()
        return None

    def unquote(self, tok: _Tok) -> str:
        try:
            return _unquote(tok.val)
        except ValueError as e:
            raise self.error(str(e), tok.pos) from None


def _is_empty_tree(node: Node) -> bool:
    if isinstance(node, ListNode):
        return all(_is_empty_tree(n) for n in node.nodes)
    if isinstance(node, TextNode):
        return not node.text.strip()
    return isinstance(node, CommentNode)


# ---------------------------------------------------------------------------------------------------------------
# Go values: structs, formatting (fmt) and JSON (encoding/json)

OMITEMPTY = 1
"""JSON field flag: leave out when empty (false, 0, "", nil, empty list/map), as Go's ``omitempty``."""
NIL_EMPTY = 2
"""JSON field flag: an empty list or map stands for a Go nil slice/map and encodes as ``null``."""
OMITNIL = 4
"""JSON field flag: leave out only when ``None`` (``omitempty`` on a Go interface field)."""


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


class _Unsupported(Exception):
    pass


class _FuncError(Exception):
    """Raised by a template function; reported as ``error calling NAME: MSG``."""


def _go_rune(c: str) -> str:
    return f"U+{ord(c):04X} {_go_quote_rune(ord(c))}"


def _go_quote_rune(r: int) -> str:
    if r == ord("'"):
        return "'\\''"
    if r == ord('"'):
        return "'\"'"
    return "'" + _go_quote(chr(r) if 0 <= r <= 0x10FFFF and not 0xD800 <= r <= 0xDFFF else "\ufffd")[1:-1] + "'"


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


def _go_quote(s: str, ascii_only: bool = False) -> str:
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


def _go_type(v: Any) -> str:
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


def _float_digits(x: float) -> tuple[str, int]:
    """Shortest round-trip decimal digits of ``x > 0`` and the decimal point position (value = 0.DIGITS x 10^dp)."""
    mant, _, exp = repr(x).partition("e")
    ip, _, fp = mant.partition(".")
    raw = ip + fp
    stripped = raw.lstrip("0")
    dp = len(ip) - (len(raw) - len(stripped)) + (int(exp) if exp else 0)
    return stripped.rstrip("0") or "0", dp


def _fmt_e(digits: str, dp: int, upper: bool = False) -> str:
    exp = dp - 1
    s = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return s + ("E" if upper else "e") + ("-" if exp < 0 else "+") + f"{abs(exp):02d}"


def _fmt_f(digits: str, dp: int) -> str:
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
    digits, dp = _float_digits(abs(x))
    exp = dp - 1
    s = _fmt_e(digits, dp, upper) if exp < -4 or exp >= 6 else _fmt_f(digits, dp)
    return "-" + s if x < 0 else s


def _json_float(x: float) -> str:
    if x != x or math.isinf(x):
        raise _Unsupported("unsupported value")
    if x == 0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    a = abs(x)
    digits, dp = _float_digits(a)
    if a < 1e-6 or a >= 1e21:
        s = _fmt_e(digits, dp)
        if s[-3] == "-" and s[-2] == "0":
            s = s[:-2] + s[-1]
    else:
        s = _fmt_f(digits, dp)
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


def _sorted_items(m: Mapping[Any, Any]) -> list[tuple[Any, Any]]:
    try:
        return sorted(m.items(), key=lambda kv: kv[0])
    except TypeError:
        return sorted(m.items(), key=lambda kv: (type(kv[0]).__name__, str(kv[0])))


def _fmtv(v: Any) -> str:
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
        return "{" + " ".join(_fmtv(getattr(v, f)) for f in v._fields) + "}"
    if isinstance(v, Mapping):
        return "map[" + " ".join(_fmtv(k) + ":" + _fmtv(x) for k, x in _sorted_items(v)) + "]"
    if isinstance(v, (bytes, bytearray)):
        return "[" + " ".join(str(b) for b in v) + "]"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(_fmtv(x) for x in v) + "]"
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
        out.append(_fmtv(a))
        prev_str = is_str
    return "".join(out)


def _sprintln(args: Iterable[Any]) -> str:
    return " ".join(_fmtv(a) for a in args) + "\n"


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
    return f"%!{verb}({_go_type(v)}={_fmtv(v)})"


def _fmt_int(v: int, verb: str, sp: _Spec) -> str:
    if verb == "c":
        return sp.pad(chr(v) if 0 <= v <= 0x10FFFF and not 0xD800 <= v <= 0xDFFF else "\ufffd")
    if verb == "q":
        return sp.pad(_go_quote_rune(v))
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
        return sp.pad(_go_quote(s, ascii_only=sp.plus))
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
        return sp.pad(_go_type(v))
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
        items = _sorted_items(v)
        return "map[" + " ".join(_fmt_arg(k, verb, sp) + ":" + _fmt_arg(x, verb, sp) for k, x in items) + "]"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(_fmt_arg(x, verb, sp) for x in v) + "]"
    if verb in "vs":
        return sp.pad(_fmtv(v))
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
        extra = ", ".join("<nil>" if a is None else f"{_go_type(a)}={_fmtv(a)}" for a in args[argi:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


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
            raise _Unsupported(f"json: unsupported type: {_go_type(v)}")


def _json_key(k: Any) -> str:
    if isinstance(k, str):
        return k
    if isinstance(k, int) and not isinstance(k, bool):
        return str(k)
    raise _Unsupported(f"json: unsupported type: map[{_go_type(k)}]interface {{}}")


def go_json(v: Any) -> str:
    """Go's ``json.Marshal`` output for a value: compact, map keys sorted, ``<>&`` escaped as ``\\u003c``...

    Raises ``ValueError`` for what Go refuses (NaN, infinities, unsupported types)."""
    out: list[str] = []
    try:
        _json_enc(v, out)
    except _Unsupported as e:
        raise ValueError(str(e)) from None
    return "".join(out)


# ---------------------------------------------------------------------------------------------------------------
# Builtin functions (Go's text/template set plus Ollama's)


def _truth(v: Any) -> bool:
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
        raise _FuncError("missing argument for comparison")
    k1 = _kind(a)
    for b in bs:
        k2 = _kind(b)
        if k1 != k2:
            if k1 != "invalid" and k2 != "invalid":
                raise _FuncError("incompatible types for comparison")
            truth = False
        elif k1 == "invalid":
            truth = True
        elif k1 != "other":
            truth = a == b
        else:
            for x in (a, b):
                if isinstance(x, (list, Mapping, bytearray)):
                    raise _FuncError(f"non-comparable type {_fmtv(x)}: {_go_type(x)}")
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
            raise _FuncError("invalid type for comparison")
    if k1 != k2:
        raise _FuncError("incompatible types for comparison")
    if k1 in ("bool", "complex"):
        raise _FuncError("invalid type for comparison")
    return bool(a < b)


def _f_le(a: Any, b: Any) -> bool:
    return _f_lt(a, b) or _f_eq(a, b)


def _f_gt(a: Any, b: Any) -> bool:
    return not _f_le(a, b)


def _f_ge(a: Any, b: Any) -> bool:
    return not _f_lt(a, b)


def _f_not(a: Any) -> bool:
    return not _truth(a)


def _f_len(v: Any) -> int:
    if isinstance(v, str):
        return len(v) if v.isascii() else len(v.encode("utf-8", "surrogatepass"))
    if isinstance(v, (bytes, bytearray, list, tuple, Mapping)):
        return len(v)
    if v is None:
        raise _FuncError("len of nil pointer")
    raise _FuncError(f"len of type {_go_type(v)}")


def _index_arg(ix: Any, cap: int) -> int:
    if ix is None:
        raise _FuncError("cannot index slice/array with nil")
    if isinstance(ix, bool) or not isinstance(ix, int):
        raise _FuncError(f"cannot index slice/array with type {_go_type(ix)}")
    if ix < 0 or ix > cap:
        raise _FuncError(f"index out of range: {ix}")
    return int(ix)


def _f_index(item: Any, *indexes: Any) -> Any:
    if item is None:
        raise _FuncError("index of untyped nil")
    for ix in indexes:
        if item is None:
            raise _FuncError("index of nil pointer")
        if isinstance(item, (str, bytes, bytearray, list, tuple)):
            seq = item.encode("utf-8", "surrogatepass") if isinstance(item, str) else item
            x = _index_arg(ix, len(seq))
            if x >= len(seq):
                raise _FuncError(f"index out of range: {x}")
            item = seq[x]
        elif isinstance(item, Mapping):
            if ix is None:
                raise _FuncError("value is nil; should be of type string")
            try:
                item = item.get(ix)
            except TypeError:
                raise _FuncError(f"value has type {_go_type(ix)}; should be string") from None
        else:
            raise _FuncError(f"can't index item of type {_go_type(item)}")
    return item


def _f_slice(item: Any, *indexes: Any) -> Any:
    if item is None:
        raise _FuncError("slice of untyped nil")
    if len(indexes) > 3:
        raise _FuncError(f"too many slice indexes: {len(indexes)}")
    if isinstance(item, str):
        if len(indexes) == 3:
            raise _FuncError("cannot 3-index slice a string")
        seq: Any = item if item.isascii() else item.encode("utf-8", "surrogatepass")
    elif isinstance(item, (list, tuple, bytes, bytearray)):
        seq = item
    else:
        raise _FuncError(f"can't slice item of type {_go_type(item)}")
    idx = [0, len(seq), len(seq)]
    for i, ix in enumerate(indexes):
        idx[i] = _index_arg(ix, len(seq))
    if idx[0] > idx[1]:
        raise _FuncError(f"invalid slice index: {idx[0]} > {idx[1]}")
    if len(indexes) == 3 and idx[1] > idx[2]:
        raise _FuncError(f"invalid slice index: {idx[1]} > {idx[2]}")
    out = seq[idx[0] : idx[1]]
    if isinstance(item, str) and isinstance(out, bytes):
        return out.decode("utf-8", "replace")
    return out


def _f_print(*args: Any) -> str:
    return go_sprint(args)


def _f_println(*args: Any) -> str:
    return _sprintln(args)


def _f_printf(fmt: Any, *args: Any) -> str:
    if not isinstance(fmt, str):
        raise _FuncError(f"wrong type for value; expected string; got {_go_type(fmt)}")
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
        raise _FuncError("call of nil")
    if not callable(fn):
        raise _FuncError(f"non-function {_fmtv(fn)} of type {_go_type(fn)}")
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
            raise _FuncError(f"wrong type for value; expected string; got {_go_type(a)}")


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


def _lazy(*_args: Any) -> Any:  # placeholder: "and"/"or" are evaluated lazily by the compiler
    raise AssertionError("unreachable")


# name -> (function, minimum args, maximum args or None)
BUILTINS: dict[str, tuple[Callable[..., Any], int, int | None]] = {
    "and": (_lazy, 1, None),
    "or": (_lazy, 1, None),
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


# ---------------------------------------------------------------------------------------------------------------
# Compiler: AST -> closures

_MISSING: Any = object()


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _State:
    __slots__ = ("depth", "out", "size", "steps", "vars")

    def __init__(self, data: Any) -> None:
        self.out: list[str] = []
        self.size = 0
        self.vars: list[list[Any]] = [["$", data]]
        self.steps = 0
        self.depth = 0


_Run = Callable[[_State, Any], None]
_Eval = Callable[[_State, Any], Any]
_Cmd = Callable[[_State, Any, Any], Any]

_K_NONE, _K_FIELD, _K_METHOD, _K_MAP, _K_ATTR = range(5)
_KIND_CACHE: dict[tuple[type, str], int] = {}
_PLAIN = (str, int, float, bool, complex, bytes, bytearray, list, tuple, type(None))


def _member_kind(cls: type, name: str) -> int:
    key = (cls, name)
    kind = _KIND_CACHE.get(key)
    if kind is not None:
        return kind
    m = getattr(cls, name, None)
    if cls.__module__ != "builtins" and name[:1].isupper() and m is not None and callable(m):
        kind = _K_METHOD
    elif issubclass(cls, GoStruct):
        kind = _K_FIELD if name in cls._fields else _K_NONE
    elif issubclass(cls, Mapping):
        kind = _K_MAP
    elif issubclass(cls, _PLAIN) or name.startswith("_"):
        kind = _K_NONE
    else:
        kind = _K_ATTR
    if len(_KIND_CACHE) < 10_000:
        _KIND_CACHE[key] = kind
    return kind


def _print_value(v: Any) -> str:
    if v is None:
        return "<no value>"
    return _fmtv(v)


class _Compiler:
    """Turns one parse tree into nested closures; errors carry the Go-style location of the failing node."""

    def __init__(self, tmpl: Template, name: str) -> None:
        self.tmpl = tmpl
        self.name = name
        self.funcs = tmpl.funcs

    def fail(self, node: Node, msg: str) -> TemplateError:
        line, col = _line_col(self.tmpl.source, node.pos)
        ctx = str(node)
        if len(ctx) > 20:
            ctx = ctx[:20] + "..."
        name = _go_quote(self.name)
        return TemplateError(f"template: {self.name}:{line}:{col}: executing {name} at <{ctx}>: {msg}")

    # -- statements
    def seq(self, lst: ListNode) -> _Run:
        items: list[Any] = []
        for n in lst.nodes:
            if isinstance(n, CommentNode):
                continue
            if isinstance(n, TextNode):
                if items and isinstance(items[-1], str):
                    items[-1] += n.text
                else:
                    items.append(n.text)
            else:
                items.append(self.node(n))
        if not items:
            return _noop
        if len(items) == 1 and isinstance(items[0], str):
            text = items[0]
            size = len(text)

            def run_text(st: _State, dot: Any) -> None:
                st.out.append(text)
                st.size += size
                if st.size > MAX_OUTPUT:
                    raise _overflow()

            return run_text
        if len(items) == 1:
            only: _Run = items[0]
            return only
        seq = tuple(items)

        def run_list(st: _State, dot: Any) -> None:
            out = st.out
            for it in seq:
                if it.__class__ is str:
                    out.append(it)
                    st.size += len(it)
                else:
                    it(st, dot)
            if st.size > MAX_OUTPUT:
                raise _overflow()

        return run_list

    def node(self, n: Node) -> _Run:
        if isinstance(n, ActionNode):
            return self.action(n)
        if isinstance(n, IfNode):
            return self.if_with(n, with_=False)
        if isinstance(n, WithNode):
            return self.if_with(n, with_=True)
        if isinstance(n, RangeNode):
            return self.range(n)
        if isinstance(n, TemplateNode):
            return self.template(n)
        if isinstance(n, ListNode):
            return self.seq(n)
        if isinstance(n, TextNode):
            return self.seq(ListNode(n.pos, [n]))
        if isinstance(n, BreakNode):
            return _run_break
        if isinstance(n, ContinueNode):
            return _run_continue
        if isinstance(n, CommentNode):
            return _noop
        raise TemplateError(f"template: {self.name}: unknown node {n!r}")

    def action(self, n: ActionNode) -> _Run:
        pipe = self.pipe(n.pipe)
        if n.pipe.decl:

            def run_decl(st: _State, dot: Any) -> None:
                pipe(st, dot)

            return run_decl

        def run_action(st: _State, dot: Any) -> None:
            v = pipe(st, dot)
            s = v if v.__class__ is str else _print_value(v)
            st.out.append(s)
            st.size += len(s)

        return run_action

    def if_with(self, n: BranchNode, with_: bool) -> _Run:
        pipe = self.pipe(n.pipe)
        body = self.seq(n.list)
        other = self.seq(n.else_list) if n.else_list is not None else None

        def run_if(st: _State, dot: Any) -> None:
            mark = len(st.vars)
            v = pipe(st, dot)
            if _truth(v):
                body(st, v if with_ else dot)
            elif other is not None:
                other(st, dot)
            del st.vars[mark:]

        return run_if

    def range(self, n: RangeNode) -> _Run:
        pipe = self.pipe(n.pipe)
        body = self.seq(n.list)
        other = self.seq(n.else_list) if n.else_list is not None else None
        names = [d.ident[0] for d in n.pipe.decl]
        ndecl = len(names)
        assign = n.pipe.is_assign
        fail = self.fail

        def run_range(st: _State, dot: Any) -> None:
            mark0 = len(st.vars)
            v = pipe(st, dot)
            mark = len(st.vars)
            items: Iterable[tuple[Any, Any]]
            if isinstance(v, (list, tuple)):
                items = enumerate(v)
            elif isinstance(v, Mapping):
                items = _sorted_items(v)
            elif isinstance(v, int) and not isinstance(v, bool):
                if ndecl > 1:
                    raise fail(n, f"can't use {v} to iterate over more than one variable")
                items = ((None, k) for k in range(v))
            elif v is None:
                items = ()
            else:
                raise fail(n, f"range can't iterate over {_fmtv(v)}")
            ran = False
            try:
                for idx, elem in items:
                    ran = True
                    st.steps += 1
                    if st.steps > MAX_ITERATIONS:
                        raise fail(n, f"more than {MAX_ITERATIONS} range iterations")
                    if st.size > MAX_OUTPUT:
                        raise _overflow()
                    if ndecl:
                        if assign:
                            _set_var(st, names[0], idx if ndecl > 1 else elem, n, fail)
                            if ndecl > 1:
                                _set_var(st, names[1], elem, n, fail)
                        else:
                            st.vars[mark - 1][1] = elem
                            if ndecl > 1:
                                st.vars[mark - 2][1] = idx
                    try:  # noqa: SIM105 - contextlib.suppress is slower in this hot loop
                        body(st, elem)
                    except _Continue:
                        pass
                    del st.vars[mark:]
            except _Break:
                del st.vars[mark:]
            if not ran and other is not None:
                other(st, dot)
            del st.vars[mark0:]

        return run_range

    def template(self, n: TemplateNode) -> _Run:
        pipe = self.pipe(n.pipe) if n.pipe is not None else None
        tmpl = self.tmpl
        name = n.name
        fail = self.fail

        def run_template(st: _State, dot: Any) -> None:
            body = tmpl._compiled_tree(name)
            if body is None:
                raise fail(n, f"template {_go_quote(name)} not defined")
            if st.depth >= MAX_DEPTH:
                raise fail(n, f"exceeded maximum template depth ({MAX_DEPTH})")
            st.steps += 1
            if st.steps > MAX_ITERATIONS:
                raise fail(n, f"more than {MAX_ITERATIONS} range iterations and template calls")
            newdot = pipe(st, dot) if pipe is not None else None
            saved = st.vars
            st.vars = [["$", newdot]]
            st.depth += 1
            try:
                body(st, newdot)
            finally:
                st.vars = saved
                st.depth -= 1

        return run_template

    # -- expressions
    def pipe(self, p: PipeNode) -> _Eval:
        cmds = [self.command(c) for c in p.cmds]
        names = [d.ident[0] for d in p.decl]
        assign = p.is_assign
        fail = self.fail
        if len(cmds) == 1 and not names:
            c0 = cmds[0]

            def run_one(st: _State, dot: Any) -> Any:
                return c0(st, dot, _MISSING)

            return run_one

        def run_pipe(st: _State, dot: Any) -> Any:
            v = _MISSING
            for c in cmds:
                v = c(st, dot, v)
            for name in names:
                if assign:
                    _set_var(st, name, v, p, fail)
                else:
                    st.vars.append([name, v])
            return v

        return run_pipe

    def command(self, cmd: CommandNode) -> _Cmd:
        first = cmd.args[0]
        rest = cmd.args[1:]
        fail = self.fail
        if isinstance(first, FieldNode):
            return self.field_chain(first, None, first.ident, rest)
        if isinstance(first, VariableNode):
            if len(first.ident) > 1:
                return self.field_chain(first, self.variable(first.ident[0], first), first.ident[1:], rest)
            get = self.variable(first.ident[0], first)
            value_cmd = self.no_args(get, first, bool(rest))
            return value_cmd
        if isinstance(first, ChainNode):
            return self.field_chain(first, self.arg(first.node), first.fields, rest)
        if isinstance(first, IdentifierNode):
            return self.call(first, rest, cmd)
        if isinstance(first, PipeNode):
            return self.no_args(self.pipe(first), first, bool(rest))
        if isinstance(first, NilNode):

            def run_nil(st: _State, dot: Any, final: Any) -> Any:
                raise fail(first, "nil is not a command")

            return run_nil
        return self.no_args(self.arg(first), first, bool(rest))

    def no_args(self, get: _Eval, node: Node, has_rest: bool) -> _Cmd:
        fail = self.fail

        def run_value(st: _State, dot: Any, final: Any) -> Any:
            if has_rest or final is not _MISSING:
                raise fail(node, f"can't give argument to non-function {node}")
            return get(st, dot)

        return run_value

    def variable(self, name: str, node: Node) -> _Eval:
        fail = self.fail
        if name == "$":

            def run_root(st: _State, dot: Any) -> Any:
                return st.vars[0][1]

            return run_root

        def run_var(st: _State, dot: Any) -> Any:
            vs = st.vars
            i = len(vs) - 1
            while i >= 0:
                if vs[i][0] == name:
                    return vs[i][1]
                i -= 1
            raise fail(node, f"undefined variable: {name}")

        return run_var

    def field_chain(self, node: Node, receiver: _Eval | None, ident: tuple[str, ...], rest: list[Node]) -> _Cmd:
        arg_fns = [self.arg(a) for a in rest]
        fail = self.fail
        head = ident[:-1]
        last = ident[-1]
        if receiver is None and not head and not arg_fns:

            def run_field1(st: _State, dot: Any, final: Any) -> Any:
                if final is _MISSING:
                    cls = dot.__class__
                    if cls is dict:
                        return dot.get(last)
                    if _KIND_CACHE.get((cls, last)) == _K_FIELD:
                        return getattr(dot, last)
                return _field(st, dot, dot, last, (), final, node, fail)

            return run_field1

        def run_fields(st: _State, dot: Any, final: Any) -> Any:
            v = dot if receiver is None else receiver(st, dot)
            for name in head:
                v = v.get(name) if v.__class__ is dict else _field(st, dot, v, name, (), _MISSING, node, fail)
            return _field(st, dot, v, last, arg_fns, final, node, fail)

        return run_fields

    def call(self, ident: IdentifierNode, rest: list[Node], cmd: CommandNode | None = None) -> _Cmd:
        name = ident.name
        fail = self.fail
        arg_fns = [self.arg(a) for a in rest]
        entry = self.funcs.get(name)
        if entry is None:  # the parser checks names; a custom table could still lose one

            def run_missing(st: _State, dot: Any, final: Any) -> Any:
                raise fail(ident, f"{_go_quote(name)} is not a defined function")

            return run_missing
        fn, lo, hi = entry
        where: Node = cmd if cmd is not None else ident
        if name in ("and", "or") and fn is _lazy:
            want = name == "or"

            def run_andor(st: _State, dot: Any, final: Any) -> Any:
                if not arg_fns and final is _MISSING:
                    raise fail(ident, f"wrong number of args for {name}: want at least 1 got 0")
                v = None
                for f in arg_fns:
                    v = f(st, dot)
                    if _truth(v) == want:
                        return v
                if final is not _MISSING:
                    v = final
                return v

            return run_andor

        def run_call(st: _State, dot: Any, final: Any) -> Any:
            args = [f(st, dot) for f in arg_fns]
            if final is not _MISSING:
                args.append(final)
            n = len(args)
            if n < lo or (hi is not None and n > hi):
                if hi == lo:
                    raise fail(ident, f"wrong number of args for {name}: want {lo} got {n}")
                raise fail(ident, f"wrong number of args for {name}: want at least {lo} got {n}")
            try:
                return fn(*args)
            except (TemplateError, _Break, _Continue, RecursionError, MemoryError):
                raise
            except Exception as e:
                raise fail(where, f"error calling {name}: {e}") from None

        return run_call

    def arg(self, n: Node) -> _Eval:
        if isinstance(n, FieldNode) and len(n.ident) == 1:
            last = n.ident[0]
            fail = self.fail

            def run_field_arg(st: _State, dot: Any) -> Any:
                cls = dot.__class__
                if cls is dict:
                    return dot.get(last)
                if _KIND_CACHE.get((cls, last)) == _K_FIELD:
                    return getattr(dot, last)
                return _field(st, dot, dot, last, (), _MISSING, n, fail)

            return run_field_arg
        if isinstance(n, VariableNode) and len(n.ident) == 1:
            return self.variable(n.ident[0], n)
        if isinstance(n, (FieldNode, VariableNode, ChainNode, IdentifierNode)):
            cmd = self.command(CommandNode(n.pos, [n]))

            def run_arg(st: _State, dot: Any) -> Any:
                return cmd(st, dot, _MISSING)

            return run_arg
        if isinstance(n, PipeNode):
            return self.pipe(n)
        if isinstance(n, DotNode):
            return _dot
        if isinstance(n, NilNode):
            return _nil
        if isinstance(n, (BoolNode, NumberNode)):
            return _const(n.value)
        if isinstance(n, StringNode):
            return _const(n.text)
        raise TemplateError(f"template: {self.name}: can't evaluate {n}")


def _const(value: Any) -> _Eval:
    def run_const(st: _State, dot: Any) -> Any:
        return value

    return run_const


def _dot(st: _State, dot: Any) -> Any:
    return dot


def _nil(st: _State, dot: Any) -> Any:
    return None


def _noop(st: _State, dot: Any) -> None:
    return None


def _run_break(st: _State, dot: Any) -> None:
    raise _Break


def _run_continue(st: _State, dot: Any) -> None:
    raise _Continue


def _overflow() -> TemplateError:
    return TemplateError(f"template: output exceeds {MAX_OUTPUT} characters")


def _set_var(st: _State, name: str, value: Any, node: Node, fail: Callable[[Node, str], TemplateError]) -> None:
    vs = st.vars
    i = len(vs) - 1
    while i >= 0:
        if vs[i][0] == name:
            vs[i][1] = value
            return
        i -= 1
    raise fail(node, f"undefined variable: {name}")


def _invoke(fn: Callable[..., Any], args: list[Any], name: str, node: Node, fail: Callable[..., TemplateError]) -> Any:
    try:
        return fn(*args)
    except TemplateError:
        raise
    except (_Break, _Continue, RecursionError, MemoryError):
        raise
    except _FuncError as e:
        raise fail(node, f"error calling {name}: {e}") from None
    except Exception as e:
        raise fail(node, f"error calling {name}: {e}") from None


def _field(
    st: _State,
    dot: Any,
    recv: Any,
    name: str,
    arg_fns: Iterable[_Eval] | tuple[()],
    final: Any,
    node: Node,
    fail: Callable[[Node, str], TemplateError],
) -> Any:
    """Go's ``evalField``: method call, struct field or map key, in that order."""
    has_args = bool(arg_fns) or final is not _MISSING
    cls = recv.__class__
    if cls is dict:
        if has_args:
            raise fail(node, f"{name} is not a method but has arguments")
        return recv.get(name)
    if recv is None:
        raise fail(node, f"nil pointer evaluating interface {{}}.{name}")
    kind = _member_kind(cls, name)
    if kind == _K_FIELD:
        if has_args:
            raise fail(node, f"{name} has arguments but cannot be invoked as function")
        return getattr(recv, name)
    if kind == _K_MAP:
        if has_args:
            raise fail(node, f"{name} is not a method but has arguments")
        try:
            return recv.get(name)
        except TypeError:
            return None
    if kind in (_K_METHOD, _K_ATTR):
        try:
            member = getattr(recv, name)
        except AttributeError:
            raise fail(node, f"can't evaluate field {name} in type {_go_type(recv)}") from None
        if kind == _K_METHOD or callable(member):
            args = [f(st, dot) for f in arg_fns]
            if final is not _MISSING:
                args.append(final)
            return _invoke(member, args, name, node, fail)
        if has_args:
            raise fail(node, f"{name} has arguments but cannot be invoked as function")
        return member
    raise fail(node, f"can't evaluate field {name} in type {_go_type(recv)}")


# ---------------------------------------------------------------------------------------------------------------
# Public API


def _identifiers(node: Node | None, out: list[str]) -> None:
    """Ollama's ``template.Identifiers``: field and variable names, walking only the node kinds Ollama walks."""
    if node is None:
        return
    if isinstance(node, ListNode):
        for n in node.nodes:
            _identifiers(n, out)
    elif isinstance(node, (ActionNode, TemplateNode)):
        _identifiers(node.pipe, out)
    elif isinstance(node, BranchNode):
        _identifiers(node.pipe, out)
        _identifiers(node.list, out)
        _identifiers(node.else_list, out)
    elif isinstance(node, PipeNode):
        for c in node.cmds:
            for a in c.args:
                _identifiers(a, out)
    elif isinstance(node, (FieldNode, VariableNode)):
        out.extend(node.ident)


class Template:
    """A parsed template: parse once with :func:`parse`, then :meth:`execute` as often as needed."""

    __slots__ = ("_compiled", "_run", "_vars", "cache", "funcs", "name", "root", "source", "trees")

    def __init__(
        self,
        source: str,
        root: ListNode,
        trees: dict[str, ListNode] | None = None,
        *,
        name: str = "",
        funcs: Mapping[str, tuple[Callable[..., Any], int, int | None]] | None = None,
    ) -> None:
        self.source = source
        self.name = name
        self.root = root
        self.trees: dict[str, ListNode] = trees if trees is not None else {}
        self.funcs: Mapping[str, tuple[Callable[..., Any], int, int | None]] = funcs if funcs is not None else BUILTINS
        self.cache: dict[str, Any] = {}
        """Derived forms kept by callers (e.g. Ollama's legacy cut, see ``corral.templates.prompt``)."""
        self._compiled: dict[str, _Run] = {}
        self._vars: frozenset[str] | None = None
        self._run = _Compiler(self, name).seq(root)

    def __repr__(self) -> str:
        return f"Template({self.source!r})"

    def with_root(self, root: ListNode) -> Template:
        """A template with the same source, defined templates and functions but another main tree."""
        return Template(self.source, root, self.trees, name=self.name, funcs=self.funcs)

    def lookup(self, name: str) -> ListNode | None:
        """The tree of a ``{{define}}``/``{{block}}`` template, or None."""
        return self.trees.get(name)

    def _compiled_tree(self, name: str) -> _Run | None:
        run = self._compiled.get(name)
        if run is None:
            tree = self.trees.get(name)
            if tree is None:
                if name != self.name:
                    return None
                tree = self.root
            run = _Compiler(self, name).seq(tree)
            self._compiled[name] = run
        return run

    @property
    def vars(self) -> frozenset[str]:
        """Lower-cased names of every field and variable the template uses (Ollama's ``Template.Vars``)."""
        if self._vars is None:
            out: list[str] = []
            _identifiers(self.root, out)
            for tree in self.trees.values():
                _identifiers(tree, out)
            self._vars = frozenset(s.lower() for s in out)
        return self._vars

    def references(self, field: str) -> bool:
        """Whether the template uses ``.Field`` (or ``$.Field``, ``$x.Field``) anywhere; case-insensitive, as Ollama."""
        return field.lower() in self.vars

    def execute(self, data: Any) -> str:
        """Render with ``data`` as dot and ``$``; raises :class:`TemplateError` on any execution error."""
        st = _State(data)
        try:
            self._run(st, data)
        except TemplateError:
            raise
        except RecursionError:
            raise TemplateError("template: execution nested too deeply") from None
        except MemoryError:
            raise TemplateError("template: out of memory") from None
        except Exception as e:  # a bug here must still surface as a template failure, never crash a request
            raise TemplateError(f"template: internal error: {type(e).__name__}: {e}") from None
        return "".join(st.out)


def parse(
    source: str,
    *,
    name: str = "",
    funcs: Mapping[str, Callable[..., Any]] | None = None,
) -> Template:
    """Parse Go template source; ``funcs`` adds functions (called with the evaluated arguments).

    Raises :class:`TemplateError` (with line and column) for invalid templates, as ``template.Parse`` would."""
    table: Mapping[str, tuple[Callable[..., Any], int, int | None]] = BUILTINS
    if funcs:
        table = {**BUILTINS, **{k: (f, 0, None) for k, f in funcs.items()}}
    if not isinstance(source, str):
        raise TemplateError("template: source is not a string")
    try:
        p = _Parser(source, name, table)
        root = p.parse()
        return Template(source, root, p.trees, name=name, funcs=table)
    except TemplateError:
        raise
    except RecursionError:
        raise TemplateError("template: nested too deeply") from None
    except Exception as e:
        raise TemplateError(f"template: internal error: {type(e).__name__}: {e}") from None
