"""Requantize an F32/F16/BF16 GGUF to the types Ollama's ``create --quantize`` offers.

Which tensors get which type follows llama.cpp's ``llama_tensor_get_type``: only 2-D+ weights are quantized (not
norms, position or token-type embeddings), the output matrix (or the token embedding when it doubles as the
output) gets Q6_K, the "_M" mixes give some ``attn_v``/``ffn_down`` layers more bits, and a tensor whose rows are
not a whole number of blocks falls back to a compatible type or stays as it is. That plan and the file are Corral's;
the per-block work is the engine's own ``ggml_quantize_chunk`` (:mod:`corral.convert.ggml`), the code
llama-quantize runs, so the blocks are the ones llama.cpp would write.

The input is parsed by Corral's bounded GGUF reader (every count and tensor range checked against the file size,
CVE-2026-7482) and the metadata is copied byte for byte, so keys this code does not know survive unchanged. The
output is written to a temporary file, fsynced and renamed.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import re
import struct
import tempfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import gguf
import numpy as np
import numpy.typing as npt
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType, LlamaFileType

from corral.convert import ggml
from corral.convert.common import CallbackFailed, ProgressFn, publish, report
from corral.errors import ConvertError
from corral.store.gguf_info import GGUFInfo, TensorInfo, read_gguf_info

Q = GGMLQuantizationType
FT = LlamaFileType

# Ollama's names (case-insensitive) -> llama.cpp file type and its default tensor type.
FILE_TYPES: dict[str, tuple[LlamaFileType, GGMLQuantizationType]] = {
    "F32": (FT.ALL_F32, Q.F32),
    "F16": (FT.MOSTLY_F16, Q.F16),
    "BF16": (FT.MOSTLY_BF16, Q.BF16),
    "Q4_0": (FT.MOSTLY_Q4_0, Q.Q4_0),
    "Q4_1": (FT.MOSTLY_Q4_1, Q.Q4_1),
    "Q5_0": (FT.MOSTLY_Q5_0, Q.Q5_0),
    "Q5_1": (FT.MOSTLY_Q5_1, Q.Q5_1),
    "Q8_0": (FT.MOSTLY_Q8_0, Q.Q8_0),
    "Q2_K": (FT.MOSTLY_Q2_K, Q.Q2_K),
    "Q3_K_S": (FT.MOSTLY_Q3_K_S, Q.Q3_K),
    "Q3_K_M": (FT.MOSTLY_Q3_K_M, Q.Q3_K),
    "Q3_K_L": (FT.MOSTLY_Q3_K_L, Q.Q3_K),
    "Q4_K_S": (FT.MOSTLY_Q4_K_S, Q.Q4_K),
    "Q4_K_M": (FT.MOSTLY_Q4_K_M, Q.Q4_K),
    "Q5_K_S": (FT.MOSTLY_Q5_K_S, Q.Q5_K),
    "Q5_K_M": (FT.MOSTLY_Q5_K_M, Q.Q5_K),
    "Q6_K": (FT.MOSTLY_Q6_K, Q.Q6_K),
}
ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}  # llama-quantize's short names
SOURCE_TYPES = {FT.ALL_F32: "F32", FT.MOSTLY_F16: "F16", FT.MOSTLY_BF16: "BF16"}
_FLOAT_TENSORS = {Q.F32, Q.F16, Q.BF16}
_FALLBACK = {Q.Q2_K: Q.Q4_0, Q.Q3_K: Q.Q4_0, Q.Q4_K: Q.Q5_0, Q.Q5_K: Q.Q5_1, Q.Q6_K: Q.Q8_0}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.")
CHUNK_ELEMENTS = 1 << 19  # rows are quantized in chunks of about half a million weights (bounded temporaries)
# The engine's kernel runs with the GIL released (ctypes), as does numpy's float conversion, so chunks quantize side
# by side; each chunk in flight holds a 2 MB float32 copy and its output, and at most 2 per worker are in flight.
MAX_WORKERS = 8


def parse_quant_type(name: str) -> tuple[str, LlamaFileType, GGMLQuantizationType]:
    """The canonical name, file type and default tensor type for ``name`` (any case); ConvertError if unknown."""
    key = name.strip().upper()
    key = ALIASES.get(key, key)
    if key == "Q2_K_S":
        raise ConvertError("Q2_K_S needs an importance matrix, which Corral cannot compute; use Q2_K")
    if key not in FILE_TYPES:
        raise ConvertError(f"unsupported quantization type {name[:40]!r} (supported: {', '.join(FILE_TYPES)})")
    ftype, qtype = FILE_TYPES[key]
    return key, ftype, qtype


# -- which type each tensor gets (llama.cpp's llama_tensor_get_type) ---------------------------------------------


def allows_quantization(name: str, n_dims: int) -> bool:
    """llama.cpp's ``tensor_allows_quantization`` for the architectures a GGUF from here can hold."""
    if n_dims < 2 or not name.endswith("weight") or "_norm.weight" in name:
        return False
    excluded = ("ffn_gate_inp.weight", "altup", "laurel", "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight",
                "time_mix_", "attn_rel_b.weight", ".position_embd", ".patch_embd", ".rel_pos")
    if any(part in name for part in excluded):
        return False
    return name not in ("position_embd.weight", "token_types.weight")


