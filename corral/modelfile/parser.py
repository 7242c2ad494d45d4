"""Read Modelfile text into commands with Ollama's rules (``parser/parser.go``).

The grammar is a character-level state machine, so odd inputs behave as they do in Ollama: instructions are
case-insensitive, ``#`` starts a comment only at the start of a line, a value runs to the end of its line unless a
``"`` or ``\"\"\"`` quote is still open, and non-printable characters are dropped. Where Ollama's error says little
(``unexpected EOF``), the message here keeps Ollama's words and adds the line and what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.errors import ModelfileError

COMMANDS = ("from", "license", "template", "system", "adapter", "draft", "renderer", "parser", "parameter",
            "message", "requires")
ROLES = ("system", "user", "assistant")
INVALID_COMMAND = (
    'command must be one of "from", "license", "template", "system", "adapter", "draft", "renderer", "parser", '
    '"parameter", "message", or "requires"'
)
INVALID_ROLE = 'message role must be one of "system", "user", or "assistant"'
NO_FROM = "no FROM line"
_SPACE = " \t"
_NEWLINE = "\r\n"
_TRIM = " \t\r\n"  # the only whitespace Go's TrimSpace can meet: other spaces are not printable, so never kept


@dataclass(frozen=True)
class Command:
    """One instruction. ``name`` is ``model`` for FROM, the parameter's own name for PARAMETER, else the lower-case
    instruction; a MESSAGE's ``args`` is ``"<role>: <text>"``, as Ollama stores it."""

    name: str
    args: str
    line: int = field(default=0, compare=False)


def unquote(text: str) -> tuple[str, bool]:
    """Strip one level of ``\"\"\"`` or ``"`` quoting; ``ok`` is false while a quote is still open."""
    if text.startswith('"""'):
        if len(text) >= 6 and text.endswith('"""'):
            return text[3:-3], True
        return "", False
    if text.startswith('"'):
        if len(text) >= 2 and text.endswith('"'):
            return text[1:-1], True
        return "", False
    return text, True


def decode(source: str | bytes) -> str:
    """Modelfile bytes as text: a UTF-8 or UTF-16 byte-order mark picks the encoding (Go's ``BOMOverride``);
    otherwise UTF-8, with invalid bytes read as U+FFFD like Go's rune reader."""
    if isinstance(source, str):
        return source.removeprefix("\ufeff")
    if source.startswith(b"\xef\xbb\xbf"):
        return source[3:].decode("utf-8", "replace")
    if source.startswith(b"\xff\xfe"):
        return source[2:].decode("utf-16-le", "replace")
    if source.startswith(b"\xfe\xff"):
        return source[2:].decode("utf-16-be", "replace")
    return source.decode("utf-8", "replace")


def _spaced(*parts: str) -> str:
    return " ".join(part for part in parts if part)


def _printable(ch: str) -> bool:
    # Go's strconv.IsPrint and Python's isprintable agree: letters, marks, numbers, punctuation, symbols, ASCII space.
    return ch.isprintable()


