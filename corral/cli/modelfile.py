"""The client half of ``corral create``: read a Modelfile and turn it into an ``/api/create`` request.

As in Ollama, the Modelfile never travels to the server. The CLI parses it, hashes the local files it names
(``FROM ./model.gguf``, ``ADAPTER``, ``DRAFT``), uploads them as blobs, and sends a JSON request that refers to
them by digest; a ``FROM`` that is not a local path is a model name the server resolves (and pulls if missing).
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.cli.params import DEPRECATED_PARAMS, format_params

COMMANDS = ("from", "license", "template", "system", "adapter", "draft", "renderer", "parser", "parameter",
            "message", "requires")
ROLES = ("system", "user", "assistant")
INVALID_COMMAND = (
    'command must be one of "from", "license", "template", "system", "adapter", "draft", "renderer", "parser", '
    '"parameter", "message", or "requires"'
)


class ModelfileError(ValueError):
    """A Modelfile that cannot be parsed or whose files cannot be read; the message is Ollama's where it has one."""


@dataclass
class Command:
    name: str  # "model" for FROM, a parameter's own name for PARAMETER, else the lower-cased instruction
    args: str


def _unquote(text: str) -> tuple[str, bool]:
    if text.startswith('"""'):
        if len(text) >= 6 and text.endswith('"""'):
            return text[3:-3], True
        return "", False
    if text.startswith('"'):
        if len(text) >= 2 and text.endswith('"'):
            return text[1:-1], True
        return "", False
    return text, True


def parse(text: str) -> list[Command]:
    """Parse Modelfile text with Ollama's rules: case-insensitive instructions, ``#`` comments, values to the end
    of the line unless a ``"`` or ``\"\"\"`` quote is still open. Raises :class:`ModelfileError`."""
    text = text.removeprefix("\ufeff")
    commands: list[Command] = []
    state = "nil"
    buf: list[str] = []
    name = ""
    role = ""
    line = 1

    def finish_value(final: bool) -> bool:
        nonlocal role
        value, ok = _unquote("".join(buf).strip(" \t"))
        if not ok:
            if final:
                raise ModelfileError("unexpected EOF")
            return False
        if role:
            value, role = f"{role}: {value}", ""
        commands.append(Command(name, value))
        return True

    for ch in text:
        if ch in "\r\n":
            line += 1
        if state == "value":
            if ch in "\r\n" and finish_value(final=False):
                buf.clear()
                state = "nil"
                continue
            if ch in "\r\n\t" or ch.isprintable():
                buf.append(ch)
            continue
        if state == "nil":
            if ch == "#":
                state = "comment"
            elif ch in " \t\r\n":
                pass
            else:
                state = "name"
                buf.append(ch)
            continue
        if state == "comment":
            if ch in "\r\n":
                state = "nil"
            continue
        if state == "name":
            if ch.isalpha():
                buf.append(ch)
                continue
            if ch not in " \t":
                raise ModelfileError(INVALID_COMMAND)
            word = "".join(buf).lower()
            buf.clear()
            if word not in COMMANDS:
                raise ModelfileError(f"(line {line}): {INVALID_COMMAND}")
            if word == "parameter":
                state = "parameter"
                continue
            name = "model" if word == "from" else word
            state = "message" if word == "message" else "value"
            continue
        if state in ("parameter", "message"):
            if ch.isalpha() or (state == "parameter" and (ch.isdigit() or ch == "_")):
                buf.append(ch)
                continue
            if ch not in " \t":
                raise ModelfileError("unexpected EOF")
            word = "".join(buf)
            buf.clear()
            if state == "parameter":
                name = word
            else:
                if word not in ROLES:
                    raise ModelfileError(
                        f'(line {line}): message role must be one of "system", "user", or "assistant"'
                    )
                role = word
            state = "value"
    if state == "value":
        finish_value(final=True)
    elif state not in ("nil", "comment"):
        raise ModelfileError("unexpected EOF")
    if not any(c.name == "model" for c in commands):
        raise ModelfileError("no FROM line")
    return commands


