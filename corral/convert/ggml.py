"""llama.cpp's own block quantizers, called in the engine's shared library through ctypes.

The pinned ``xllamacpp`` wheel is one shared library that holds all of ggml, and it exports ggml's C API, among it
``ggml_quantize_chunk``: the function llama-quantize (and Ollama's quantizer) run for every tensor. Calling it gives
files whose blocks are the engine's own, at the engine's speed. It is not a documented Python API of the wheel, so
nothing is trusted blindly: every symbol is looked up by name (a missing one is a :class:`ConvertError`, never a
crash), and before the first call the library must confirm, through ``ggml_type_name``/``ggml_blck_size``/
``ggml_type_size``, that each type number below still names the type and block layout this module expects (the
numbers are ``enum ggml_type`` in ggml.h of the llama.cpp that xllamacpp 2026.10.11549 bundles). Every argument that
ggml would ``GGML_ASSERT`` on (and abort the process) is checked here first. ``tests/convert/test_quantize.py`` pins
the bytes the engine gives for a fixed input, so a wheel that quantizes differently fails a test instead of shipping.
"""

from __future__ import annotations

import ctypes
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from corral.errors import ConvertError

Q = GGMLQuantizationType

# enum ggml_type (ggml/include/ggml.h, llama.cpp as bundled in xllamacpp 2026.10.11549): number and ggml's type name.
GGML_TYPES: dict[GGMLQuantizationType, tuple[int, str]] = {
    Q.F32: (0, "f32"),
    Q.F16: (1, "f16"),
    Q.Q4_0: (2, "q4_0"),
    Q.Q4_1: (3, "q4_1"),
    Q.Q5_0: (6, "q5_0"),
    Q.Q5_1: (7, "q5_1"),
    Q.Q8_0: (8, "q8_0"),
    Q.Q2_K: (10, "q2_K"),
    Q.Q3_K: (11, "q3_K"),
    Q.Q4_K: (12, "q4_K"),
    Q.Q5_K: (13, "q5_K"),
    Q.Q6_K: (14, "q6_K"),
    Q.BF16: (30, "bf16"),
}
SYMBOLS = ("ggml_quantize_chunk", "ggml_quantize_requires_imatrix", "ggml_type_name", "ggml_blck_size",
           "ggml_type_size")
PINNED_WHEEL = "xllamacpp==2026.10.11549"


def library_path() -> Path:
    """The xllamacpp extension module's shared library (found without importing the package)."""
    spec = importlib.util.find_spec("xllamacpp")
    if spec is None or not spec.submodule_search_locations:
        raise ConvertError(f"quantization needs the engine library: install {PINNED_WHEEL}")
    for folder in spec.submodule_search_locations:
        for pattern in ("xllamacpp*.so", "xllamacpp*.pyd", "xllamacpp*.dylib"):
            found = sorted(Path(folder).glob(pattern))
            if found:
                return found[0]
    raise ConvertError(f"the xllamacpp package has no engine library; reinstall {PINNED_WHEEL}")


@dataclass(frozen=True)
class _Engine:
    quantize_chunk: Any
    numbers: dict[GGMLQuantizationType, int]


_lock = threading.Lock()
_engine: _Engine | None = None


def _bind(path: Path) -> _Engine:
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        raise ConvertError(f"cannot load the engine library ({exc}); reinstall {PINNED_WHEEL}") from None
    for name in SYMBOLS:
        if not hasattr(lib, name):
            raise ConvertError(f"the engine library does not export {name}: this xllamacpp build cannot quantize "
                               f"(Corral is tested with {PINNED_WHEEL})")
    lib.ggml_type_name.restype = ctypes.c_char_p
    lib.ggml_type_name.argtypes = [ctypes.c_int]
    lib.ggml_blck_size.restype = ctypes.c_int64
    lib.ggml_blck_size.argtypes = [ctypes.c_int]
    lib.ggml_type_size.restype = ctypes.c_size_t
    lib.ggml_type_size.argtypes = [ctypes.c_int]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    fn = lib.ggml_quantize_chunk
    fn.restype = ctypes.c_size_t
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                   ctypes.c_void_p]
    numbers: dict[GGMLQuantizationType, int] = {}
    for qtype, (number, name) in GGML_TYPES.items():
        raw = lib.ggml_type_name(number)
        got = raw.decode("ascii", "replace") if raw else None
        block, size = GGML_QUANT_SIZES[qtype]
        layout = (int(lib.ggml_blck_size(number)), int(lib.ggml_type_size(number)))
        if got != name or layout != (block, size):
            raise ConvertError(f"the engine library's ggml type {number} is {got!r} with blocks {layout}, not "
                               f"{name!r} {(block, size)}: this xllamacpp build cannot quantize "
                               f"(Corral is tested with {PINNED_WHEEL})")
        if lib.ggml_quantize_requires_imatrix(number):
            raise ConvertError(f"the engine library wants an importance matrix for {name}; Corral is tested with "
                               f"{PINNED_WHEEL}")
        numbers[qtype] = number
    return _Engine(fn, numbers)


def engine() -> _Engine:
    """The bound library, checked once per process; ConvertError when it is missing or not the expected build."""
    global _engine
    with _lock:
        if _engine is None:
            _engine = _bind(library_path())
        return _engine


def supported(qtype: GGMLQuantizationType) -> bool:
    return qtype in GGML_TYPES


def quantize_rows(rows: npt.NDArray[Any], qtype: GGMLQuantizationType) -> npt.NDArray[np.uint8]:
    """``qtype``'s bytes for a float32 ``(n_rows, n_cols)`` array, one row of blocks per input row.

    Runs ggml's reference quantizer (no importance matrix: what llama-quantize does without ``--imatrix``) in the
    calling thread; ctypes lets go of the GIL for the call, so several threads can quantize chunks side by side.
    """
    if qtype not in GGML_TYPES:
        raise ConvertError(f"the engine cannot quantize to {qtype.name}")
    data = np.require(rows, np.float32, ["C_CONTIGUOUS", "ALIGNED"])  # a copy only when it is neither
    if data.ndim != 2:
        raise ConvertError("quantize_rows wants a 2-D array")
    n_rows, n_cols = data.shape
    block, size = GGML_QUANT_SIZES[qtype]
    if n_cols == 0 or n_cols % block:
        raise ConvertError(f"a row of {n_cols} weights is not a whole number of {qtype.name} blocks ({block})")
    out = np.empty((n_rows, n_cols // block * size), dtype=np.uint8)
    if n_rows == 0:
        return out
    bound = engine()
    written = bound.quantize_chunk(bound.numbers[qtype], data.ctypes.data, out.ctypes.data, 0, n_rows, n_cols, None)
    if written != out.nbytes:
        raise ConvertError(f"the engine wrote {written} bytes of {qtype.name} where {out.nbytes} were expected")
    return out
