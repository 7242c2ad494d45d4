"""A Hugging Face model directory, opened defensively.

The directory may come from an upload (``/api/create`` with ``files``), so every file it names is untrusted: file
names in ``model.safetensors.index.json`` or ``modules.json`` could climb out with ``..``, and a symlink could
point anywhere on the machine. Every path is resolved and must stay inside the directory, must be a regular file,
and JSON files are size-limited before they are parsed.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from corral.convert.safetensors import SafetensorsFile, TensorEntry
from corral.errors import ConvertError

MAX_JSON_BYTES = 64 * 1024 * 1024  # tokenizer.json of a 256k-token vocabulary is ~20 MB


class ModelDirectory:
    """The files of one model directory, every access contained inside it."""

    def __init__(self, root: Path) -> None:
        try:
            self.root = Path(root).resolve(strict=True)
        except (OSError, RuntimeError):
            raise ConvertError("the model directory does not exist") from None
        if not self.root.is_dir():
            raise ConvertError("the model path is not a directory")
        self._files: list[SafetensorsFile] = []

    # -- paths -------------------------------------------------------------------------------------------------

    def resolve(self, relative: str) -> Path | None:
        """The real path of ``relative`` inside the directory, or None when no such file exists.

        Raises for names that are absolute, climb out with ``..``, or resolve (through symlinks) outside the
        directory, and for anything that is not a regular file.
        """
        if not relative or "\x00" in relative or "\\" in relative:
            raise ConvertError(f"invalid file name {relative[:80]!r}")
        pure = PurePosixPath(relative)
        if pure.is_absolute() or any(part in ("..", "") for part in pure.parts):
            raise ConvertError(f"invalid file name {relative[:80]!r}: it leaves the model directory")
        candidate = self.root.joinpath(*pure.parts)
        if not os.path.lexists(candidate):
            return None
        try:
            real = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            raise ConvertError(f"{relative[:80]}: broken or looping symlink") from None
        if not real.is_relative_to(self.root):
            raise ConvertError(f"{relative[:80]}: points outside the model directory")
        try:
            mode = os.stat(real).st_mode
        except OSError:
            return None
        if stat.S_ISDIR(mode):
            return None
        if not stat.S_ISREG(mode):
            raise ConvertError(f"{relative[:80]}: not a regular file")
        return real

    def exists(self, relative: str) -> bool:
        return self.resolve(relative) is not None

    def read_bytes(self, relative: str, limit: int = MAX_JSON_BYTES) -> bytes | None:
        path = self.resolve(relative)
        if path is None:
            return None
        try:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
        except OSError as exc:
            raise ConvertError(f"{relative}: cannot read ({exc.strerror or type(exc).__name__})") from None
        if len(data) > limit:
            raise ConvertError(f"{relative}: too large")
        return data

    def read_json(self, relative: str, required: bool = False) -> Any:
        data = self.read_bytes(relative)
        if data is None:
            if required:
                raise ConvertError(f"{relative} is missing from the model directory")
            return None
        try:
            return json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise ConvertError(f"{relative}: not valid JSON") from None

    def read_json_object(self, relative: str, required: bool = False) -> dict[str, Any] | None:
        value = self.read_json(relative, required)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ConvertError(f"{relative}: expected a JSON object")
        return value

    # -- weights -----------------------------------------------------------------------------------------------

    def weight_file_names(self) -> list[str]:
        """The safetensors files that hold the weights, as Ollama and llama.cpp pick them.

        The shard index when there is one; otherwise ``model*.safetensors`` (so a stray ``consolidated``
        copy next to the shards is not read twice), otherwise every top-level ``*.safetensors``.
        """
        index = self.read_json_object("model.safetensors.index.json")
        if index is not None:
            weight_map = index.get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ConvertError("model.safetensors.index.json: missing or empty weight_map")
            names: list[str] = []
            for value in weight_map.values():
                if not isinstance(value, str):
                    raise ConvertError("model.safetensors.index.json: weight_map values must be file names")
                if value not in names:
                    names.append(value)
            for name in names:
                if "/" in name or not name.endswith(".safetensors"):
                    raise ConvertError(f"model.safetensors.index.json: invalid shard name {name[:80]!r}")
            return names
        try:
            listing = sorted(entry.name for entry in os.scandir(self.root))
        except OSError as exc:
            raise ConvertError(f"cannot list the model directory ({exc.strerror})") from None
        shards = [n for n in listing if n.endswith(".safetensors")]
        preferred = [n for n in shards if n.startswith("model")]
        names = preferred or shards
        if not names:
            raise ConvertError("no .safetensors files in the model directory")
        return names

    def open_weights(self) -> dict[str, TensorEntry]:
        """Every tensor of every weight file, by name; a name in two files is an error."""
        tensors: dict[str, TensorEntry] = {}
        for name in self.weight_file_names():
            path = self.resolve(name)
            if path is None:
                raise ConvertError(f"{name} is missing from the model directory")
            shard = SafetensorsFile(path, name)
            self._files.append(shard)
            for tensor_name, entry in shard.entries.items():
                if tensor_name in tensors:
                    raise ConvertError(f"tensor {tensor_name[:120]!r} appears in more than one file")
                tensors[tensor_name] = entry
        index = self.read_json_object("model.safetensors.index.json")
        if index is not None:
            missing = [n for n in index.get("weight_map", {}) if n not in tensors]
            if missing:
                raise ConvertError(f"tensor {missing[0][:120]!r} is listed in the index but not in its file")
        return tensors

    def close(self) -> None:
        for f in self._files:
            f.close()
        self._files.clear()

    def iter_existing(self, names: list[str]) -> Iterator[tuple[str, bytes]]:
        """(name, content) of the named small files that exist, each checked like any other path."""
        for name in names:
            data = self.read_bytes(name)
            if data is not None:
                yield name, data
