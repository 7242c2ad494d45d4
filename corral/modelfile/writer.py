"""Write commands back as Modelfile text (Ollama's ``Command.String`` and ``quote``), so that reading the text
gives the same commands again.

Ollama quotes a value only when it holds a newline or starts or ends with a space, using ``\"\"\"`` when the value
holds a ``"``. Those rules are kept, and extended where Ollama's output would read back differently: a value that
starts with ``"`` or ends in a tab is quoted too, and when the chosen quote style would close early (a line of the
value ends in the closing quote) the other style is used. A value that neither style can hold is refused in strict
mode; ``/api/show`` uses lenient mode and writes Ollama's choice.
"""

from __future__ import annotations

from collections.abc import Iterable

from corral.errors import ModelfileError
from corral.modelfile.parser import COMMANDS, Command, parse

_TRIM = " \t\r\n"


def _needs_quotes(value: str) -> bool:
    return "\n" in value or "\r" in value or value != value.strip(_TRIM) or value.startswith('"')


def _reads_back(keyword: str, text: str, expected: str) -> bool:
    try:
        got = parse(f"{keyword} {text}\n", require_from=False)
    except ModelfileError:
        return False
    return len(got) == 1 and got[0].args == expected


def quote(value: str, *, strict: bool = False, keyword: str = "SYSTEM", prefix: str = "") -> str:
    """``value`` as it must appear after ``keyword``; raises :class:`ModelfileError` in ``strict`` mode when no
    quoting reads back as ``value``. ``prefix`` is what the parser puts before the value (a MESSAGE's role)."""
    if not _needs_quotes(value):
        return value
    triple, single = f'"""{value}"""', f'"{value}"'
    preferred, other = (triple, single) if '"' in value else (single, triple)
    for candidate in (preferred, other):
        if _reads_back(keyword, candidate, prefix + value):
            return candidate
    if strict:
        raise ModelfileError(f"{keyword} value cannot be written in a Modelfile: every quoting of it ends early")
    return preferred


def command_text(command: Command, *, strict: bool = False) -> str:
    """One line (or quoted block) of Modelfile text for ``command``."""
    name, args = command.name, command.args
    if name == "model":
        return f"FROM {quote(args, strict=strict, keyword='FROM')}"
    if name == "message":
        role, _, text = args.partition(": ")
        return f"MESSAGE {role} {quote(text, strict=strict, keyword=f'MESSAGE {role}', prefix=f'{role}: ')}"
    if name in COMMANDS:
        keyword = name.upper()
        return f"{keyword} {quote(args, strict=strict, keyword=keyword)}"
    return f"PARAMETER {name} {quote(args, strict=strict, keyword=f'PARAMETER {name}')}"


def format_modelfile(commands: Iterable[Command], *, strict: bool = False) -> str:
    """Modelfile text for ``commands``, one per line, each ending in a newline (``Modelfile.String``)."""
    return "".join(command_text(command, strict=strict) + "\n" for command in commands)
