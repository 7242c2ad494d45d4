"""K-quant quantization (Q2_K ... Q6_K) in vectorized numpy, ported from llama.cpp's reference quantizers.

The ``gguf`` package dequantizes every K-quant but quantizes none of them. These functions follow
``quantize_row_q{2,3,4,5,6}_K_ref`` in ggml-quants.c step by step (the same scale searches, the same float32
arithmetic, the same round-half-to-even ``nearest_int``, the same bit packing), but run each step over all
sub-blocks of a chunk at once instead of looping per block, so a chunk of a million weights takes a few dozen numpy
passes. Each function takes ``(n_blocks, 256)`` float32 rows and returns ``(n_blocks, type_size)`` uint8 blocks
that ``gguf.quants.dequantize`` and the engine read.

Where llama.cpp leaves a sub-block's quants untouched because its scale rounded to zero, the dequantized values do
not depend on those quants; here they are set to a fixed value, which changes bytes but never a dequantized weight.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

QK_K = 256
GROUP_MAX_EPS = np.float32(1e-15)

F32 = np.float32
Array = npt.NDArray[Any]


def _rowsum(a: Array) -> Array:
    """Row sums of a 2-D float32 array (einsum is ~3x faster than ``sum(axis=1)`` on short rows)."""
    return np.einsum("ij->i", a)


def _rowdot(a: Array, b: Array) -> Array:
    """Row-wise dot products, without materializing ``a * b``."""
    return np.einsum("ij,ij->i", a, b)


def _f16_round(values: Array) -> tuple[Array, Array]:
    """(fp16 bytes, the float32 value they decode to): ``GGML_FP32_TO_FP16`` then back, as ggml stores scales."""
    half = values.astype(np.float16)
    return half.view(np.uint8).reshape(*values.shape, 2), half.astype(F32)


def _rint(values: Array) -> Array:
    """``nearest_int``: round half to even in float32 (the 1.5 * 2**23 trick does exactly this)."""
    return np.rint(values)


def _safe_div(num: Array, den: Array) -> Array:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.where(den != 0, num / np.where(den != 0, den, 1), 0).astype(F32)


def _make_qkx2(
    x: Array, w: Array, nmax: int, rmin: float, rdelta: float, nstep: int, use_mad: bool
) -> tuple[Array, Array]:
    """``make_qkx2_quants`` over rows: the (scale, -min) pair of an asymmetric ``nmax``-level fit per row.

    Starts from the min/max fit, then tries ``nstep + 1`` slightly different scales, each followed by a weighted
    least-squares refit of scale and offset, and keeps the one with the lowest weighted error (squared, or absolute
    when ``use_mad``). Like the C code, every trial starts from the offset of the best fit so far.
    """
    nmax_f = F32(nmax)
    xmin = np.minimum(x.min(axis=1), F32(0))
    xmax = x.max(axis=1)
    sum_w = _rowsum(w)
    sum_x = _rowdot(w, x)
    flat = xmax == xmin

    def err(scale: Array, offset: Array, q: Array) -> Array:
        diff = scale[:, None] * q
        diff += offset[:, None]
        diff -= x
        if use_mad:
            return _rowdot(w, np.abs(diff))
        return _rowdot(w * diff, diff)

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rng = np.where(flat, F32(1), xmax - xmin)
        iscale = nmax_f / rng
        scale = (F32(1) / iscale).astype(F32)
        q = np.clip(_rint(iscale[:, None] * (x - xmin[:, None])), 0, nmax).astype(F32)
        best = err(scale, xmin, q)
        cur_min = xmin
        for step in range(nstep + 1):
            span = xmax - cur_min
            valid = span > 0
            iscale = ((F32(rmin) + F32(rdelta) * F32(step) + nmax_f) / np.where(valid, span, F32(1))).astype(F32)
            q = np.subtract(x, cur_min[:, None])
            q *= iscale[:, None]
            np.rint(q, out=q)
            np.clip(q, 0, nmax, out=q)
            wq = w * q
            sum_l = _rowsum(wq)
            sum_l2 = _rowdot(wq, q)
            sum_xl = _rowdot(wq, x)
            det = sum_w * sum_l2 - sum_l * sum_l
            ok = valid & (det > 0)
            safe_det = np.where(ok, det, F32(1))
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / safe_det
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / safe_det
            positive = this_min > 0
            this_min = np.where(positive, F32(0), this_min)
            this_scale = np.where(positive, _safe_div(sum_xl, sum_l2), this_scale).astype(F32)
            cur = err(this_scale, this_min, q)
            better = ok & (cur < best)
            best = np.where(better, cur, best)
            scale = np.where(better, this_scale, scale)
            cur_min = np.where(better, this_min, cur_min).astype(F32)
    scale = np.where(flat, F32(0), scale).astype(F32)
    return scale, (-cur_min).astype(F32)


def _signed_absmax(x: Array) -> tuple[Array, Array]:
    """Per row: the largest |x| and the signed value that has it (the first one, as the C loops find it)."""
    idx = np.abs(x).argmax(axis=1)
    value = np.take_along_axis(x, idx[:, None], axis=1)[:, 0]
    return np.abs(value), value


def _make_qx_rmse1(x: Array, nmax: int) -> Array:
    """``make_qx_quants(n, nmax, x, L, rmse_type=1, NULL)`` over rows: the symmetric scale with weights x**2.

    Tries 19 scales around ``-nmax / max`` and keeps the one with the best weighted least-squares fit.
    """
    amax, maxv = _signed_absmax(x)
    zero = amax < GROUP_MAX_EPS
    safe_max = np.where(zero, F32(1), maxv)
    w = x * x

    def fit(iscale: Array) -> tuple[Array, Array]:
        q = np.clip(_rint(iscale[:, None] * x), -nmax, nmax - 1).astype(F32)
        wq = w * q
        return _rowdot(wq, x), _rowdot(wq, q)

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        sumlx, suml2 = fit((F32(-nmax) / safe_max).astype(F32))
        scale = _safe_div(sumlx, suml2)
        best = scale * sumlx
        for step in range(-9, 10):
            if step == 0:
                continue
            sumlx, suml2 = fit((-(F32(nmax) + F32(0.1) * F32(step)) / safe_max).astype(F32))
            better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
            scale = np.where(better, _safe_div(sumlx, suml2), scale)
            best = np.where(better, scale * sumlx, best).astype(F32)
    return np.where(zero, F32(0), scale).astype(F32)


def _make_q3(x: Array, nmax: int) -> Array:
    """``make_q3_quants(n, nmax, x, L, do_rmse=true)`` over rows: a symmetric fit refined by coordinate descent.

    The C code revisits one weight at a time (each change updates the running sums the next weight sees); that
    order is kept, column by column, for all rows at once (on the transposed block, so each column is contiguous).
    A row whose pass changed nothing would change nothing again, so running every row for the same number of
    passes gives the same result as the per-row early exit.
    """
    amax, maxv = _signed_absmax(x)
    zero = amax < GROUP_MAX_EPS
    safe_max = np.where(zero, F32(1), maxv)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        q = np.clip(_rint((F32(-nmax) / safe_max)[:, None] * x), -nmax, nmax - 1).astype(F32)
        w = x * x
        sumlx = _rowdot(w * x, q)
        suml2 = _rowdot(w * q, q)
        xt, wt, qt = np.ascontiguousarray(x.T), np.ascontiguousarray(w.T), np.ascontiguousarray(q.T)
        wxt = wt * xt
        for _ in range(5):
            changed = np.zeros(x.shape[0], dtype=bool)
            for i in range(x.shape[1]):
                xi, wi, wxi, li = xt[i], wt[i], wxt[i], qt[i]
                slx = sumlx - wxi * li
                sl2 = suml2 - wi * li * li
                cand = slx > 0
                new_l = np.clip(_rint(xi * sl2 / np.where(cand, slx, F32(1))), -nmax, nmax - 1).astype(F32)
                cand &= new_l != li
                slx_new = slx + wxi * new_l
                sl2_new = sl2 + wi * new_l * new_l
                cand &= (sl2_new > 0) & (slx_new * slx_new * suml2 > sumlx * sumlx * sl2_new)
                qt[i] = np.where(cand, new_l, li)
                sumlx = np.where(cand, slx_new, sumlx)
                suml2 = np.where(cand, sl2_new, suml2)
                changed |= cand
            if not changed.any():
                break
    return np.where(zero, F32(0), _safe_div(sumlx, suml2)).astype(F32)


def _pack_2bit(q: Array) -> Array:
    """Four 2-bit values per byte: byte l of each 128-weight half holds weights l, l+32, l+64, l+96."""
    n = q.shape[0]
    q = q.astype(np.uint8).reshape(n, 2, 4, 32)
    return (q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)).reshape(n, 64)


def _pack_scales_k4(ls: Array, lm: Array) -> Array:
    """The 12-byte 6-bit scale/min packing of Q4_K and Q5_K (``get_scale_min_k4`` reads it back)."""
    out = np.empty((ls.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = ls[:, 0:4] | ((ls[:, 4:8] >> 4) << 6)
    out[:, 4:8] = lm[:, 0:4] | ((lm[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    return out


def _requantize_asym(x: Array, d_sub: Array, m_sub: Array, nmax: int) -> Array:
    """The final quants of an asymmetric K-quant: ``clamp(nearest_int((x + m) / d), 0, nmax)`` per sub-block."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        q = _rint((x + m_sub[..., None]) / np.where(d_sub != 0, d_sub, F32(1))[..., None])
    return np.where(d_sub[..., None] != 0, np.clip(q, 0, nmax), 0).astype(np.uint8)


