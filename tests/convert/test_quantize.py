"""GGUF requantization: the engine's quantizer (``ggml_quantize_chunk`` in the pinned xllamacpp wheel, through
ctypes) against a scalar transliteration of llama.cpp's reference code and the ``gguf`` package's numpy quantizers,
a guard that fails when the pinned wheel changes under it, error bounds of every type through
``gguf.quants.dequantize``, llama.cpp's per-tensor type mixes, and quantized models that the real engine loads and
runs, with the greedy tokens the numpy kernels it replaced gave.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import importlib.metadata
import json
import platform
import struct
import tomllib
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from benchmarks.quantize import float_copy  # the benchmark and this test start from the same dequantized model
from corral.convert import convert_directory, ggml, quantize_gguf
from corral.convert.quantize import parse_quant_type, plan_types, quantize_rows
from corral.errors import ConvertError
from corral.store.gguf_info import read_gguf_info
from tests.conftest import FIXTURES, ROOT, SMOL_FILE, bundled_file
from tests.convert.test_convert import (
    SENTENCES,
    bert_reference,
    cosines,
    make_tiny_llama,
    minilm_dir,
    run_engine,
    run_engines,
)

f32 = np.float32

# -- a scalar transliteration of ggml-quants.c (quantize_row_q*_K_ref), float32 like the C code ----------------------


def _ni(v: float) -> int:
    """nearest_int: round half to even."""
    return int(np.rint(f32(v)))


def _ref_qkx2(x: list, w: list, nmax: int, rmin: float, rdelta: float, nstep: int, use_mad: bool) -> tuple:
    n = len(x)
    mn, mx = x[0], x[0]
    sum_w, sum_x = w[0], f32(w[0] * x[0])
    for i in range(1, n):
        mn, mx = min(mn, x[i]), max(mx, x[i])
        sum_w = f32(sum_w + w[i])
        sum_x = f32(sum_x + f32(w[i] * x[i]))
    mn = min(mn, f32(0))
    if mx == mn:
        return f32(0), f32(-mn)

    def error(scale: f32, offset: f32, q: list) -> f32:
        total = f32(0)
        for i in range(n):
            diff = f32(f32(f32(scale * q[i]) + offset) - x[i])
            total = f32(total + f32(w[i] * (abs(diff) if use_mad else f32(diff * diff))))
        return total

    iscale = f32(f32(nmax) / f32(mx - mn))
    scale = f32(f32(1) / iscale)
    best = error(scale, mn, [max(0, min(nmax, _ni(f32(iscale * f32(v - mn))))) for v in x])
    for step in range(nstep + 1):
        iscale = f32(f32(f32(f32(rmin) + f32(f32(rdelta) * step)) + nmax) / f32(mx - mn))
        q = [max(0, min(nmax, _ni(f32(iscale * f32(v - mn))))) for v in x]
        s_l = s_l2 = s_xl = f32(0)
        for i in range(n):
            s_l = f32(s_l + f32(w[i] * q[i]))
            s_l2 = f32(s_l2 + f32(f32(w[i] * q[i]) * q[i]))
            s_xl = f32(s_xl + f32(f32(w[i] * q[i]) * x[i]))
        det = f32(f32(sum_w * s_l2) - f32(s_l * s_l))
        if det > 0:
            this_scale = f32(f32(f32(sum_w * s_xl) - f32(sum_x * s_l)) / det)
            this_min = f32(f32(f32(s_l2 * sum_x) - f32(s_l * s_xl)) / det)
            if this_min > 0:
                this_min, this_scale = f32(0), f32(s_xl / s_l2)
            cur = error(this_scale, this_min, q)
            if cur < best:
                best, scale, mn = cur, this_scale, this_min
    return scale, f32(-mn)


def _ref_absmax(x: list) -> tuple:
    mx = amax = f32(0)
    for v in x:
        if abs(v) > amax:
            amax, mx = abs(v), v
    return amax, mx


def _ref_qx(x: list, nmax: int) -> f32:
    """make_qx_quants with rmse_type 1 and no weights."""
    amax, mx = _ref_absmax(x)
    if amax < f32(1e-15):
        return f32(0)

    def fit(iscale: f32) -> tuple:
        sumlx = suml2 = f32(0)
        for v in x:
            q = max(-nmax, min(nmax - 1, _ni(f32(iscale * v))))
            w = f32(v * v)
            sumlx = f32(sumlx + f32(f32(w * v) * q))
            suml2 = f32(suml2 + f32(f32(w * q) * q))
        return sumlx, suml2

    sumlx, suml2 = fit(f32(f32(-nmax) / mx))
    scale = f32(sumlx / suml2) if suml2 else f32(0)
    best = f32(scale * sumlx)
    for step in range(-9, 10):
        if step:
            sumlx, suml2 = fit(f32(-f32(f32(nmax) + f32(f32(0.1) * step)) / mx))
            if suml2 > 0 and f32(sumlx * sumlx) > f32(best * suml2):
                scale = f32(sumlx / suml2)
                best = f32(scale * sumlx)
    return scale


def _ref_q3(x: list, nmax: int) -> f32:
    """make_q3_quants with do_rmse."""
    amax, mx = _ref_absmax(x)
    if amax < f32(1e-15):
        return f32(0)
    iscale = f32(f32(-nmax) / mx)
    q = [max(-nmax, min(nmax - 1, _ni(f32(iscale * v)))) for v in x]
    sumlx = suml2 = f32(0)
    for v, li in zip(x, q, strict=True):
        w = f32(v * v)
        sumlx = f32(sumlx + f32(f32(w * v) * li))
        suml2 = f32(suml2 + f32(f32(w * li) * li))
    for _ in range(5):
        changed = 0
        for i, v in enumerate(x):
            w = f32(v * v)
            slx = f32(sumlx - f32(f32(w * v) * q[i]))
            if slx > 0:
                sl2 = f32(suml2 - f32(f32(w * q[i]) * q[i]))
                new = max(-nmax, min(nmax - 1, _ni(f32(f32(v * sl2) / slx))))
                if new != q[i]:
                    slx = f32(slx + f32(f32(w * v) * new))
                    sl2 = f32(sl2 + f32(f32(w * new) * new))
                    if sl2 > 0 and f32(f32(slx * slx) * suml2) > f32(f32(sumlx * sumlx) * sl2):
                        q[i], sumlx, suml2 = new, slx, sl2
                        changed += 1
        if not changed:
            break
    return f32(sumlx / suml2) if suml2 > 0 else f32(0)


def _h(*values: float) -> bytes:
    return np.array(values, dtype=np.float16).tobytes()


def _pack2(q: list) -> bytes:
    return bytes(q[j + i] | (q[j + i + 32] << 2) | (q[j + i + 64] << 4) | (q[j + i + 96] << 6)
                 for j in (0, 128) for i in range(32))


def _ref_q45k(x: list, nmax: int, rmin: float, nstep: int) -> tuple:
    scales, mins = [], []
    for j in range(8):
        xs = x[32 * j:32 * j + 32]
        sum_x2 = f32(0)
        for v in xs:
            sum_x2 = f32(sum_x2 + f32(v * v))
        av_x = f32(np.sqrt(f32(sum_x2 / 32)))
        s, m = _ref_qkx2(xs, [f32(av_x + abs(v)) for v in xs], nmax, rmin, 0.1, nstep, False)
        scales.append(s)
        mins.append(m)
    max_scale, max_min = max([f32(0), *scales]), max([f32(0), *mins])
    inv_scale = f32(f32(63) / max_scale) if max_scale > 0 else f32(0)
    inv_min = f32(f32(63) / max_min) if max_min > 0 else f32(0)
    ls = [min(63, _ni(f32(inv_scale * s)) & 0xFF) for s in scales]
    lm = [min(63, _ni(f32(inv_min * m)) & 0xFF) for m in mins]
    sc = [0] * 12
    for j in range(8):
        if j < 4:
            sc[j], sc[j + 4] = ls[j], lm[j]
        else:
            sc[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4)
            sc[j - 4] |= (ls[j] >> 4) << 6
            sc[j] |= (lm[j] >> 4) << 6
    d, dmin = np.float16(f32(max_scale / f32(63))), np.float16(f32(max_min / f32(63)))
    q = [0] * 256
    for j in range(8):
        dd = f32(f32(d) * ls[j])
        if dd:
            dm = f32(f32(dmin) * lm[j])
            for i in range(32):
                q[32 * j + i] = max(0, min(nmax, _ni(f32(f32(x[32 * j + i] + dm) / dd))))
    return _h(d, dmin) + bytes(sc), q


def ref_q4_k(x: list) -> bytes:
    head, q = _ref_q45k(x, 15, -1.0, 20)
    return head + bytes(q[j + i] | (q[j + i + 32] << 4) for j in range(0, 256, 64) for i in range(32))


def ref_q5_k(x: list) -> bytes:
    head, q = _ref_q45k(x, 31, -0.5, 15)
    qh = [0] * 32
    ql = []
    for k, n in enumerate(range(0, 256, 64)):
        for j in range(32):
            lo, hi = q[n + j], q[n + j + 32]
            qh[j] |= ((lo > 15) << (2 * k)) | ((hi > 15) << (2 * k + 1))
            ql.append((lo & 15) | ((hi & 15) << 4))
    return head + bytes(qh) + bytes(ql)


def ref_q6_k(x: list) -> bytes:
    scales = [_ref_qx(x[16 * i:16 * i + 16], 32) for i in range(16)]
    max_abs, max_scale = _ref_absmax(scales)
    if max_abs < f32(1e-15):
        return bytes(210)
    iscale = f32(f32(-128) / max_scale)
    d = np.float16(f32(f32(1) / iscale))
    sc = [min(127, _ni(f32(iscale * s))) for s in scales]
    q = [32] * 256
    for j in range(16):
        dd = f32(f32(d) * sc[j])
        if dd:
            for i in range(16):
                q[16 * j + i] = max(-32, min(31, _ni(f32(x[16 * j + i] / dd)))) + 32
    ql, qh = [0] * 128, [0] * 64
    for h, j in enumerate((0, 128)):
        for i in range(32):
            a, b, c, e = (q[j + i + 32 * k] for k in range(4))
            ql[64 * h + i] = (a & 0xF) | ((c & 0xF) << 4)
            ql[64 * h + i + 32] = (b & 0xF) | ((e & 0xF) << 4)
            qh[32 * h + i] = (a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6)
    return bytes(ql) + bytes(qh) + np.array(sc, dtype=np.int8).tobytes() + _h(d)


def ref_q3_k(x: list) -> bytes:
    scales = [_ref_q3(x[16 * j:16 * j + 16], 4) for j in range(16)]
    _, max_scale = _ref_absmax(scales)
    sc = [0] * 12
    d = np.float16(0)
    if max_scale:
        iscale = f32(f32(-32) / max_scale)
        for j, s in enumerate(scales):
            level = max(-32, min(31, _ni(f32(iscale * s)))) + 32
            if j < 8:
                sc[j] = level & 0xF
            else:
                sc[j - 8] |= (level & 0xF) << 4
            sc[j % 4 + 8] |= (level >> 4) << (2 * (j // 4))
        d = np.float16(f32(f32(1) / iscale))
    q = [4] * 256
    for j in range(16):
        low = sc[j] & 0xF if j < 8 else sc[j - 8] >> 4
        dd = f32(f32(d) * ((low | (((sc[8 + j % 4] >> (2 * (j // 4))) & 3) << 4)) - 32))
        if dd:
            for i in range(16):
                q[16 * j + i] = max(-4, min(3, _ni(f32(x[16 * j + i] / dd)))) + 4
    hmask = [0] * 32
    for j in range(256):
        if q[j] > 3:
            hmask[j % 32] |= 1 << (j // 32)
            q[j] -= 4
    return bytes(hmask) + _pack2(q) + bytes(sc) + _h(d)


def ref_q2_k(x: list) -> bytes:
    fits = [_ref_qkx2(x[16 * j:16 * j + 16], [abs(v) for v in x[16 * j:16 * j + 16]], 3, -0.5, 0.1, 15, True)
            for j in range(16)]
    max_scale, max_min = max([f32(0)] + [s for s, _ in fits]), max([f32(0)] + [m for _, m in fits])
    sc = [0] * 16
    d = dmin = np.float16(0)
    if max_scale > 0:
        sc = [_ni(f32(f32(f32(15) / max_scale) * s)) & 0xFF for s, _ in fits]
        d = np.float16(f32(max_scale / f32(15)))
    if max_min > 0:
        sc = [(c | (_ni(f32(f32(f32(15) / max_min) * m)) << 4)) & 0xFF for c, (_, m) in zip(sc, fits, strict=True)]
        dmin = np.float16(f32(max_min / f32(15)))
    q = [0] * 256
    for j in range(16):
        dd = f32(f32(d) * (sc[j] & 0xF))
        if dd:
            dm = f32(f32(dmin) * (sc[j] >> 4))
            for i in range(16):
                q[16 * j + i] = max(0, min(3, _ni(f32(f32(x[16 * j + i] + dm) / dd))))
    return bytes(sc) + _pack2(q) + _h(d, dmin)


REFERENCE = {"Q2_K": ref_q2_k, "Q3_K": ref_q3_k, "Q4_K": ref_q4_k, "Q5_K": ref_q5_k, "Q6_K": ref_q6_k}


def _test_blocks() -> np.ndarray:
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((20, 256)) * 0.02).astype(np.float32)
    x[1, ::13] *= 15  # outliers
    x[2] = 0  # all zero
    x[3, :100] = 0
    x[4] = np.abs(x[4])  # one-signed
    x[5] = -np.abs(x[5])
    x[6] *= 1e-6  # tiny
    x[7] = 0.5  # constant
    x[8] = rng.standard_t(2, 256).astype(np.float32)  # heavy tails
    x[9] *= 100
    return x


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_kquants_match_llama_cpp_reference(name: str) -> None:
    """The engine's K-quant blocks are the reference's, byte for byte, on almost every block: the compiled C may
    fuse a multiply-add or sum in another order than this float32 transliteration, which can flip a near-tie
    between two candidate scales; the error then stays within a whisker of the reference's."""
    x = _test_blocks()
    want = np.frombuffer(b"".join(REFERENCE[name]([f32(v) for v in row]) for row in x), np.uint8).reshape(len(x), -1)
    got = quantize_rows(x, Q[name])
    assert got.dtype == np.uint8 and got.shape == want.shape == (len(x), gguf.GGML_QUANT_SIZES[Q[name]][1])
    same = (want == got).all(axis=1)
    dw, dg = gguf.quants.dequantize(want, Q[name]), gguf.quants.dequantize(got, Q[name])
    ratio = float(np.sqrt(((dg - x) ** 2).mean()) / np.sqrt(((dw - x) ** 2).mean()))
    print(f"{name}: {same.sum()}/{len(x)} blocks byte-identical to the reference, RMSE ratio {ratio:.5f}")
    assert same.sum() >= len(x) - 3
    assert ratio < 1.02
    assert np.isfinite(dg).all() and (dg[2] == 0).all()


