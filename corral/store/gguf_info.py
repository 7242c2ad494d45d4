"""GGUF metadata for /api/show, /api/tags and create: the key-value header and tensor table, never the weights.

The file is memory-mapped and only its header is touched. The reader is a small bounded parser built on the
``gguf`` package's format constants rather than ``gguf.GGUFReader``, for two measured reasons: GGUFReader loops
without end on a 49-byte file that declares a 2**40-element array (the same family of bug as CVE-2025-0315), and it
materialises every vocabulary entry as a numpy view (2 s for SmolLM2-135M's header, against tens of milliseconds
here). Every count is checked against the bytes that remain before anything is iterated, and every tensor must lie
inside the file, so a corrupt, truncated or hostile file raises :class:`InvalidGGUF` quickly and never anything else.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from corral.errors import InvalidGGUF
from corral.humanize import human_number

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_KEY_LENGTH = 65535
EAGER_ARRAY_LIMIT = 4096  # arrays longer than this are decoded only when asked for (verbose model_info)
RANK_POOLING = 4  # llama_pooling_type LLAMA_POOLING_TYPE_RANK: a reranker
_INT64_MAX = 2**63 - 1

# Ollama's FileType names (fs/ggml/type.go), with the i-quant names older Ollama releases printed.
FILE_TYPE_NAMES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    4: "MXFP4",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4",
}

_SCALAR_FORMATS: dict[int, str] = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}
_NUMPY_TYPES: dict[int, str] = {
    GGUFValueType.UINT8: "u1",
    GGUFValueType.INT8: "i1",
    GGUFValueType.UINT16: "u2",
    GGUFValueType.INT16: "i2",
    GGUFValueType.UINT32: "u4",
    GGUFValueType.INT32: "i4",
    GGUFValueType.FLOAT32: "f4",
    GGUFValueType.BOOL: "u1",
    GGUFValueType.UINT64: "u8",
    GGUFValueType.INT64: "i8",
    GGUFValueType.FLOAT64: "f8",
}


def file_type_name(value: int | None) -> str:
    """Ollama's quantization name for ``general.file_type``; "unknown" when missing or not a known type."""
    if value is None:
        return "unknown"
    return FILE_TYPE_NAMES.get(value, "unknown")


def tensor_type_name(kind: int) -> str:
    if kind == 4:  # Ollama reads the retired Q4_2 slot as MXFP4
        return "MXFP4"
    try:
        return GGMLQuantizationType(kind).name
    except ValueError:
        return "unknown"


def _f32(value: float) -> float:
    """The shortest decimal that round-trips as float32, as Go prints a float32 (1e-05, not 9.99999974e-06)."""
    return float(str(np.float32(value)))


@dataclass(frozen=True)
class _LazyArray:
    """An array left in the file: its element type, length and where its first element starts."""

    item_type: int
    count: int
    offset: int


@dataclass(frozen=True)
class TensorInfo:
    name: str
    kind: int
    shape: tuple[int, ...]
    n_elements: int
    n_bytes: int | None
    offset: int  # absolute file offset of the tensor data

    @property
    def type(self) -> str:
        return tensor_type_name(self.kind)

    def to_dict(self) -> dict[str, Any]:
        """Ollama's /api/show tensor entry."""
        return {"name": self.name, "type": self.type, "shape": list(self.shape)}