class _Reader:
    """The state machine; one instance reads one Modelfile."""

    def __init__(self) -> None:
        self.commands: list[Command] = []
        self.state = "nil"
        self.buf: list[str] = []
        self.name = ""
        self.role = ""
        self.line = 1
        self.start = 1  # the line the current instruction began on

    def fail(self, message: str) -> ModelfileError:
        return ModelfileError(message, self.line)

    def word(self) -> str:
        return "".join(self.buf)

    def keyword(self) -> str:
        """The instruction being read, as written in a Modelfile (for messages)."""
        return {"model": "FROM", "message": "MESSAGE"}.get(self.name, self.name.upper() if self.name in COMMANDS
                                                             else f"PARAMETER {self.name}")

    def feed(self, ch: str) -> None:
        handler = getattr(self, f"_{self.state}")
        handler(ch)

    def _nil(self, ch: str) -> None:
        if ch == "#":
            self.state = "comment"
        elif ch in _SPACE or ch in _NEWLINE:
            return
        else:
            self.state, self.start = "name", self.line
            self.buf = [ch] if _printable(ch) else []

    def _comment(self, ch: str) -> None:
        if ch in _NEWLINE:
            self.state = "nil"

    def _name(self, ch: str) -> None:
        if ch.isascii() and ch.isalpha():
            self.buf.append(ch)
            return
        word = self.word()
        if ch not in _SPACE:
            if word.lower() in COMMANDS and ch in _NEWLINE:
                raise self.fail(f"{word} has no value")
            raise self.fail(f"{INVALID_COMMAND} (found {(word + ch)!r})")
        keyword = word.lower()
        if keyword not in COMMANDS:
            raise self.fail(f"{INVALID_COMMAND} (found {word!r})")
        self.buf = []
        if keyword == "parameter":
            self.state = "parameter"
        elif keyword == "message":
            self.state, self.name = "message", "message"
        else:
            self.state, self.name = "value", "model" if keyword == "from" else keyword

    def _parameter(self, ch: str) -> None:
        if ch.isascii() and (ch.isalnum() or ch == "_"):
            self.buf.append(ch)
        elif ch in _SPACE:
            if self.buf:  # extra blanks before the name are skipped
                self.name, self.buf, self.state = self.word(), [], "value"
        elif ch in _NEWLINE:
            raise self.fail(_spaced("unexpected EOF: PARAMETER", self.word(), "has no value"))
        else:
            raise self.fail(f"invalid character {ch!r} in parameter name {self.word() + ch!r}"
                            " (letters, digits and _ only)")

    def _message(self, ch: str) -> None:
        if ch.isascii() and ch.isalpha():
            self.buf.append(ch)
        elif ch in _SPACE:
            if self.buf:
                role = self.word()
                if role not in ROLES:
                    raise self.fail(f"{INVALID_ROLE}, not {role!r}")
                self.role, self.buf, self.state = role, [], "value"
        elif ch in _NEWLINE:
            raise self.fail(_spaced("unexpected EOF: MESSAGE", self.word(), "has no text"))
        else:
            raise self.fail(f"{INVALID_ROLE}, not {self.word() + ch!r}")

    def _value(self, ch: str) -> None:
        if ch in _NEWLINE:
            value, ok = unquote(self.word().strip(_TRIM))
            if ok:
                self.finish(value)
                return
            self.buf.append(ch)  # a quote is still open: the newline is part of the value
        elif ch in _SPACE or _printable(ch):
            self.buf.append(ch)

    def finish(self, value: str) -> None:
        if self.role:
            value, self.role = f"{self.role}: {value}", ""
        self.commands.append(Command(self.name, value, self.start))
        self.state, self.buf = "nil", []

    def end(self) -> None:
        if self.state == "value":
            text = self.word().strip(_TRIM)
            value, ok = unquote(text)
            if not ok:
                quote = '"""' if text.startswith('"""') else '"'
                raise ModelfileError(f"unexpected EOF: the {quote} quote of this {self.keyword()} is never closed",
                                     self.start)
            self.finish(value)
        elif self.state == "name":
            raise self.fail(f"unexpected EOF: {self.word()} has no value")
        elif self.state in ("parameter", "message"):
            what = "PARAMETER" if self.state == "parameter" else "MESSAGE"
            raise self.fail(_spaced("unexpected EOF:", what, self.word(), "has no value"))


def parse(source: str | bytes, *, require_from: bool = True) -> list[Command]:
    """The commands of a Modelfile, in order; raises :class:`ModelfileError`.

    ``require_from`` enforces Ollama's ``no FROM line`` rule (turn it off to read a fragment)."""
    text = decode(source)
    reader = _Reader()
    length = len(text)
    for i, ch in enumerate(text):
        reader.feed(ch)
        # "\r\n" ends one line, not two (Ollama counts both characters, which doubles its line numbers)
        if ch == "\n" or (ch == "\r" and (i + 1 >= length or text[i + 1] != "\n")):
            reader.line += 1
    reader.end()
    if require_from and not any(c.name == "model" for c in reader.commands):
        raise ModelfileError(NO_FROM)
    return reader.commands