@pytest.mark.parametrize("name", ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "F16", "BF16"])
def test_legacy_types_match_the_gguf_package(name: str) -> None:
    """The 32-weight types and the float ones: the engine writes exactly what ``gguf.quants.quantize`` (the numpy
    port Corral used before) writes, edge cases included."""
    rng = np.random.default_rng(5)
    x = np.concatenate([_test_blocks().reshape(-1, 1024), (rng.standard_normal((32, 1024)) * 0.05).astype(f32)])
    got = quantize_rows(x, Q[name])
    want = np.asarray(gguf.quants.quantize(x, Q[name])).view(np.uint8).reshape(got.shape)
    assert (got == want).all()


# Relative RMSE (error RMS / signal RMS) on Gaussian weights: well inside what each bit width allows.
ERROR_BOUNDS = {"Q8_0": 0.008, "Q6_K": 0.022, "Q5_K": 0.042, "Q5_1": 0.045, "Q5_0": 0.05, "Q4_K": 0.08,
                "Q4_1": 0.09, "Q4_0": 0.1, "Q3_K": 0.17, "Q2_K": 0.34, "BF16": 0.003, "F16": 0.0005}


@pytest.mark.parametrize("name", sorted(ERROR_BOUNDS))
def test_quantization_error_bounds(name: str) -> None:
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((64, 1024)) * 0.05).astype(np.float32)
    data = quantize_rows(x, Q[name])
    assert data.shape[0] == 64
    back = gguf.quants.dequantize(data, Q[name]).reshape(x.shape)
    rel = float(np.sqrt(((back - x) ** 2).mean()) / np.sqrt((x ** 2).mean()))
    print(f"{name}: relative RMSE {rel:.4f}")
    assert rel < ERROR_BOUNDS[name]