class _Cursor:
    """Bounds-checked reads over the mapped header; running off the end is a truncated file."""

    def __init__(self, buf: mmap.mmap, size: int, order: str) -> None:
        self.buf = buf
        self.size = size
        self.order = order
        self.pos = 0

    def remaining(self) -> int:
        return self.size - self.pos

    def need(self, n: int, what: str) -> None:
        if n < 0 or n > self.size - self.pos:
            raise InvalidGGUF(f"the file is truncated or corrupt: {what} runs past the end of the file")

    def unpack(self, fmt: str, what: str) -> Any:
        n = struct.calcsize(fmt)
        self.need(n, what)
        (value,) = struct.unpack_from(self.order + fmt, self.buf, self.pos)
        self.pos += n
        return value

    def u32(self, what: str) -> int:
        return int(self.unpack("I", what))

    def u64(self, what: str) -> int:
        return int(self.unpack("Q", what))

    def raw_string(self, what: str, limit: int | None = None) -> bytes:
        length = self.u64(what)
        if limit is not None and length > limit:
            raise InvalidGGUF(f"the file is corrupt: {what} is {length} bytes long")
        self.need(length, what)
        data = self.buf[self.pos : self.pos + length]
        self.pos += length
        return data

    def string(self, what: str, limit: int | None = None) -> str:
        # Go keeps invalid UTF-8 and its JSON encoder writes U+FFFD; "replace" gives the same text.
        return self.raw_string(what, limit).decode("utf-8", "replace")


def _skip_strings(buf: mmap.mmap, size: int, order: str, pos: int, count: int, key: str) -> int:
    """Walk ``count`` length-prefixed strings from ``pos``; returns the position after them (the hot loop)."""
    length_at = struct.Struct(order + "Q").unpack_from
    for _ in range(count):
        if pos + 8 > size:
            raise InvalidGGUF(f"the file is truncated or corrupt: an element of {key!r} runs past the end of the file")
        (length,) = length_at(buf, pos)
        pos += 8 + length
        if pos > size:
            raise InvalidGGUF(f"the file is truncated or corrupt: an element of {key!r} runs past the end of the file")
    return pos


def _read_array(cur: _Cursor, key: str) -> list[Any] | _LazyArray:
    item_type = cur.u32(f"the element type of {key!r}")
    count = cur.u64(f"the length of {key!r}")
    if item_type == GGUFValueType.ARRAY:
        raise InvalidGGUF(f"the file is corrupt: {key!r} is an array of arrays, which GGUF models do not use")
    if item_type == GGUFValueType.STRING:
        if count > cur.remaining() // 8:
            raise InvalidGGUF(f"the file is corrupt: {key!r} claims {count} strings, more than the file can hold")
        start = cur.pos
        if count <= EAGER_ARRAY_LIMIT:
            return [cur.string(f"an element of {key!r}") for _ in range(count)]
        cur.pos = _skip_strings(cur.buf, cur.size, cur.order, start, count, key)
        return _LazyArray(item_type, count, start)
    fmt = _SCALAR_FORMATS.get(item_type)
    if fmt is None:
        raise InvalidGGUF(f"the file is corrupt: {key!r} has unknown element type {item_type}")
    width = struct.calcsize(fmt)
    if count > cur.remaining() // width:
        raise InvalidGGUF(f"the file is truncated or corrupt: {key!r} claims {count} elements past the end of the file")
    start = cur.pos
    cur.pos += count * width
    if count > EAGER_ARRAY_LIMIT:
        return _LazyArray(item_type, count, start)
    values = list(struct.unpack_from(f"{cur.order}{count}{fmt}", cur.buf, start))
    if item_type == GGUFValueType.FLOAT32:
        values = [_f32(v) for v in values]
    return values


def _read_value(cur: _Cursor, key: str, value_type: int) -> Any:
    if value_type == GGUFValueType.STRING:
        return cur.string(f"the value of {key!r}")
    if value_type == GGUFValueType.ARRAY:
        return _read_array(cur, key)
    fmt = _SCALAR_FORMATS.get(value_type)
    if fmt is None:
        raise InvalidGGUF(f"the file is corrupt: {key!r} has unknown value type {value_type}")
    value = cur.unpack(fmt, f"the value of {key!r}")
    if value_type == GGUFValueType.FLOAT32:
        return _f32(value)
    if value_type == GGUFValueType.BOOL:
        return bool(value)
    return value