def _q45_k(blocks: Array, nmax: int, rmin: float, rdelta: float, nstep: int) -> tuple[Array, Array, Array, Array]:
    """The shared part of Q4_K and Q5_K: per 32-weight sub-block scale/min, 6-bit packed, and the quants."""
    nb = blocks.shape[0]
    x = blocks.reshape(nb * 8, 32)
    av_x = np.sqrt(_rowdot(x, x) / F32(32))
    w = av_x[:, None] + np.abs(x)
    scales, mins = _make_qkx2(x, w, nmax, rmin, rdelta, nstep, use_mad=False)
    scales, mins = scales.reshape(nb, 8), mins.reshape(nb, 8)
    max_scale = np.maximum(scales.max(axis=1), F32(0))
    max_min = np.maximum(mins.max(axis=1), F32(0))
    inv_scale = _safe_div(np.full_like(max_scale, 63), max_scale)
    inv_min = _safe_div(np.full_like(max_min, 63), max_min)
    # uint8_t ls = nearest_int(...); ls = MIN(63, ls): the C cast wraps before the clamp.
    ls = np.minimum(_rint(inv_scale[:, None] * scales).astype(np.int64) & 0xFF, 63).astype(np.uint8)
    lm = np.minimum(_rint(inv_min[:, None] * mins).astype(np.int64) & 0xFF, 63).astype(np.uint8)
    d_bytes, d = _f16_round((max_scale / F32(63)).astype(F32))
    dmin_bytes, dmin = _f16_round((max_min / F32(63)).astype(F32))
    d_sub = (d[:, None] * ls.astype(F32)).astype(F32)
    m_sub = (dmin[:, None] * lm.astype(F32)).astype(F32)
    q = _requantize_asym(blocks.reshape(nb, 8, 32), d_sub, m_sub, nmax).reshape(nb, QK_K)
    head = np.concatenate([d_bytes, dmin_bytes, _pack_scales_k4(ls, lm)], axis=1)
    return head, q, d, dmin