def test_quant_type_names() -> None:
    assert parse_quant_type("q4_k_m")[0] == "Q4_K_M" and parse_quant_type(" Q8_0 ")[0] == "Q8_0"
    assert parse_quant_type("q4_K")[0] == "Q4_K_M" and parse_quant_type("Q5_K")[0] == "Q5_K_M"
    assert parse_quant_type("f16")[2] == Q.F16
    assert int(parse_quant_type("Q4_K_M")[1]) == 15 and int(parse_quant_type("q3_k_s")[1]) == 11
    for bad in ("q4_k_x", "IQ2_XXS", "q1", ""):
        with pytest.raises(ValueError, match="unsupported quantization type"):
            parse_quant_type(bad)
    with pytest.raises(ValueError, match="importance matrix"):
        parse_quant_type("q2_k_s")


# -- the engine's quantizer is a private symbol of the pinned wheel: guard it --------------------------------------

# sha256 (first 16 hex digits) of ggml_quantize_chunk's output for _guard_input(), xllamacpp 2026.10.11549 on
# x86_64 Linux. Recorded from the pinned wheel; when it was recorded the same blocks agreed with the references
# above (the legacy types byte for byte with the gguf package, the K-quants on all but near-tie blocks).
GUARD_SHA256 = {
    "F16": "9a4cdc1d0fa32519", "BF16": "355fc3665fb26e66", "Q4_0": "e7f1e8e608da3bb9", "Q4_1": "ffebee8e4f31d793",
    "Q5_0": "45ec2325feba2e35", "Q5_1": "0953795f22d2ea20", "Q8_0": "87f09db4a186de51", "Q2_K": "0faae391bc96c779",
    "Q3_K": "9a9c9b012c6a961a", "Q4_K": "9187b559ffd6b8f3", "Q5_K": "14e329e6b6a3436b", "Q6_K": "a5e7a35f5bb98ade",
}


