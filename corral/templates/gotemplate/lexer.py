"""The lexer: template source to tokens, the way Go's ``text/template/parse`` lexer splits it.

Outside actions the source is text up to the next ``{{``; inside an action, the first character of each token
picks the method that scans it (a table lookup rather than a chain of tests, which keeps the per-token cost low).
Every scanning method takes the position to scan from and returns where the next token starts, or ``-1`` once
lexing has ended: at EOF, or after an error token, which is always the last token (the parser reports it).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .literals import go_quote, go_rune

__all__ = [
    "T_ASSIGN",
    "T_BLOCK",
    "T_BOOL",
    "T_BREAK",
    "T_CHAR",
    "T_CHARCONST",
    "T_COMMENT",
    "T_COMPLEX",
    "T_CONTINUE",
    "T_DECLARE",
    "T_DEFINE",
    "T_DOT",
    "T_ELSE",
    "T_END",
    "T_EOF",
    "T_ERROR",
    "T_FIELD",
    "T_IDENT",
    "T_IF",
    "T_LDELIM",
    "T_LPAREN",
    "T_NIL",
    "T_NUMBER",
    "T_PIPE",
    "T_RANGE",
    "T_RAWSTRING",
    "T_RDELIM",
    "T_RPAREN",
    "T_SPACE",
    "T_STRING",
    "T_TEMPLATE",
    "T_TEXT",
    "T_VAR",
    "T_WITH",
    "Lexer",
    "Token",
    "lex",
]

# Token types; the keywords come last, so ``typ >= T_BLOCK`` tells a keyword.
T_ERROR, T_EOF, T_TEXT, T_COMMENT, T_LDELIM, T_RDELIM, T_SPACE = range(7)
T_IDENT, T_FIELD, T_VAR, T_DOT, T_NUMBER, T_CHARCONST, T_COMPLEX = range(7, 14)
T_STRING, T_RAWSTRING, T_BOOL, T_NIL, T_PIPE, T_LPAREN, T_RPAREN = range(14, 21)
T_ASSIGN, T_DECLARE, T_CHAR = range(21, 24)
T_BLOCK, T_BREAK, T_CONTINUE, T_DEFINE, T_ELSE, T_END, T_IF, T_RANGE, T_TEMPLATE, T_WITH = range(24, 34)

_WORDS = {
    "block": T_BLOCK,
    "break": T_BREAK,
    "continue": T_CONTINUE,
    "define": T_DEFINE,
    "else": T_ELSE,
    "end": T_END,
    "if": T_IF,
    "range": T_RANGE,
    "template": T_TEMPLATE,
    "with": T_WITH,
    "nil": T_NIL,
    "true": T_BOOL,
    "false": T_BOOL,
}
_SPACE = " \t\r\n"
_TERMINATORS = _SPACE + ".,|:()"
# Runs scanned with one regex call instead of a Python loop per character.  _ASCII_WORD stops at the first
# non-ASCII character, where Lexer.word_end goes on by Go's rule (unicode.IsLetter or IsDigit).
_ASCII_WORD = re.compile(r"[0-9A-Za-z_]*")
_QUOTED = {'"': re.compile(r'"(?:[^"\\\n]|\\[^\n])*"'), "'": re.compile(r"'(?:[^'\\\n]|\\[^\n])*'")}


class Token:
    """One token: its type (``T_*``), its source text (an error token's: the message) and its offset."""

    __slots__ = ("pos", "typ", "val")

    def __init__(self, typ: int, val: str, pos: int) -> None:
        self.typ = typ
        self.val = val
        self.pos = pos

    def __str__(self) -> str:
        """The token as Go's parser names it in ``unexpected ...`` errors."""
        if self.typ == T_EOF:
            return "EOF"
        if self.typ == T_ERROR:
            return self.val
        if self.typ >= T_BLOCK or self.typ == T_NIL:
            return "<" + self.val + ">"
        if len(self.val) > 10:
            return go_quote(self.val[:10]) + "..."
        return go_quote(self.val)


def _is_alnum(c: str) -> bool:
    return c == "_" or c.isalpha() or c.isdecimal()


def lex(src: str) -> list[Token]:
    """Split the source into tokens the way Go's lexer does; a lexing error ends the list with an error token."""
    return Lexer(src).run()


class Lexer:
    """One pass over one source; see the module docstring for the scanning protocol."""

    __slots__ = ("depth", "n", "src", "toks")

    def __init__(self, src: str) -> None:
        self.src = src
        self.n = len(src)
        self.toks: list[Token] = []
        self.depth = 0
        """Open parentheses in the current action."""

    def run(self) -> list[Token]:
        pos = 0
        while pos >= 0:
            pos = self.text(pos)
        return self.toks

    def error(self, msg: str, pos: int) -> int:
        self.toks.append(Token(T_ERROR, msg, pos))
        return -1

    def skip_space(self, p: int) -> int:
        src, n = self.src, self.n
        while p < n and src[p] in _SPACE:
            p += 1
        return p

    # -- outside actions

    def text(self, pos: int) -> int:
        """Text up to the next ``{{`` (less trailing space before ``{{- ``), then the comment or action there."""
        src, n, toks = self.src, self.n, self.toks
        x = src.find("{{", pos)
        if x < 0:
            if pos < n:
                toks.append(Token(T_TEXT, src[pos:], pos))
            toks.append(Token(T_EOF, "", n))
            return -1
        p = x + 2
        trim = p + 1 < n and src[p] == "-" and src[p + 1] in _SPACE
        end = pos + len(src[pos:x].rstrip(_SPACE)) if trim else x
        if end > pos:
            toks.append(Token(T_TEXT, src[pos:end], pos))
        if trim:
            p += 2
        if src.startswith("/*", p):
            return self.comment(p)
        toks.append(Token(T_LDELIM, "{{", x))
        return self.action(p)

    def comment(self, p: int) -> int:
        """``/* ... */``, which must be followed at once by the closing delimiter."""
        src = self.src
        close = src.find("*/", p + 2)
        if close < 0:
            return self.error("unclosed comment", p)
        q = close + 2
        if src.startswith("}}", q):
            trim = False
        elif q + 1 < self.n and src[q] in _SPACE and src.startswith("-}}", q + 1):
            trim = True
        else:
            return self.error("comment ends before closing delimiter", q)
        self.toks.append(Token(T_COMMENT, src[p:q], p))
        return self.skip_space(q + 4) if trim else q + 2

    def right_delim(self, p: int, trim: bool) -> int:
        """``}}``, or `` -}}`` (at ``p``, the space), which also drops the space that follows."""
        if self.depth:
            return self.error("unclosed left paren", p)
        if trim:
            p += 2
        self.toks.append(Token(T_RDELIM, "}}", p))
        return self.skip_space(p + 2) if trim else p + 2

    # -- inside actions

    def action(self, p: int) -> int:
        """The tokens of one action, up to and including its closing delimiter."""
        src, n = self.src, self.n
        scanners = _SCANNERS
        self.depth = 0
        while True:
            if p >= n:
                return self.error("unclosed action", p)
            c = src[p]
            if c == "}":
                if src.startswith("}}", p):
                    return self.right_delim(p, False)
            elif c in _SPACE and src.startswith("-}}", p + 1):
                return self.right_delim(p, True)
            p = scanners.get(c, Lexer.other)(self, p)
            if p < 0:
                return p

    def space(self, p: int) -> int:
        """A run of spaces; one space before ``-}}`` stays, as part of that delimiter."""
        src = self.src
        start = p
        p = self.skip_space(p + 1)
        if src.startswith("-}}", p):
            p -= 1
        if p > start:
            self.toks.append(Token(T_SPACE, src[start:p], start))
        return p

    def assign(self, p: int) -> int:
        self.toks.append(Token(T_ASSIGN, "=", p))
        return p + 1

    def declare(self, p: int) -> int:
        if not self.src.startswith(":=", p):
            return self.error("expected :=", p)
        self.toks.append(Token(T_DECLARE, ":=", p))
        return p + 2

    def pipe(self, p: int) -> int:
        self.toks.append(Token(T_PIPE, "|", p))
        return p + 1

    def left_paren(self, p: int) -> int:
        self.depth += 1
        self.toks.append(Token(T_LPAREN, "(", p))
        return p + 1

    def right_paren(self, p: int) -> int:
        self.depth -= 1
        if self.depth < 0:
            return self.error("unexpected right paren", p)
        self.toks.append(Token(T_RPAREN, ")", p))
        return p + 1

    def char(self, p: int) -> int:
        """Any other printable ASCII character (the parser accepts only ``,`` among them)."""
        self.toks.append(Token(T_CHAR, self.src[p], p))
        return p + 1

    def quoted(self, p: int) -> int:
        """A ``"string"`` or ``'c'`` character constant: backslash escapes anything but a newline."""
        quote = self.src[p]
        m = _QUOTED[quote].match(self.src, p)
        if m is None:
            what = "quoted string" if quote == '"' else "character constant"
            return self.error(f"unterminated {what}", p)
        self.toks.append(Token(T_STRING if quote == '"' else T_CHARCONST, m.group(), p))
        return m.end()

    def raw_string(self, p: int) -> int:
        """A ```raw string```, which may span lines."""
        close = self.src.find("`", p + 1)
        if close < 0:
            return self.error("unterminated raw quoted string", p)
        self.toks.append(Token(T_RAWSTRING, self.src[p : close + 1], p))
        return close + 1

    def variable(self, p: int) -> int:
        """``$`` or ``$name``."""
        return self.named(p, T_VAR, T_VAR)

    def dot(self, p: int) -> int:
        """``.``, a field ``.Name``, or a number such as ``.5``."""
        if p + 1 < self.n and "0" <= self.src[p + 1] <= "9":
            return self.number(p)
        return self.named(p, T_DOT, T_FIELD)

    def named(self, start: int, bare: int, named: int) -> int:
        """``$`` or ``.`` (type ``bare``) alone, or followed by a name (type ``named``)."""
        src = self.src
        if self.at_terminator(start + 1):
            self.toks.append(Token(bare, src[start], start))
            return start + 1
        p = self.word_end(start + 1)
        if not self.at_terminator(p):
            return self.error(f"bad character {go_rune(src[p])}", p)
        self.toks.append(Token(named, src[start:p], start))
        return p

    def word(self, p: int) -> int:
        """A keyword, ``true``/``false``, or a function name."""
        start = p
        p = self.word_end(p)
        if not self.at_terminator(p):
            return self.error(f"bad character {go_rune(self.src[p])}", p)
        word = self.src[start:p]
        self.toks.append(Token(_WORDS.get(word, T_IDENT), word, start))
        return p

    def other(self, p: int) -> int:
        """A character outside the table: a non-ASCII letter or digit starts a word; anything else is an error."""
        c = self.src[p]
        if _is_alnum(c):
            return self.word(p)
        return self.error(f"unrecognized character in action: {go_rune(c)}", p)

    def word_end(self, p: int) -> int:
        """End of the run of letters, digits and underscores at ``p``."""
        src, n = self.src, self.n
        m = _ASCII_WORD.match(src, p)
        assert m is not None  # the pattern matches the empty string
        p = m.end()
        while p < n and src[p] > "\x7f" and _is_alnum(src[p]):
            m = _ASCII_WORD.match(src, p + 1)
            assert m is not None
            p = m.end()
        return p

    def at_terminator(self, p: int) -> bool:
        """Whether a word may end before ``p`` (Go's ``atTerminator``)."""
        if p >= self.n:
            return True
        c = self.src[p]
        return c in _TERMINATORS or (c == "}" and self.src.startswith("}}", p))

    def number(self, p: int) -> int:
        """A number, or a complex constant written ``1+2i``; checked loosely here, exactly by the parser."""
        src, n = self.src, self.n
        start = p
        p, ok = _number_end(src, p)
        typ = T_NUMBER
        if ok and p < n and src[p] in "+-":
            p, ok = _number_end(src, p)
            ok = ok and src[p - 1] == "i"
            typ = T_COMPLEX
        if not ok:
            return self.error(f"bad number syntax: {go_quote(src[start:p])}", start)
        self.toks.append(Token(typ, src[start:p], start))
        return p


_DECIMAL = "0123456789_"
_HEX = "0123456789abcdefABCDEF_"
_PREFIXES = {"0x": _HEX, "0X": _HEX, "0o": "01234567_", "0O": "01234567_", "0b": "01_", "0B": "01_"}
_EXPONENTS = {_DECIMAL: ("e", "E"), _HEX: ("p", "P")}


def _skip(src: str, p: int, chars: str, most: int = -1) -> int:
    """The position after a run of ``chars`` at ``p`` (at most ``most`` of them when given)."""
    n = len(src)
    while most and p < n and src[p] in chars:
        p += 1
        most -= 1
    return p


def _number_end(src: str, p: int) -> tuple[int, bool]:
    """Go's ``scanNumber``: the end of the number at ``p`` and whether it looked like one: sign, base prefix,
    digits, fraction, exponent (``e`` for decimal, ``p`` for hex), ``i``, and then no letter or digit."""
    p = _skip(src, p, "+-", 1)
    digits = _PREFIXES.get(src[p : p + 2])
    if digits is None:
        digits = _DECIMAL
    else:
        p += 2
    p = _skip(src, p, digits)
    if src.startswith(".", p):
        p = _skip(src, p + 1, digits)
    if src[p : p + 1] in _EXPONENTS.get(digits, ()):
        p = _skip(src, _skip(src, p + 1, "+-", 1), _DECIMAL)
    p = _skip(src, p, "i", 1)
    if _is_alnum(src[p : p + 1]):
        return p + 1, False
    return p, True


def _scanner_for(c: str) -> Callable[[Lexer, int], int]:
    """The method that scans a token starting with ASCII character ``c``."""
    special: dict[str, Callable[[Lexer, int], int]] = {
        "=": Lexer.assign,
        ":": Lexer.declare,
        "|": Lexer.pipe,
        "(": Lexer.left_paren,
        ")": Lexer.right_paren,
        '"': Lexer.quoted,
        "'": Lexer.quoted,
        "`": Lexer.raw_string,
        "$": Lexer.variable,
        ".": Lexer.dot,
        "+": Lexer.number,
        "-": Lexer.number,
    }
    if c in _SPACE:
        return Lexer.space
    if c in special:
        return special[c]
    if "0" <= c <= "9":
        return Lexer.number
    if _is_alnum(c):
        return Lexer.word
    if c.isprintable():
        return Lexer.char
    return Lexer.other


_SCANNERS = {chr(i): _scanner_for(chr(i)) for i in range(128)}
"""First character of a token -> its scanner; non-ASCII characters go to :meth:`Lexer.other`."""
