"""A small, bounds-checked reader for the safetensors format.

Why not the ``safetensors`` package: its numpy loader has no bfloat16 (the most common dtype of published
checkpoints), and the format is simple enough (an 8-byte little-endian header length, a JSON header, then raw
little-endian tensor bytes) that checking every offset ourselves is easier than trusting a hostile file to a
parser. Each tensor is read on its own when it is needed, so a conversion holds one tensor in memory at a time. Reads,
not a memory map: a mapped file's pages count in the process's resident set as they are touched, which made a
conversion's peak RSS grow by the whole file (MiniLM's 91 MB at the server's first start), and a file truncated
while mapped would kill the process with SIGBUS instead of raising an error.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from corral.errors import ConvertError

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the reference implementation refuses headers over 100 MB too

# safetensors dtype -> (numpy dtype, bytes per element); BF16 is read as raw uint16 and widened by hand.
_DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("<f8", 8),
    "F32": ("<f4", 4),
    "F16": ("<f2", 2),
    "BF16": ("<u2", 2),
    "I64": ("<i8", 8),
    "I32": ("<i4", 4),
    "I16": ("<i2", 2),
    "I8": ("i1", 1),
    "U8": ("u1", 1),
    "BOOL": ("u1", 1),
}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives: its file, dtype, shape and byte range inside the file."""

    name: str
    file: SafetensorsFile
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute file offsets
    end: int

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    def raw(self) -> npt.NDArray[Any]:
        """The tensor as stored (BF16 as uint16), read into memory of its own."""
        np_dtype, _ = _DTYPES[self.dtype]
        data = self.file.read(self.start, self.end)
        return data.view(np.dtype(np_dtype)).reshape(self.shape)

    def to_float32(self, raw: npt.NDArray[Any] | None = None) -> npt.NDArray[np.float32]:
        """The tensor as float32, whatever its stored float dtype; ``raw`` saves a second read of it."""
        if self.dtype not in FLOAT_DTYPES:
            raise ConvertError(f"tensor {self.name!r} has dtype {self.dtype}, expected a floating-point type")
        if raw is None:
            raw = self.raw()
        if self.dtype == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32)
        return raw.astype(np.float32, copy=False)


class SafetensorsFile:
    """One ``.safetensors`` file: its parsed, validated header, and reads of its tensors' bytes."""

    def __init__(self, path: Path, label: str) -> None:
        self.path = path
        self.label = label  # the name used in error messages (never an absolute path)
        self._fd: int | None = None
        self.entries: dict[str, TensorEntry] = {}
        self.metadata: dict[str, str] = {}
        self._parse()

    def read(self, start: int, end: int) -> npt.NDArray[np.uint8]:
        """Bytes ``start:end`` of the file (offsets already checked against its size when the header was parsed)."""
        out = np.empty(end - start, dtype=np.uint8)
        view = out.data
        done = 0
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY)  # not inherited by children (PEP 446)
            while done < len(view):
                n = os.preadv(self._fd, [view[done:]], start + done)
                if n == 0:
                    raise ConvertError(f"{self.label}: file shrank while it was being read")
                done += n
        except OSError as exc:
            raise ConvertError(f"{self.label}: cannot read ({exc.strerror or type(exc).__name__})") from None
        return out

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _parse(self) -> None:
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, 2)
                f.seek(0)
                prefix = f.read(8)
                if len(prefix) < 8:
                    raise ConvertError(f"{self.label}: not a safetensors file (too short)")
                (header_len,) = struct.unpack("<Q", prefix)
                if header_len > min(MAX_HEADER_BYTES, size - 8):
                    raise ConvertError(f"{self.label}: corrupt safetensors header (length {header_len})")
                header_bytes = f.read(header_len)
        except OSError as exc:
            raise ConvertError(f"{self.label}: cannot read ({exc.strerror or type(exc).__name__})") from None
        try:
            header = json.loads(header_bytes)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise ConvertError(f"{self.label}: corrupt safetensors header (not JSON)") from None
        if not isinstance(header, dict):
            raise ConvertError(f"{self.label}: corrupt safetensors header (not an object)")
        data_start = 8 + header_len
        data_size = size - data_start
        for name, spec in header.items():
            if name == "__metadata__":
                if isinstance(spec, dict):
                    self.metadata = {str(k): str(v) for k, v in spec.items()}
                continue
            self.entries[name] = self._entry(name, spec, data_start, data_size)

    def _entry(self, name: str, spec: Any, data_start: int, data_size: int) -> TensorEntry:
        label = f"{self.label}: tensor {name[:120]!r}"
        if not isinstance(spec, dict):
            raise ConvertError(f"{label}: corrupt header entry")
        dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in _DTYPES:
            raise ConvertError(f"{label}: unsupported dtype {str(dtype)[:20]!r}")
        if (
            not isinstance(shape, list)
            or len(shape) > 8
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        ):
            raise ConvertError(f"{label}: corrupt shape")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        ):
            raise ConvertError(f"{label}: corrupt data offsets")
        begin, end = offsets
        if not 0 <= begin <= end <= data_size:
            raise ConvertError(f"{label}: data lies outside the file")
        if end - begin != math.prod(shape) * _DTYPES[dtype][1]:
            raise ConvertError(f"{label}: data size does not match its shape {shape}")
        return TensorEntry(name, self, dtype, tuple(shape), data_start + begin, data_start + end)
