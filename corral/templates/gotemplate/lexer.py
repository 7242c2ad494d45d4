"""The lexer: template source to tokens, the way Go's ``text/template/parse`` lexer splits it.

A lexing error ends the token list with an error token (the parser reports it).
"""

from __future__ import annotations

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
    "Token",
    "lex",
]

# Token types; the keywords come last, so ``typ >= T_BLOCK`` tells a keyword.
T_ERROR, T_EOF, T_TEXT, T_COMMENT, T_LDELIM, T_RDELIM, T_SPACE = range(7)
T_IDENT, T_FIELD, T_VAR, T_DOT, T_NUMBER, T_CHARCONST, T_COMPLEX = range(7, 14)
T_STRING, T_RAWSTRING, T_BOOL, T_NIL, T_PIPE, T_LPAREN, T_RPAREN = range(14, 21)
T_ASSIGN, T_DECLARE, T_CHAR = range(21, 24)
T_BLOCK, T_BREAK, T_CONTINUE, T_DEFINE, T_ELSE, T_END, T_IF, T_RANGE, T_TEMPLATE, T_WITH = range(24, 34)

_KEYWORDS = {
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
}
_SPACE = " \t\r\n"


class Token:
    """One token: its type (``T_*``), its source text (an error token's: the message) and its offset."""

    __slots__ = ("pos", "typ", "val")

    def __init__(self, typ: int, val: str, pos: int) -> None:
        self.typ = typ
        self.val = val
        self.pos = pos

    def __str__(self) -> str:
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
    toks: list[Token] = []
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
                add(Token(T_TEXT, src[pos:], pos))
            add(Token(T_EOF, "", n))
            return toks
        after = x + 2
        trim = after + 1 < n and src[after] == "-" and src[after + 1] in _SPACE
        end = x
        if trim:
            end = pos + len(src[pos:x].rstrip(_SPACE))
        if end > pos:
            add(Token(T_TEXT, src[pos:end], pos))
        p = after + 2 if trim else after
        if src.startswith("/*", p):
            close = src.find("*/", p + 2)
            if close < 0:
                add(Token(T_ERROR, "unclosed comment", p))
                return toks
            q = close + 2
            delim, rtrim = at_right_delim(q)
            if not delim:
                add(Token(T_ERROR, "comment ends before closing delimiter", q))
                return toks
            add(Token(T_COMMENT, src[p:q], p))
            q += 4 if rtrim else 2
            if rtrim:
                while q < n and src[q] in _SPACE:
                    q += 1
            pos = q
            continue
        add(Token(T_LDELIM, "{{", x))
        depth = 0
        while True:
            delim, rtrim = at_right_delim(p)
            if delim:
                if depth:
                    add(Token(T_ERROR, "unclosed left paren", p))
                    return toks
                if rtrim:
                    p += 2
                add(Token(T_RDELIM, "}}", p))
                p += 2
                if rtrim:
                    while p < n and src[p] in _SPACE:
                        p += 1
                break
            if p >= n:
                add(Token(T_ERROR, "unclosed action", p))
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
                add(Token(T_SPACE, src[start:p], start))
            elif c == "=":
                add(Token(T_ASSIGN, "=", p))
                p += 1
            elif c == ":":
                if not src.startswith(":=", p):
                    add(Token(T_ERROR, "expected :=", p))
                    return toks
                add(Token(T_DECLARE, ":=", p))
                p += 2
            elif c == "|":
                add(Token(T_PIPE, "|", p))
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
                        add(Token(T_ERROR, f"unterminated {what}", start))
                        return toks
                    if d == c:
                        break
                add(Token(T_STRING if c == '"' else T_CHARCONST, src[start:p], start))
            elif c == "`":
                close = src.find("`", p + 1)
                if close < 0:
                    add(Token(T_ERROR, "unterminated raw quoted string", start))
                    return toks
                p = close + 1
                add(Token(T_RAWSTRING, src[start:p], start))
            elif c == "$" or (c == "." and not (p + 1 < n and "0" <= src[p + 1] <= "9")):
                p += 1
                if terminator(p):
                    add(Token(T_VAR if c == "$" else T_DOT, c, start))
                    continue
                while p < n and _is_alnum(src[p]):
                    p += 1
                if not terminator(p):
                    add(Token(T_ERROR, f"bad character {go_rune(src[p])}", p))
                    return toks
                add(Token(T_VAR if c == "$" else T_FIELD, src[start:p], start))
            elif c in "+-." or "0" <= c <= "9":
                p, ok = _scan_number(src, p)
                typ = T_NUMBER
                if ok and p < n and src[p] in "+-":
                    p, ok = _scan_number(src, p)
                    ok = ok and src[p - 1] == "i"
                    typ = T_COMPLEX
                if not ok:
                    add(Token(T_ERROR, f"bad number syntax: {go_quote(src[start:p])}", start))
                    return toks
                add(Token(typ, src[start:p], start))
            elif _is_alnum(c):
                while p < n and _is_alnum(src[p]):
                    p += 1
                if not terminator(p):
                    add(Token(T_ERROR, f"bad character {go_rune(src[p])}", p))
                    return toks
                word = src[start:p]
                if word in _KEYWORDS:
                    add(Token(_KEYWORDS[word], word, start))
                elif word in ("true", "false"):
                    add(Token(T_BOOL, word, start))
                else:
                    add(Token(T_IDENT, word, start))
            elif c == "(":
                depth += 1
                add(Token(T_LPAREN, "(", p))
                p += 1
            elif c == ")":
                depth -= 1
                if depth < 0:
                    add(Token(T_ERROR, "unexpected right paren", p))
                    return toks
                add(Token(T_RPAREN, ")", p))
                p += 1
            elif ord(c) < 128 and c.isprintable():
                add(Token(T_CHAR, c, p))
                p += 1
            else:
                add(Token(T_ERROR, f"unrecognized character in action: {go_rune(c)}", p))
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