def _guard_input() -> np.ndarray:
    """16 rows of 1024 weights from integer arithmetic only (no RNG stream, no libm), with the awkward rows."""
    k = np.arange(16 * 1024, dtype=np.uint64)
    u = ((k * np.uint64(2654435761) + np.uint64(12345)) % np.uint64(2**32)).astype(np.float64) / 2**32 - 0.5
    x = (u * u * u * 0.4 + u * 0.02).reshape(16, 1024)
    x[3] = 0
    x[4, :300] = 0
    x[5] = 0.25
    x[6] *= 1e-6
    x[7] = np.abs(x[7])
    x[8, ::37] *= 40
    return x.astype(np.float32)


def _pinned_wheel() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d for d in deps if d.startswith("xllamacpp"))


def test_engine_quantizer_is_the_pinned_one() -> None:
    """Corral calls ``ggml_quantize_chunk``, which xllamacpp exports but does not document. A wheel that drops it,
    renumbers ggml's types or quantizes differently must fail here, saying which, before it ships."""
    pin = _pinned_wheel()
    installed = f"xllamacpp=={importlib.metadata.version('xllamacpp')}"
    assert installed == pin == ggml.PINNED_WHEEL, (
        f"installed {installed}, pyproject.toml pins {pin}, corral/convert/ggml.py was checked against "
        f"{ggml.PINNED_WHEEL}: re-check the engine's quantizer (this test, docs/convert.md) before moving the pin")
    lib = ctypes.CDLL(str(ggml.library_path()))
    missing = [name for name in ggml.SYMBOLS if not hasattr(lib, name)]
    assert not missing, f"the engine library no longer exports {missing}: Corral's quantizer cannot work with it"
    ggml.engine()  # every type number still names the type and block layout Corral expects
    if platform.machine() not in ("x86_64", "AMD64"):
        return  # the hashes were recorded on x86_64; elsewhere the reference comparisons above still run
    x = _guard_input()
    got = {name: hashlib.sha256(quantize_rows(x, Q[name]).tobytes()).hexdigest()[:16] for name in GUARD_SHA256}
    changed = sorted(name for name in GUARD_SHA256 if got[name] != GUARD_SHA256[name])
    assert not changed, (f"the engine's ggml_quantize_chunk gives different bytes for {changed} than "
                         f"{ggml.PINNED_WHEEL} did: compare its blocks with the references, then re-record")