def _category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    # Fused QKV and MLA's kv_b count as attn_v: llama.cpp's category_is_attn_v branch catches them first.
    for key, cat in (("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"), ("attn_v.weight", "attn_v"),
                     ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
                     ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):
        if key in name:
            return cat
    return "other"


def _use_more_bits(i_layer: int, n_layers: int) -> bool:
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


@dataclass
class _MixState:
    """What ``llama_tensor_get_type`` looks at besides the tensor: model shape and running counters."""

    arch: str
    n_layer: int
    n_gqa: int
    n_expert: int
    is_70b: bool
    n_attention_wv: int
    tied_embeddings: bool
    i_attention_wv: int = 0
    i_ffn_down: int = 0


def _mixed_type(st: _MixState, name: str, ne0: int, ftype: LlamaFileType, qtype: GGMLQuantizationType) -> Q:
    """The K-quant mixes: more bits where quantization hurts most (output, some attn_v and ffn_down layers)."""
    cat = _category(name)
    new = qtype
    if cat == "output" or (st.tied_embeddings and cat == "token_embd"):
        if st.arch == "falcon" or ne0 % GGML_QUANT_SIZES[new][0]:
            return Q.Q8_0
        return new if new == Q.Q8_0 else Q.Q6_K
    if cat == "attn_v":
        i, n = st.i_attention_wv, st.n_attention_wv
        if ftype == FT.MOSTLY_Q2_K:
            new = Q.Q4_K if st.n_gqa >= 4 else Q.Q3_K
        elif ftype == FT.MOSTLY_Q3_K_M:
            new = Q.Q5_K if i < 2 else Q.Q4_K
        elif ftype == FT.MOSTLY_Q3_K_L:
            new = Q.Q5_K
        elif ftype in (FT.MOSTLY_Q4_K_M, FT.MOSTLY_Q5_K_M) and _use_more_bits(i, n):
            new = Q.Q6_K
        elif ftype == FT.MOSTLY_Q4_K_S and i < 4:
            new = Q.Q5_K
        if st.is_70b and new in (Q.Q3_K, Q.Q4_K):
            new = Q.Q5_K
        if st.n_expert == 8:
            new = Q.Q8_0
        st.i_attention_wv += 1
        return new
    if cat == "attn_k" and st.n_expert == 8:
        return Q.Q8_0
    if cat == "ffn_down":
        m = _BLOCK_RE.match(name)
        i = int(m.group(1)) if m else st.i_ffn_down
        n = st.n_layer
        st.i_ffn_down += 1
        if ftype == FT.MOSTLY_Q2_K:
            return Q.Q3_K
        if ftype == FT.MOSTLY_Q3_K_M:
            return Q.Q5_K if i < n // 16 else Q.Q4_K if st.arch != "falcon" or _use_more_bits(i, n) else Q.Q3_K
        if ftype == FT.MOSTLY_Q3_K_L:
            return Q.Q4_K if st.arch == "falcon" else Q.Q5_K
        if ftype == FT.MOSTLY_Q4_K_M:
            if st.arch == "falcon":
                return Q.Q6_K if i < n // 16 else Q.Q5_K if _use_more_bits(i, n) else Q.Q4_K
            return Q.Q6_K if _use_more_bits(i, n) else new
        if ftype == FT.MOSTLY_Q5_K_M and _use_more_bits(i, n):
            return Q.Q6_K
        if ftype == FT.MOSTLY_Q4_K_S and st.arch != "falcon" and i < n // 8:
            return Q.Q5_K
        return new
    if cat == "attn_output":
        if st.arch != "falcon":
            if st.n_expert == 8:
                if ftype in (FT.MOSTLY_Q2_K, FT.MOSTLY_Q3_K_S, FT.MOSTLY_Q3_K_M, FT.MOSTLY_Q4_K_S, FT.MOSTLY_Q4_K_M):
                    return Q.Q5_K
            elif ftype == FT.MOSTLY_Q2_K:
                return Q.Q3_K
            elif ftype == FT.MOSTLY_Q3_K_M:
                return Q.Q4_K
            elif ftype == FT.MOSTLY_Q3_K_L:
                return Q.Q5_K
        elif ftype == FT.MOSTLY_Q3_K_L:
            return Q.Q4_K
        return new
    return new