def _decode_lazy(buf: mmap.mmap, order: str, arr: _LazyArray) -> list[Any]:
    if arr.item_type == GGUFValueType.STRING:
        cur = _Cursor(buf, len(buf), order)
        cur.pos = arr.offset
        return [cur.string("an array element") for _ in range(arr.count)]
    dtype = np.dtype(order + _NUMPY_TYPES[arr.item_type])
    # Copy the bytes out so no numpy view pins the mapping when it is closed.
    raw = buf[arr.offset : arr.offset + arr.count * dtype.itemsize]
    data = np.frombuffer(raw, dtype=dtype, count=arr.count)
    if arr.item_type == GGUFValueType.FLOAT32:
        return [float(s) for s in data.astype(str)]
    if arr.item_type == GGUFValueType.BOOL:
        return [bool(v) for v in data.tolist()]
    return list(data.tolist())


def _string_at(buf: mmap.mmap, order: str, arr: _LazyArray, index: int) -> str | None:
    """One element of a string array left in the file (walks the length prefixes up to it)."""
    if not 0 <= index < arr.count:
        return None
    cur = _Cursor(buf, len(buf), order)
    cur.pos = _skip_strings(buf, len(buf), order, arr.offset, index, "tokenizer.ggml.tokens")
    return cur.string("an array element")


def _short(text: str, limit: int = 80) -> str:
    """Keys and names quoted in error messages are cut short; a hostile file can make them 64 KiB long."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _int_or_max(value: Any) -> int:
    """Head counts are a number or one number per layer; estimates want the largest."""
    if isinstance(value, list):
        ints = [v for v in (_as_int(x) for x in value) if v is not None]
        return max(ints) if ints else 0
    return _as_int(value) or 0


@dataclass
class GGUFInfo:
    """What Corral needs to know about a GGUF file, read from its header."""

    path: Path
    version: int
    byte_order: str
    metadata: dict[str, Any]
    tensor_infos: list[TensorInfo]
    data_offset: int
    bos_token: str | None = None
    eos_token: str | None = None
    eot_token: str | None = None
    _arrays: dict[str, list[Any]] = field(default_factory=dict, repr=False)

    # --- the fields /api/tags, /api/show and create read ----------------------------------------------------

    @property
    def architecture(self) -> str:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) and value else "unknown"

    def _arch(self, key: str) -> Any:
        return self.metadata.get(f"{self.architecture}.{key}")

    @property
    def file_type(self) -> str:
        return file_type_name(_as_int(self.metadata.get("general.file_type")))

    @property
    def parameter_count(self) -> int:
        """Sum of the tensors' element counts, which Ollama reports in place of the file's own count."""
        return sum(t.n_elements for t in self.tensor_infos)

    @property
    def parameter_size(self) -> str:
        return human_number(self.parameter_count)

    @property
    def context_length(self) -> int:
        return _as_int(self._arch("context_length")) or 0

    @property
    def embedding_length(self) -> int:
        return _as_int(self._arch("embedding_length")) or 0

    @property
    def block_count(self) -> int:
        return _as_int(self._arch("block_count")) or 0

    @property
    def head_count(self) -> int:
        return _int_or_max(self._arch("attention.head_count"))

    @property
    def head_count_kv(self) -> int:
        return _int_or_max(self._arch("attention.head_count_kv"))

    @property
    def chat_template(self) -> str:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) else ""

    @property
    def pooling_type(self) -> int | None:
        return _as_int(self._arch("pooling_type"))

    @property
    def is_embedding(self) -> bool:
        """Ollama's rule: a ``<arch>.pooling_type`` key makes it an embedding model, otherwise completion."""
        return f"{self.architecture}.pooling_type" in self.metadata

    @property
    def is_reranker(self) -> bool:
        """A cross-encoder that scores (query, document) pairs: llama.cpp's converters mark these with pooling type
        RANK (4); a sequence-classification head (``cls.output.weight``) on a pooled encoder says the same."""
        if self.pooling_type == RANK_POOLING:
            return True
        return self.is_embedding and any(t.name == "cls.output.weight" for t in self.tensor_infos)

    @property
    def has_vision(self) -> bool:
        return f"{self.architecture}.vision.block_count" in self.metadata

    @property
    def has_audio(self) -> bool:
        return f"{self.architecture}.audio.block_count" in self.metadata

    # --- raw access ----------------------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """A metadata value; long arrays are read from the file on first use."""
        if key not in self.metadata:
            return default
        value = self.metadata[key]
        if isinstance(value, _LazyArray):
            return self._load_array(key, value)
        return value

    def array_length(self, key: str) -> int | None:
        value = self.metadata.get(key)
        if isinstance(value, _LazyArray):
            return value.count
        if isinstance(value, list):
            return len(value)
        return None

    def _load_array(self, key: str, arr: _LazyArray) -> list[Any]:
        cached = self._arrays.get(key)
        if cached is None:
            cached = _with_map(self.path, lambda buf, _size: _decode_lazy(buf, self.byte_order, arr))
            self._arrays[key] = cached
        return cached

    def model_info(self, verbose: bool = False) -> dict[str, Any]:
        """The KV map as Ollama's /api/show returns it.

        ``general.name`` and ``tokenizer.chat_template`` are left out, ``general.parameter_count`` is the tensor
        element sum, keys are sorted (Go marshals maps sorted) and, unless ``verbose``, arrays longer than 5
        elements become ``[]``.
        """
        out: dict[str, Any] = {}
        for key in sorted(self.metadata):
            if key in ("general.name", "tokenizer.chat_template"):
                continue
            value = self.metadata[key]
            length = self.array_length(key)
            if length is not None:
                value = [] if not verbose and length > 5 else list(self.get(key))
            out[key] = value
        out["general.parameter_count"] = self.parameter_count
        return dict(sorted(out.items()))

    def tensors(self) -> list[dict[str, Any]]:
        """Ollama's /api/show ``tensors``: ``[{name, type, shape}]`` in file order."""
        return [t.to_dict() for t in self.tensor_infos]