@pytest.mark.e2e
def test_missing_engine_symbol_is_a_clear_error(tiny_f16: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine library without the symbol (here: the C library) gives a ConvertError naming it, not a crash."""
    libc = ctypes.util.find_library("c")
    assert libc
    monkeypatch.setattr(ggml, "library_path", lambda: Path(libc))
    monkeypatch.setattr(ggml, "_engine", None)
    out = tmp_path / "out.gguf"
    with pytest.raises(ConvertError, match=r"does not export ggml_quantize_chunk: .* tested with xllamacpp=="):
        quantize_gguf(tiny_f16, out, "q8_0")
    assert list(tmp_path.iterdir()) == []


def test_renumbered_engine_types_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Type numbers are checked against the library's own names and block sizes before anything is quantized."""
    monkeypatch.setitem(ggml.GGML_TYPES, Q.Q4_K, (13, "q4_K"))
    with pytest.raises(ConvertError, match=r"ggml type 13 is 'q5_K' with blocks \(256, 176\), not 'q4_K'"):
        ggml._bind(ggml.library_path())


def test_engine_arguments_checked_before_the_call() -> None:
    """ggml aborts the process on a bad argument (GGML_ASSERT); these never reach it."""
    with pytest.raises(ConvertError, match="not a whole number of Q4_0 blocks"):
        ggml.quantize_rows(np.zeros((2, 100), np.float32), Q.Q4_0)
    with pytest.raises(ConvertError, match="not a whole number of Q4_K blocks"):
        ggml.quantize_rows(np.zeros((2, 384), np.float32), Q.Q4_K)
    with pytest.raises(ConvertError, match="cannot quantize to IQ2_XXS"):
        ggml.quantize_rows(np.zeros((2, 256), np.float32), Q.IQ2_XXS)
    with pytest.raises(ConvertError, match="2-D"):
        ggml.quantize_rows(np.zeros(256, np.float32), Q.Q8_0)
    assert ggml.quantize_rows(np.zeros((0, 256), np.float32), Q.Q8_0).shape == (0, 272)
    x = np.ascontiguousarray(_guard_input()[:, :256])
    strided = np.asfortranarray(x)  # not C-contiguous: copied first
    assert (ggml.quantize_rows(strided, Q.Q8_0) == ggml.quantize_rows(x, Q.Q8_0)).all()
    raw = np.zeros(x.nbytes + 1, np.uint8)
    unaligned = raw[1:].view(np.float32).reshape(x.shape)  # as a tensor at an odd offset of a mapped file would be
    unaligned[:] = x
    assert not unaligned.flags.aligned
    assert (ggml.quantize_rows(unaligned, Q.Q8_0) == ggml.quantize_rows(x, Q.Q8_0)).all()


# -- whole files ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_f16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    make_tiny_llama(root / "src", scale=0.1)
    out = root / "tiny-f16.gguf"
    convert_directory(root / "src", out)
    return out


def _tensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a GGUF file, dequantized to float32 in GGML's (rows, row length) layout."""
    data = path.read_bytes()
    out = {}
    for t in read_gguf_info(path).tensor_infos:
        raw = np.frombuffer(data[t.offset:t.offset + (t.n_bytes or 0)], dtype=np.uint8)
        kind = Q(t.kind)
        rows = int(np.prod(t.shape[1:])) if len(t.shape) > 1 else 1
        if kind == Q.F32:
            out[t.name] = raw.view(np.float32).reshape(rows, -1)
        elif kind == Q.F16:
            out[t.name] = raw.view(np.float16).astype(np.float32).reshape(rows, -1)
        else:
            out[t.name] = gguf.quants.dequantize(raw.reshape(rows, -1), kind)
    return out


@pytest.mark.e2e
def test_q8_0_and_q4_k_m_files(tiny_f16: Path, tmp_path: Path) -> None:
    source = read_gguf_info(tiny_f16)
    generated = {}
    for qtype, bound in (("q8_0", 0.01), ("Q4_K_M", 0.09)):
        out = tmp_path / f"tiny-{qtype}.gguf"
        calls: list[tuple[str, int, int]] = []
        quantize_gguf(tiny_f16, out, qtype, lambda s, d, t, calls=calls: calls.append((s, d, t)))
        info = read_gguf_info(out)
        name = qtype.upper()
        assert info.file_type == name and info.metadata["general.quantization_version"] == 2
        assert calls[0] == (f"quantizing F16 model to {name}", 0, 39) and calls[-1][1:] == (39, 39)
        assert out.stat().st_size < tiny_f16.stat().st_size * (0.6 if name == "Q8_0" else 0.35)
        # Every other metadata key is copied unchanged.
        for key in source.metadata:
            if key != "general.file_type":
                assert info.get(key) == source.get(key), key
        types = {t.name: t.type for t in info.tensor_infos}
        assert [t.name for t in info.tensor_infos] == [t.name for t in source.tensor_infos]
        assert types["blk.0.attn_norm.weight"] == "F32" and types["output_norm.weight"] == "F32"
        if name == "Q8_0":
            assert types["output.weight"] == "Q8_0" and types["blk.0.attn_q.weight"] == "Q8_0"
        else:  # llama.cpp's Q4_K_M mix for 4 layers: layers 2 and 3 get Q6_K attn_v and ffn_down
            assert types["output.weight"] == "Q6_K" and types["token_embd.weight"] == "Q4_K"
            assert [types[f"blk.{i}.attn_v.weight"] for i in range(4)] == ["Q4_K", "Q4_K", "Q6_K", "Q6_K"]
            assert [types[f"blk.{i}.ffn_down.weight"] for i in range(4)] == ["Q4_K", "Q4_K", "Q6_K", "Q6_K"]
            assert types["blk.0.attn_q.weight"] == "Q4_K" and types["blk.3.ffn_up.weight"] == "Q4_K"
        worst = 0.0
        before, after = _tensors(tiny_f16), _tensors(out)
        for t in source.tensor_infos:
            want, got = before[t.name], after[t.name]
            rel = float(np.sqrt(((got - want) ** 2).mean()) / np.sqrt((want ** 2).mean()))
            worst = max(worst, rel)
        print(f"{name}: worst per-tensor relative RMSE {worst:.4f}")
        assert worst < bound
        result = run_engine({"model": str(out), "prompt": "hello world", "n_predict": 8})
        assert result["completion"]["n"] == 8
        generated[name] = result["completion"]["tokens"]
    assert all(len(tokens) == 8 for tokens in generated.values())


@pytest.mark.e2e
def test_other_types_load_and_generate(tiny_f16: Path, tmp_path: Path) -> None:
    qtypes = ["q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q5_k_s", "q5_k_m",
              "q6_k", "bf16"]
    size = tiny_f16.stat().st_size
    for qtype in qtypes:
        out = tmp_path / f"{qtype}.gguf"
        quantize_gguf(tiny_f16, out, qtype)
        info = read_gguf_info(out)
        assert info.file_type == qtype.upper()
        assert info.parameter_count == read_gguf_info(tiny_f16).parameter_count
        assert out.stat().st_size <= size * (0.65 if qtype != "bf16" else 1.0)
    results = run_engines([{"model": str(tmp_path / f"{q}.gguf"), "prompt": "hello", "n_predict": 4} for q in qtypes])
    assert [r["completion"]["n"] for r in results] == [4] * len(qtypes)


def _write_gguf(path: Path, tensors: dict[str, np.ndarray], file_type: int = 1, arch: str = "llama") -> None:
    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(2)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_file_type(file_type)
    w.add_string("corral.test.note", "kept")
    for name, array in tensors.items():
        w.add_tensor(name, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_fallbacks_and_kept_tensors(tmp_path: Path) -> None:
    """Rows that are not whole blocks fall back as llama.cpp does; 1-D and embedding-position tensors are kept."""
    rng = np.random.default_rng(0)

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.1).astype(np.float16)

    tensors = {
        "token_embd.weight": rand(64, 384),  # row of 384: not a K-quant block multiple
        "blk.0.attn_q.weight": rand(384, 384),
        "blk.0.attn_k.weight": rand(256, 100),  # not even a multiple of 32
        "blk.0.ffn_down.weight": rand(256, 512),
        "blk.1.ffn_down.weight": rand(256, 512),
        "blk.0.attn_norm.weight": np.ones(384, np.float32),
        "position_embd.weight": rand(16, 256),
        "output_norm.bias": np.zeros(256, np.float32),
    }
    src = tmp_path / "src.gguf"
    _write_gguf(src, tensors)
    info = read_gguf_info(src)
    k = plan_types(info, *parse_quant_type("q4_K_M")[1:])
    assert k["token_embd.weight"] == Q.Q8_0  # tied output: Q6_K wanted, 384 % 256 -> Q8_0
    assert k["blk.0.attn_q.weight"] == Q.Q5_0  # Q4_K -> Q5_0
    assert k["blk.0.attn_k.weight"] == Q.F16  # Q4_K -> Q5_0 -> still no fit -> F16
    assert k["blk.0.ffn_down.weight"] == Q.Q4_K and k["blk.1.ffn_down.weight"] == Q.Q6_K
    assert k["blk.0.attn_norm.weight"] == Q.F32 and k["output_norm.bias"] == Q.F32
    assert k["position_embd.weight"] == Q.F16
    legacy = plan_types(info, *parse_quant_type("q4_0")[1:])
    assert legacy["blk.0.attn_k.weight"] == Q.F16 and legacy["blk.0.attn_q.weight"] == Q.Q4_0
    out = tmp_path / "out.gguf"
    quantize_gguf(src, out, "Q4_K_M")
    back = read_gguf_info(out)
    assert back.metadata["corral.test.note"] == "kept" and back.file_type == "Q4_K_M"
    before, after = _tensors(src), _tensors(out)
    for name in tensors:
        want, got = before[name], after[name]
        assert got.shape == want.shape
        assert np.allclose(got, want, atol=0.05), name
    reader = gguf.GGUFReader(out)  # the gguf package reads it too
    assert len(reader.tensors) == len(tensors)


def test_f32_and_bf16_sources(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((8, 512)) * 0.1).astype(np.float32)
    src32 = tmp_path / "f32.gguf"
    _write_gguf(src32, {"blk.0.ffn_up.weight": x}, file_type=0)
    out = tmp_path / "q.gguf"
    calls: list[tuple[str, int, int]] = []
    quantize_gguf(src32, out, "q6_k", lambda s, d, t: calls.append((s, d, t)))
    assert calls[0][0] == "quantizing F32 model to Q6_K"
    assert np.abs(_tensors(out)["blk.0.ffn_up.weight"] - x).max() < 0.01
    bf16 = ((x.view(np.uint32) + 0x8000) >> 16).astype(np.uint16)
    src16 = tmp_path / "bf16.gguf"
    w = gguf.GGUFWriter(src16, "llama")
    w.add_file_type(32)
    w.add_tensor("blk.0.ffn_up.weight", bf16, raw_dtype=Q.BF16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    quantize_gguf(src16, out, "Q8_0", lambda s, d, t: calls.append((s, d, t)))
    assert calls[-1][0] == "quantizing BF16 model to Q8_0"
    assert np.abs(_tensors(out)["blk.0.ffn_up.weight"] - x).max() < 0.01


def test_refuses_quantized_and_broken_sources(tiny_f16: Path, tmp_path: Path) -> None:
    q8 = tmp_path / "q8.gguf"
    quantize_gguf(tiny_f16, q8, "q8_0")
    out = tmp_path / "out" / "x.gguf"
    out.parent.mkdir()
    with pytest.raises(ValueError, match=r"^quantization is only supported for F16, BF16 and F32 models$"):
        quantize_gguf(q8, out, "q4_K_M")
    with pytest.raises(ValueError, match="unsupported quantization type"):
        quantize_gguf(tiny_f16, out, "q9_9")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny_f16.read_bytes()[: tiny_f16.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated"):
        quantize_gguf(truncated, out, "q8_0")
    hostile = tmp_path / "hostile.gguf"  # a 2**40-element array in a 49-byte file
    hostile.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"k"
                        + struct.pack("<IIQ", 9, 4, 1 << 40) + b"\0")
    with pytest.raises(ValueError):
        quantize_gguf(hostile, out, "q8_0")
    assert list(out.parent.iterdir()) == []


@pytest.mark.e2e
def test_minilm_quantized_embeddings(tmp_path: Path) -> None:
    """An embedding model through convert + quantize: BERT rows of 384 exercise the fallbacks for real."""
    model = minilm_dir()
    f16 = tmp_path / "minilm.gguf"
    convert_directory(model, f16)
    want = bert_reference(model, SENTENCES)
    cases = (("q8_0", 0.998), ("q4_K_M", 0.97))
    for qtype, _ in cases:
        out = tmp_path / f"minilm-{qtype}.gguf"
        quantize_gguf(f16, out, qtype)
        types = {t.name: t.type for t in read_gguf_info(out).tensor_infos}
        if qtype == "q4_K_M":
            assert types["token_embd.weight"] == "Q8_0" and types["blk.0.attn_q.weight"] == "Q5_0"
            assert types["blk.2.ffn_down.weight"] == "Q6_K" and types["blk.0.ffn_down.weight"] == "Q4_K"
            assert types["position_embd.weight"] == "F32"
    results = run_engines([{"model": str(tmp_path / f"minilm-{q}.gguf"), "embedding": True, "embed": SENTENCES}
                           for q, _ in cases])
    for (qtype, floor), result in zip(cases, results, strict=True):
        cos = cosines(result["embeddings"], want)
        print(f"{qtype}: cosine vs reference {np.round(cos, 5).tolist()}")
        assert cos.min() > floor


def test_metadata_reader_roundtrip_of_quantized_file(tiny_f16: Path, tmp_path: Path) -> None:
    """The gguf package's own reader agrees with Corral's on the quantized file's layout."""
    out = tmp_path / "q.gguf"
    quantize_gguf(tiny_f16, out, "q4_k_m")
    reader = gguf.GGUFReader(out)
    ours = {t.name: t for t in read_gguf_info(out).tensor_infos}
    for t in reader.tensors:
        assert ours[t.name].offset == t.data_offset and ours[t.name].kind == t.tensor_type
    assert json.loads(json.dumps(reader.fields["general.file_type"].contents())) == 15


NUMPY_PATH_TOKENS = json.loads((FIXTURES / "quantize_numpy_path_tokens.json").read_text())


@pytest.mark.e2e
def test_engine_path_generates_like_the_numpy_path(tiny_f16: Path, tmp_path: Path) -> None:
    """Greedy tokens of models quantized through the engine equal those recorded from the numpy kernels it replaced.

    What this compares: the tiny random Llama (three prompts, 16 tokens) and SmolLM2-135M dequantized to F16 (a
    real chat model, three prompts, 24 tokens) at Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1, against tokens recorded at
    commit e939046 (tests/fixtures/quantize_numpy_path_tokens.json). The legacy-type blocks of these files are
    byte-identical to the numpy path's (test_legacy_types_match_the_gguf_package checks the same kernels live); the
    Q6_K output matrix of the tiny 4/5-bit files differs in 7 of 317 blocks and the tokens still agree. The K-quant
    mixes are not compared here: the numpy port broke 0.02-3 % of blocks' float near-ties differently from the
    compiled C, which changes greedy output at the models' own near-ties (docs/convert.md has the numbers); their
    blocks are checked against the C transliteration above instead.
    """
    smol = tmp_path / "smollm2-f16.gguf"
    float_copy(bundled_file(*SMOL_FILE), smol)
    specs: list[dict[str, object]] = []
    want: dict[tuple[str, str, str], list[int]] = {}
    for model, src, n_predict in (("tiny-llama", tiny_f16, 16), ("smollm2-f16", smol, 24)):
        for qtype, prompts in NUMPY_PATH_TOKENS[model].items():
            out = tmp_path / f"{model}-{qtype}.gguf"
            quantize_gguf(src, out, qtype)
            for prompt, tokens in prompts.items():
                specs.append({"model": str(out), "prompt": prompt, "n_predict": n_predict})
                want[(model, qtype, prompt)] = tokens
    results = run_engines(specs)
    got = {key: result["completion"]["tokens"] for key, result in zip(want, results, strict=True)}
    differ = [key for key in want if got[key] != want[key]]
    assert not differ, f"greedy tokens differ from the numpy path's for {differ}"
