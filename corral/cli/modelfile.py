"""The client half of ``corral create``: read a Modelfile and turn it into an ``/api/create`` request.

As in Ollama, the Modelfile never travels to the server. The CLI parses it, hashes the local files it names
(``FROM ./model.gguf``, ``ADAPTER``, ``DRAFT``), uploads them as blobs, and sends a JSON request that refers to
them by digest; a ``FROM`` that is not a local path is a model name the server resolves (and pulls if missing).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.errors import ModelfileError
from corral.modelfile import COMMANDS, INVALID_COMMAND, ROLES, Command, parse, typed_parameters

__all__ = ["COMMANDS", "INVALID_COMMAND", "ROLES", "Command", "CreatePlan", "ModelfileError", "build_plan",
           "expand_path", "file_digests", "files_for_model", "parse", "sha256_file", "upload_names"]

_SEMVER_RE = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")


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
    root = directory.resolve()
    seen: dict[Path, None] = {}
    for path in [*weights, *extras]:
        real = path.resolve()
        if not real.is_relative_to(root):  # a symlink out of the directory (Hugging Face's cache layout)
            hint = "\n\nUse --local-dir <dir> when downloading model to disable caching" if ".cache" in str(
                real) else ""
            raise ModelfileError(f"insecure path: {os.path.relpath(real, root)}{hint}")
        seen.setdefault(real, None)
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
    draft_blobs: dict[str, str] = field(default_factory=dict)  # a DRAFT naming a model: its weights, on the server

    def uploads(self) -> dict[Path, str]:
        return {**self.files, **self.adapters, **self.draft_files}

    def finalize(self) -> dict[str, Any]:
        """The request with file maps keyed by upload name, as the server expects them."""
        body = dict(self.request)
        for key, files in (("files", self.files), ("adapters", self.adapters), ("draft_files", self.draft_files)):
            if files:
                names = upload_names(files)
                body[key] = {names[f]: digest for f, digest in files.items()}
        if self.draft_blobs:
            body["draft_files"] = {**body.get("draft_files", {}), **self.draft_blobs}
        return body


def build_plan(commands: list[Command], relative_dir: Path,
               model_weights: Callable[[str], str | None] | None = None) -> CreatePlan:
    """``Modelfile.CreateRequest``: resolve paths, hash files, type parameters, collect messages and licenses.

    ``model_weights(name)`` gives the digest of an installed model's weights (None when there is no such model): with
    it a ``DRAFT`` that is not a local path may name a model, whose weights the server already has. Ollama's client
    takes only paths there. Raises :class:`ModelfileError`; errors about a parameter name its line."""
    plan = CreatePlan(request={})
    req = plan.request
    licenses: list[str] = []
    messages: list[dict[str, str]] = []
    model_paths: list[Path] = []
    draft_paths: list[Path] = []
    for command in commands:
        name, args = command.name, command.args
        if name == "model":
            path = expand_path(args, relative_dir)
            try:
                plan.files.update(file_digests(path))
            except FileNotFoundError:
                req["from"] = args
                continue
            _reject_same_path(path, draft_paths)
            model_paths.append(path)
        elif name in ("adapter", "draft"):
            path = expand_path(args, relative_dir)
            try:
                digests = file_digests(path)
            except FileNotFoundError:
                digest = model_weights(args) if name == "draft" and model_weights is not None else None
                if digest is None:
                    raise ModelfileError(f"{name.upper()} file {args!r} does not exist", command.line) from None
                plan.draft_blobs[re.sub(r"[^A-Za-z0-9._-]+", "-", args).strip("-.") + ".gguf"] = digest
                continue
            if name == "adapter":
                plan.adapters = digests
            else:
                _reject_same_path(path, model_paths)
                draft_paths.append(path)
                plan.draft_files.update(digests)
        elif name == "license":
            licenses.append(args)
        elif name == "message":
            role, _, content = args.partition(": ")
            messages.append({"role": role, "content": content})
        elif name == "requires":
            version = args.removeprefix("v")
            if not _SEMVER_RE.fullmatch(version):
                raise ModelfileError("requires must be a valid semver (e.g. 0.14.0)", command.line)
            req["requires"] = version
        elif name in ("template", "system", "renderer", "parser"):
            req[name] = args
    params, warnings = typed_parameters(commands)
    for warning in warnings:
        print(warning, file=sys.stderr)
    if params:
        req["parameters"] = params
    if licenses:
        req["license"] = licenses
    if messages:
        req["messages"] = messages
    return plan


def _reject_same_path(path: Path, others: list[Path]) -> None:
    if any(os.path.realpath(path) == os.path.realpath(other) for other in others):
        raise ModelfileError(f"DRAFT must not reference the same local path as FROM: {path}")