def quantize_q4_k(blocks: Array) -> Array:
    """``quantize_row_q4_K_ref``: 8 sub-blocks of 32 with 6-bit scales and mins, 4-bit quants (144 bytes)."""
    head, q, _, _ = _q45_k(blocks, 15, -1.0, 0.1, 20)
    nb = blocks.shape[0]
    q = q.reshape(nb, 4, 2, 32)
    qs = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(nb, 128)
    return np.concatenate([head, qs], axis=1)


def quantize_q5_k(blocks: Array) -> Array:
    """``quantize_row_q5_K_ref``: as Q4_K with 5-bit quants, the fifth bits in a 32-byte mask (176 bytes)."""
    head, q, _, _ = _q45_k(blocks, 31, -0.5, 0.1, 15)
    nb = blocks.shape[0]
    q = q.reshape(nb, 4, 2, 32)
    low = q & 0xF
    ql = (low[:, :, 0] | (low[:, :, 1] << 4)).reshape(nb, 128)
    high = (q >> 4).astype(np.uint8)  # (nb, 4, 2, 32): bit 2k+j of qh[l] is the fifth bit of weight 64k + 32j + l
    shifts = (2 * np.arange(4, dtype=np.uint8)[:, None] + np.arange(2, dtype=np.uint8)[None, :])[None, :, :, None]
    qh = np.bitwise_or.reduce((high << shifts).reshape(nb, 8, 32), axis=1).astype(np.uint8)
    return np.concatenate([head, qh, ql], axis=1)


def quantize_q6_k(blocks: Array) -> Array:
    """``quantize_row_q6_K_ref``: 16 sub-blocks of 16 with int8 scales, 6-bit quants (210 bytes)."""
    nb = blocks.shape[0]
    x = blocks.reshape(nb, 16, 16)
    scales = _make_qx_rmse1(x.reshape(nb * 16, 16), 32).reshape(nb, 16)
    max_abs, max_scale = _signed_absmax(scales)
    empty = max_abs < GROUP_MAX_EPS
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iscale = (F32(-128) / np.where(empty, F32(1), max_scale)).astype(F32)
        d_bytes, d = _f16_round((F32(1) / iscale).astype(F32))
    sc = np.minimum(_rint(iscale[:, None] * scales), 127).astype(np.int8)
    d_sub = (d[:, None] * sc.astype(F32)).astype(F32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        q = _rint(x / np.where(d_sub != 0, d_sub, F32(1))[..., None])
    q = np.where(d_sub[..., None] != 0, np.clip(q, -32, 31) + 32, 32).astype(np.uint8).reshape(nb, 2, 4, 32)
    # ql: per 128-weight half, bytes 0..31 hold weights l | l+64 << 4, bytes 32..63 hold l+32 | l+96 << 4.
    low = q & 0xF
    ql = np.concatenate([low[:, :, 0] | (low[:, :, 2] << 4), low[:, :, 1] | (low[:, :, 3] << 4)], axis=2)
    hi = q >> 4
    qh = hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)
    out = np.concatenate([ql.reshape(nb, 128), qh.reshape(nb, 64), sc.view(np.uint8), d_bytes], axis=1)
    out[empty] = 0
    return out