def _fallback(qtype: GGMLQuantizationType, ne0: int, current: GGMLQuantizationType) -> GGMLQuantizationType:
    """llama.cpp's ``tensor_type_fallback``: rows that are not whole blocks get a smaller-block type or F16.

    Where llama.cpp has no fallback (the 32-weight legacy types) it gives up on the whole file; here that one
    tensor keeps its current F32/F16/BF16 type instead.
    """
    if ne0 % GGML_QUANT_SIZES[qtype][0] == 0:
        return qtype
    alt = _FALLBACK.get(qtype)
    if alt is None:
        return current
    if ne0 % GGML_QUANT_SIZES[alt][0] == 0:
        return alt
    return Q.F16


def _n_dims(shape: tuple[int, ...]) -> int:
    """``ggml_n_dims``: trailing dimensions of size 1 do not count."""
    n = len(shape)
    while n > 1 and shape[n - 1] == 1:
        n -= 1
    return max(n, 1)


def _layer_key(name: str) -> tuple[int, str]:
    """llama.cpp walks tensors ordered by layer number, then name; its counters depend on that order."""
    m = _BLOCK_RE.match(name)
    return (int(m.group(1)) if m else -1, name)


def _as_int(value: Any, default: int) -> int:
    if isinstance(value, list):
        ints = [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
        return max(ints) if ints else default
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def plan_types(info: GGUFInfo, ftype: LlamaFileType, qtype: GGMLQuantizationType) -> dict[str, GGMLQuantizationType]:
    """The output type of every tensor of ``info`` for file type ``ftype`` (default tensor type ``qtype``)."""
    arch = info.architecture
    n_head = info.head_count
    n_head_kv = info.head_count_kv or n_head
    names = [t.name for t in info.tensor_infos]
    state = _MixState(
        arch=arch,
        n_layer=info.block_count or 1,
        n_gqa=n_head // n_head_kv if n_head and n_head_kv else 1,
        n_expert=_as_int(info.metadata.get(f"{arch}.expert_count"), 0),
        is_70b=arch == "llama" and info.block_count == 80 and n_head != n_head_kv,
        n_attention_wv=sum(1 for n in names if _category(n) == "attn_v"),
        tied_embeddings="output.weight" not in names,
    )
    types: dict[str, GGMLQuantizationType] = {}
    for t in sorted(info.tensor_infos, key=lambda t: _layer_key(t.name)):
        current = Q(t.kind)
        if current not in _FLOAT_TENSORS or not allows_quantization(t.name, _n_dims(t.shape)):
            types[t.name] = current
            continue
        ne0 = t.shape[0] if t.shape else 1
        if qtype in _FLOAT_TENSORS:  # a float target: no mixes, no block constraints
            types[t.name] = qtype
            continue
        new = _mixed_type(state, t.name, ne0, ftype, qtype)
        types[t.name] = _fallback(new, ne0, current)
    return types


# -- tensor data -----------------------------------------------------------------------------------------------


def _as_float32(raw: npt.NDArray[np.uint8], kind: GGMLQuantizationType, rows: int, cols: int) -> npt.NDArray[Any]:
    if kind == Q.F32:
        return raw.view("<f4").reshape(rows, cols)
    if kind == Q.F16:
        return raw.view("<f2").reshape(rows, cols).astype(np.float32)
    return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(rows, cols)


def quantize_rows(rows: npt.NDArray[np.float32], qtype: GGMLQuantizationType) -> npt.NDArray[Any]:
    """Quantize a float32 ``(n_rows, n_cols)`` array to ``qtype``'s bytes (rows must be whole blocks)."""
    if qtype == Q.F32:
        return np.ascontiguousarray(rows, dtype=np.float32)
    return ggml.quantize_rows(rows, qtype)


def _chunks(n_rows: int, n_cols: int) -> Iterator[tuple[int, int]]:
    step = max(1, CHUNK_ELEMENTS // max(1, n_cols))
    for start in range(0, n_rows, step):
        yield start, min(n_rows, start + step)


def _tensor_bytes(shape: tuple[int, ...], qtype: GGMLQuantizationType) -> int:
    block, size = GGML_QUANT_SIZES[qtype]
    return math.prod(shape) // block * size


# -- the file ------------------------------------------------------------------------------------------------------


def _kv_spans(path: Path, count: int) -> tuple[list[tuple[str, bytes]], int]:
    """Each metadata entry as (key, its raw bytes), walked with bounds checks; and where the tensor table starts."""
    scalar = {GGUFValueType.UINT8: 1, GGUFValueType.INT8: 1, GGUFValueType.UINT16: 2, GGUFValueType.INT16: 2,
              GGUFValueType.UINT32: 4, GGUFValueType.INT32: 4, GGUFValueType.FLOAT32: 4, GGUFValueType.BOOL: 1,
              GGUFValueType.UINT64: 8, GGUFValueType.INT64: 8, GGUFValueType.FLOAT64: 8}
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            pos = 24

            def take(n: int) -> int:
                nonlocal pos
                if n < 0 or pos + n > size:
                    raise ConvertError("the GGUF file is truncated or corrupt")
                start = pos
                pos += n
                return start

            def u64() -> int:
                return int(struct.unpack_from("<Q", buf, take(8))[0])

            def u32() -> int:
                return int(struct.unpack_from("<I", buf, take(4))[0])

            spans: list[tuple[str, bytes]] = []
            for _ in range(count):
                start = pos
                key_len = u64()
                key_at = take(key_len)
                key = bytes(buf[key_at : key_at + key_len]).decode("utf-8", "replace")
                vtype = u32()
                if vtype == GGUFValueType.STRING:
                    take(u64())
                elif vtype == GGUFValueType.ARRAY:
                    itype, n = u32(), u64()
                    if itype == GGUFValueType.STRING:
                        for _ in range(n):
                            take(u64())
                    elif itype in scalar:
                        take(scalar[GGUFValueType(itype)] * n)
                    else:
                        raise ConvertError(f"the GGUF file is corrupt: unsupported array type in {key[:80]!r}")
                elif vtype in scalar:
                    take(scalar[GGUFValueType(vtype)])
                else:
                    raise ConvertError(f"the GGUF file is corrupt: unknown value type in {key[:80]!r}")
                spans.append((key, bytes(buf[start:pos])))
            return spans, pos


def _pack_string(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def _pack_u32_kv(key: str, value: int) -> bytes:
    return _pack_string(key) + struct.pack("<II", GGUFValueType.UINT32, value)


def _pad(f: BinaryIO, alignment: int) -> None:
    pad = -f.tell() % alignment
    if pad:
        f.write(b"\x00" * pad)


def _source_file_type(info: GGUFInfo) -> str:
    """The source's type name, refusing anything already quantized (Ollama's rule)."""
    value = info.metadata.get("general.file_type")
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            name = SOURCE_TYPES.get(LlamaFileType(value))
        except ValueError:
            name = None
    else:  # no file type recorded: judge by the tensors
        kinds = {t.kind for t in info.tensor_infos}
        if kinds <= {Q.F32}:
            name = "F32"
        elif kinds <= {Q.F32, Q.F16}:
            name = "F16"
        elif kinds <= {Q.F32, Q.BF16}:
            name = "BF16"
        else:
            name = None
    if name is None:
        raise ConvertError("quantization is only supported for F16, BF16 and F32 models")
    return name


def quantize_gguf(src: Path, dst: Path, qtype: str, progress: ProgressFn | None = None) -> None:
    """Requantize the F32/F16/BF16 GGUF ``src`` to ``qtype`` (e.g. ``q4_K_M``, any case) into ``dst``, atomically.

    ``progress("quantizing F16 model to Q4_K_M", done, total)`` is called before the first and after every tensor.
    Raises :class:`ConvertError` (a ``ValueError``) for an unknown type, a quantized or unreadable source, and I/O
    failures; ``dst`` is then left alone.
    """
    name, ftype, default_type = parse_quant_type(qtype)
    src, dst = Path(src), Path(dst)
    tmp: Path | None = None
    try:
        info = read_gguf_info(src)  # InvalidGGUF is a ValueError: every size and offset is already checked
        if info.byte_order != "<":
            raise ConvertError("big-endian GGUF files cannot be quantized")
        status = f"quantizing {_source_file_type(info)} model to {name}"
        for t in info.tensor_infos:
            if t.n_bytes is None:
                raise ConvertError(f"tensor {t.name[:80]!r} has an unknown type")
        types = plan_types(info, ftype, default_type)
        alignment = _as_int(info.metadata.get("general.alignment"), 32)
        spans, _ = _kv_spans(src, len(info.metadata))  # the reader refuses duplicate keys: one entry per key
        kv = [(k, raw) for k, raw in spans if k not in ("general.file_type", "general.quantization_version")]
        kv.append(("general.quantization_version", _pack_u32_kv("general.quantization_version",
                                                                 gguf.GGML_QUANT_VERSION)))
        kv.append(("general.file_type", _pack_u32_kv("general.file_type", int(ftype))))

        fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
        tmp = Path(tmp_name)
        workers = min(MAX_WORKERS, os.cpu_count() or 1)
        with os.fdopen(fd, "wb") as out, _SourceMap(src) as source, ThreadPoolExecutor(max_workers=workers) as pool:
            out.write(struct.pack("<4sIQQ", b"GGUF", 3, len(info.tensor_infos), len(kv)))
            for _, raw in kv:
                out.write(raw)
            offset = 0
            for t in info.tensor_infos:
                out.write(_pack_string(t.name))
                out.write(struct.pack("<I", len(t.shape)))
                out.write(struct.pack(f"<{len(t.shape)}Q", *t.shape))
                out.write(struct.pack("<IQ", int(types[t.name]), offset))
                offset += _tensor_bytes(t.shape, types[t.name]) + (-_tensor_bytes(t.shape, types[t.name]) % alignment)
            total = len(info.tensor_infos)
            report(progress, status, 0, total)
            for done, t in enumerate(info.tensor_infos, 1):
                _pad(out, alignment)
                _write_tensor(out, source.data, t, types[t.name], pool, workers)
                source.release()
                report(progress, status, done, total)
            _pad(out, alignment)
            out.flush()
            os.fsync(out.fileno())
        publish(tmp, dst)
        tmp = None
    except ValueError:  # ConvertError, and InvalidGGUF from the reader
        raise
    except CallbackFailed as exc:
        raise exc.original from None
    except OSError as exc:
        raise ConvertError(f"cannot quantize: {exc.strerror or type(exc).__name__}") from None
    except Exception as exc:  # the contract: a bad input is a ValueError, whatever tripped on it
        raise ConvertError(f"quantization failed: {type(exc).__name__}: {str(exc)[:200]}") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


class _SourceMap:
    """The source file mapped read-only, whose pages the process lets go of after each tensor.

    A mapped page counts in the resident set once touched, so without ``release`` quantizing a 14 GB F16 model
    would leave the server's RSS 14 GB higher by the last tensor (540 MB for a 540 MB file, measured). Dropping the
    mapping's pages (``MADV_DONTNEED``) leaves them in the page cache, so nothing is read twice from disk.
    """

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.data: npt.NDArray[np.uint8] = np.frombuffer(self._map, dtype=np.uint8)

    def release(self) -> None:
        advice = getattr(mmap, "MADV_DONTNEED", None)
        if advice is not None:
            self._map.madvise(advice)

    def __enter__(self) -> _SourceMap:
        return self

    def __exit__(self, *_: object) -> None:
        del self.data
        with contextlib.suppress(BufferError):  # a view still held by a traceback; the map goes with it
            self._map.close()


def _write_tensor(
    out: BinaryIO, source: npt.NDArray[np.uint8], t: TensorInfo, target: GGMLQuantizationType,
    pool: ThreadPoolExecutor, workers: int,
) -> None:
    """Copy one tensor unchanged, or convert it chunk by chunk (chunks quantized in parallel, written in order)."""
    assert t.n_bytes is not None
    raw = source[t.offset : t.offset + t.n_bytes]
    current = Q(t.kind)
    if target == current:
        out.write(raw.tobytes())
        return
    n_cols = t.shape[0] if t.shape else 1
    n_rows = t.n_elements // n_cols if n_cols else 0
    width = {Q.F32: 4, Q.F16: 2, Q.BF16: 2}[current]

    def work(span: tuple[int, int]) -> bytes:
        start, stop = span
        values = _as_float32(raw[start * n_cols * width : stop * n_cols * width], current, stop - start, n_cols)
        return quantize_rows(values, target).tobytes()

    # In order, with at most two chunks per worker in flight: memory stays bounded however large the tensor.
    pending: deque[Future[bytes]] = deque()
    for span in _chunks(n_rows, n_cols):
        if len(pending) >= 2 * workers:
            out.write(pending.popleft().result())
        pending.append(pool.submit(work, span))
    while pending:
        out.write(pending.popleft().result())