def expand_path(arg: str, relative_dir: Path) -> Path:
    """Where a ``FROM``/``ADAPTER`` argument points: absolute, ``~``-relative, or relative to the Modelfile."""
    if arg.startswith(("/", "\\")) or os.path.isabs(arg):
        return Path(arg).resolve()
    if arg.startswith("~"):
        return Path(os.path.expanduser(arg))
    return (relative_dir / arg).resolve()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _is_gguf(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(4) == b"GGUF"
    except OSError:
        return False


def files_for_model(directory: Path) -> list[Path]:
    """The files of a model directory, in Ollama's order of preference (safetensors, torch, then GGUF)."""

    def glob(*patterns: str) -> list[Path]:
        found: list[Path] = []
        for pattern in patterns:
            found.extend(p for p in sorted(directory.glob(pattern)) if p.is_file())
        return found

    weights = (
        glob("model*.safetensors", "*/model*.safetensors")
        or glob("consolidated*.safetensors")
        or glob("pytorch_model*.bin")
        or glob("consolidated*.pth")
        or glob("*.gguf")
        or [p for p in glob("*.bin") if _is_gguf(p)]
    )
    if not weights:
        raise ModelfileError("no Modelfile or safetensors files found")
    extras = glob("*.json", "**/*.json", "chat_template.jinja", "tokenizer.model")
    seen: dict[Path, None] = {}
    for path in [*weights, *extras]:
        seen.setdefault(path.resolve(), None)
    return list(seen)


def file_digests(path: Path) -> dict[Path, str]:
    """``{file: digest}`` for a file or model directory; raises ``FileNotFoundError`` when ``path`` is absent."""
    if not path.exists():
        raise FileNotFoundError(path)
    files = files_for_model(path) if path.is_dir() else [path.resolve()]
    return {f: sha256_file(f) for f in files}


def upload_names(files: dict[Path, str]) -> dict[Path, str]:
    """The names blobs are registered under: paths relative to the files' common directory when there are
    several (``text_encoder/model.safetensors``), else the base name."""
    if len(files) < 2:
        return {f: f.name for f in files}
    root = Path(os.path.commonpath([str(f.parent) for f in files]))
    return {f: f.relative_to(root).as_posix() for f in files}


@dataclass
class CreatePlan:
    """What ``create`` sends: the request body, and the local files to upload first (path -> digest)."""

    request: dict[str, Any]
    files: dict[Path, str] = field(default_factory=dict)
    adapters: dict[Path, str] = field(default_factory=dict)
    draft_files: dict[Path, str] = field(default_factory=dict)

    def uploads(self) -> dict[Path, str]:
        return {**self.files, **self.adapters, **self.draft_files}

    def finalize(self) -> dict[str, Any]:
        """The request with file maps keyed by upload name, as the server expects them."""
        body = dict(self.request)
        for key, files in (("files", self.files), ("adapters", self.adapters), ("draft_files", self.draft_files)):
            if files:
                names = upload_names(files)
                body[key] = {names[f]: digest for f, digest in files.items()}
        return body


def build_plan(commands: list[Command], relative_dir: Path) -> CreatePlan:
    """``Modelfile.CreateRequest``: resolve paths, hash files, type parameters, collect messages and licenses."""
    plan = CreatePlan(request={})
    req = plan.request
    raw_params: dict[str, list[str]] = {}
    licenses: list[str] = []
    messages: list[dict[str, str]] = []
    for command in commands:
        name, args = command.name, command.args
        if name == "model":
            try:
                plan.files.update(file_digests(expand_path(args, relative_dir)))
            except FileNotFoundError:
                req["from"] = args
        elif name in ("adapter", "draft"):
            path = expand_path(args, relative_dir)
            try:
                digests = file_digests(path)
            except FileNotFoundError:
                raise ModelfileError(f"{name} file {args!r} does not exist") from None
            (plan.adapters if name == "adapter" else plan.draft_files).update(digests)
        elif name == "license":
            licenses.append(args)
        elif name == "message":
            role, _, content = args.partition(": ")
            messages.append({"role": role, "content": content})
        elif name in ("template", "system", "renderer", "parser", "requires"):
            req[name] = args
        elif name in DEPRECATED_PARAMS:
            print(f"warning: parameter {name} is deprecated", file=sys.stderr)
        else:
            raw_params.setdefault(name, []).append(args)
    if raw_params:
        try:
            req["parameters"] = format_params(raw_params)
        except ValueError as exc:
            raise ModelfileError(str(exc)) from None
    if licenses:
        req["license"] = licenses
    if messages:
        req["messages"] = messages
    return plan