def quantize_q3_k(blocks: Array) -> Array:
    """``quantize_row_q3_K_ref``: 16 sub-blocks of 16 with 6-bit signed scales, 3-bit quants (110 bytes)."""
    nb = blocks.shape[0]
    x = blocks.reshape(nb, 16, 16)
    scales = _make_q3(x.reshape(nb * 16, 16), 4).reshape(nb, 16)
    _, max_scale = _signed_absmax(scales)
    has = max_scale != 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iscale = (F32(-32) / np.where(has, max_scale, F32(1))).astype(F32)
        d_bytes, d = _f16_round(np.where(has, F32(1) / iscale, F32(0)).astype(F32))
    ls = np.where(has[:, None], np.clip(_rint(iscale[:, None] * scales), -32, 31) + 32, 0).astype(np.uint8)
    packed = np.empty((nb, 12), dtype=np.uint8)
    packed[:, 0:8] = (ls[:, 0:8] & 0xF) | ((ls[:, 8:16] & 0xF) << 4)
    high = ((ls >> 4) & 3).reshape(nb, 4, 4)  # [group j // 4, byte j % 4]
    packed[:, 8:12] = high[:, 0] | (high[:, 1] << 2) | (high[:, 2] << 4) | (high[:, 3] << 6)
    sc = np.where(has[:, None], ls.astype(F32) - F32(32), F32(0))
    d_sub = (d[:, None] * sc).astype(F32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        q = _rint(x / np.where(d_sub != 0, d_sub, F32(1))[..., None])
    q = np.where(d_sub[..., None] != 0, np.clip(q, -4, 3) + 4, 4).astype(np.uint8).reshape(nb, QK_K)
    hbit = q > 3
    q = np.where(hbit, q - 4, q).astype(np.uint8)
    shifts = np.arange(8, dtype=np.uint8)[None, :, None]
    hmask = np.bitwise_or.reduce(hbit.reshape(nb, 8, 32).astype(np.uint8) << shifts, axis=1).astype(np.uint8)
    return np.concatenate([hmask, _pack_2bit(q), packed, d_bytes], axis=1)


def quantize_q2_k(blocks: Array) -> Array:
    """``quantize_row_q2_K_ref``: 16 sub-blocks of 16 with 4-bit scales and mins, 2-bit quants (84 bytes)."""
    nb = blocks.shape[0]
    x = blocks.reshape(nb * 16, 16)
    scales, mins = _make_qkx2(x, np.abs(x), 3, -0.5, 0.1, 15, use_mad=True)
    scales, mins = scales.reshape(nb, 16), mins.reshape(nb, 16)
    max_scale = np.maximum(scales.max(axis=1), F32(0))
    max_min = np.maximum(mins.max(axis=1), F32(0))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ls = np.where(max_scale[:, None] > 0, _rint(_safe_div(np.full_like(max_scale, 15), max_scale)[:, None]
                                                     * scales), 0).astype(np.int64) & 0xFF
        lm = np.where(max_min[:, None] > 0, _rint(_safe_div(np.full_like(max_min, 15), max_min)[:, None]
                                                   * mins), 0).astype(np.int64) & 0xFF
    packed = (ls | (lm << 4)).astype(np.uint8)
    d_bytes, d = _f16_round(np.where(max_scale > 0, max_scale / F32(15), F32(0)).astype(F32))
    dmin_bytes, dmin = _f16_round(np.where(max_min > 0, max_min / F32(15), F32(0)).astype(F32))
    d_sub = (d[:, None] * (packed & 0xF).astype(F32)).astype(F32)
    m_sub = (dmin[:, None] * (packed >> 4).astype(F32)).astype(F32)
    q = _requantize_asym(blocks.reshape(nb, 16, 16), d_sub, m_sub, 3).reshape(nb, QK_K)
    return np.concatenate([packed, _pack_2bit(q), d_bytes, dmin_bytes], axis=1)


KQUANTIZERS = {
    "Q2_K": quantize_q2_k,
    "Q3_K": quantize_q3_k,
    "Q4_K": quantize_q4_k,
    "Q5_K": quantize_q5_k,
    "Q6_K": quantize_q6_k,
}