def _with_map(path: Path, fn: Callable[[mmap.mmap, int], Any]) -> Any:
    """Open ``path`` read-only as a regular file, map it and run ``fn``; OS errors become InvalidGGUF."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidGGUF("the model file is not a regular file")
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 24:
                raise InvalidGGUF(f"the file is too small to be a GGUF model ({size} bytes)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return fn(buf, size)
    except InvalidGGUF:
        raise
    except OSError as exc:
        raise InvalidGGUF(f"cannot read the model file: {exc.strerror or exc.__class__.__name__}") from None
    except Exception as exc:  # the contract: a bad file is InvalidGGUF, whatever the parser tripped on
        raise InvalidGGUF(f"the file is corrupt: {exc.__class__.__name__}: {exc}") from None


def _parse(path: Path, buf: mmap.mmap, size: int) -> GGUFInfo:
    if buf[:4] != GGUF_MAGIC:
        raise InvalidGGUF("not a GGUF file (bad magic)")
    (version,) = struct.unpack_from("<I", buf, 4)
    order = "<"
    if version & 0xFFFF == 0 and version:
        order = ">"  # written on a big-endian machine: the magic stays "GGUF", the numbers are swapped
        (version,) = struct.unpack_from(">I", buf, 4)
    if version not in SUPPORTED_VERSIONS:
        raise InvalidGGUF(f"unsupported GGUF version {version}")
    cur = _Cursor(buf, size, order)
    cur.pos = 8
    tensor_count = cur.u64("the tensor count")
    kv_count = cur.u64("the metadata count")
    # Each entry needs at least 13 (KV) / 24 (tensor) bytes; refuse impossible counts before looping.
    if kv_count > cur.remaining() // 13:
        raise InvalidGGUF(f"the file is corrupt: it claims {kv_count} metadata entries, more than it can hold")

    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = cur.string("a metadata key", limit=MAX_KEY_LENGTH)
        label = _short(key)
        value_type = cur.u32(f"the type of {label!r}")
        value = _read_value(cur, label, value_type)
        if key in metadata:
            raise InvalidGGUF(f"the file is corrupt: metadata key {label!r} appears twice")
        metadata[key] = value

    if tensor_count > cur.remaining() // 24:
        raise InvalidGGUF(f"the file is corrupt: it claims {tensor_count} tensors, more than it can hold")
    raw_tensors: list[tuple[str, int, tuple[int, ...], int]] = []
    names: set[str] = set()
    for _ in range(tensor_count):
        name = cur.string("a tensor name", limit=MAX_KEY_LENGTH)
        label = _short(name)
        n_dims = cur.u32(f"the dimension count of tensor {label!r}")
        if n_dims > MAX_DIMS:
            raise InvalidGGUF(f"the file is corrupt: tensor {label!r} has {n_dims} dimensions (at most {MAX_DIMS})")
        shape = tuple(cur.u64(f"the shape of tensor {label!r}") for _ in range(n_dims))
        kind = cur.u32(f"the type of tensor {label!r}")
        offset = cur.u64(f"the offset of tensor {label!r}")
        if name in names:
            raise InvalidGGUF(f"the file is corrupt: tensor {label!r} appears twice")
        names.add(name)
        raw_tensors.append((name, kind, shape, offset))

    alignment = metadata.get("general.alignment", 32)
    if isinstance(alignment, bool) or not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise InvalidGGUF("the file is corrupt: general.alignment is not a power of two")
    data_offset = cur.pos + (-cur.pos % alignment)

    tensors: list[TensorInfo] = []
    for name, kind, shape, offset in raw_tensors:
        n_elements = 1
        for dim in shape:
            n_elements *= dim
        if any(dim > _INT64_MAX for dim in shape) or n_elements > _INT64_MAX:
            raise InvalidGGUF(f"the file is corrupt: tensor {_short(name)!r} has an impossible shape {list(shape)}")
        n_bytes: int | None = None
        try:
            block_size, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
        except (ValueError, KeyError):
            block_size = type_size = 0  # a type newer than this gguf package: size unknown, skip the checks
        if block_size:
            if shape and shape[0] % block_size:
                raise InvalidGGUF(f"the file is corrupt: tensor {_short(name)!r} rows are not a whole number of blocks")
            n_bytes = n_elements // block_size * type_size
            if offset % alignment:
                raise InvalidGGUF(f"the file is corrupt: tensor {_short(name)!r} is not aligned")
            if data_offset + offset + n_bytes > size:
                raise InvalidGGUF(f"the file is truncated: tensor {_short(name)!r} extends past the end of the file")
        tensors.append(TensorInfo(name, kind, shape, n_elements, n_bytes, data_offset + offset))

    info = GGUFInfo(
        path=path, version=version, byte_order=order, metadata=metadata, tensor_infos=tensors, data_offset=data_offset
    )
    tokens = metadata.get("tokenizer.ggml.tokens")
    for attr, id_key in (
        ("bos_token", "tokenizer.ggml.bos_token_id"),
        ("eos_token", "tokenizer.ggml.eos_token_id"),
        ("eot_token", "tokenizer.ggml.eot_token_id"),
    ):
        token_id = _as_int(metadata.get(id_key))
        if token_id is None or tokens is None:
            continue
        if isinstance(tokens, _LazyArray):
            token = _string_at(buf, order, tokens, token_id)
        elif isinstance(tokens, list) and 0 <= token_id < len(tokens) and isinstance(tokens[token_id], str):
            token = tokens[token_id]
        else:
            token = None
        setattr(info, attr, token)
    return info


def read_gguf_info(path: str | os.PathLike[str]) -> GGUFInfo:
    """Read a GGUF file's metadata and tensor table; raises :class:`InvalidGGUF` for anything unreadable."""
    p = Path(path)
    result: GGUFInfo = _with_map(p, lambda buf, size: _parse(p, buf, size))
    return result
