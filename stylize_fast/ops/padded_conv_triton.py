"""Triton kernels of the fused padded convolution: ``F.conv2d(F.pad(x, mode), w, b, stride)``
with the padding applied inside the kernels' loads, forward, input gradient and weight gradient.

Algorithm (implicit GEMM, ``tl.dot`` on tiles, fp32 accumulation; fp64 for float64 input)
----------------------------------------------------------------------------------------------
Per dimension, the padded coordinate ``q = o * stride + k`` read by output ``o`` and tap ``k``
is the unpadded ``i = q - pad``, mapped to a source row by the *padding index map*:
reflect ``i < 0 -> -i``, ``i >= H -> 2H - 2 - i``; replicate clamps; zeros masks the load.
No padded tensor is ever built.

* forward: ``M = (n, oh, ow)`` output pixels x ``N = c_out``, ``K = (kh, kw, c_in)``. For each
  tap the program gathers an ``[BLOCK_M, BLOCK_K]`` tile of ``x`` through the index map and
  multiplies it with the ``[BLOCK_K, BLOCK_N]`` slice ``w[:, :, kh, kw]``. Bias is added in the
  epilogue.
* input gradient: the transposed implicit GEMM, ``M = (n, h, w)`` input pixels x
  ``N = c_in``, ``K = (variant, kh, kw, c_out)``. An input pixel receives gradient from every
  padded coordinate the index map sends to it: itself (``i = h``) and, at the border, the
  mirrored or replicated coordinates ``i = -d`` / ``i = H - 1 + d`` (``d = 1..pad``). The program
  iterates over these *variants* per dimension, skipping any variant no pixel of its tile
  receives (a tile-wide test), so interior tiles do one pass and border tiles gather their
  reflected contributions themselves: each ``grad_input`` element is written once, by one
  program, in a fixed order — deterministic, no atomics, no zero-filled padded buffer.
  A border variant reads one coordinate for all its pixels, so only the taps that reach an
  output are visited (``_tap_range``); in the direct pass, for stride > 1, the taps that do not
  land on an output pixel are masked per pixel (they still cost their loads: ~stride² more
  tile work than necessary — a parity-split schedule would remove it).
* weight gradient: ``M = c_out`` x ``N = c_in`` for one tap per program, ``K = (n, oh, ow)``
  split into ``SPLIT`` contiguous ranges. Each program writes its fp32 partial
  ``[SPLIT, c_out, c_in, kh, kw]``; the host sums over ``SPLIT`` in a fixed order
  (deterministic). The bias gradient is summed from the same ``grad_output`` tiles.
* upsample (``UP`` > 1, nearest upsampling before the padding, folded): the kernels see the
  upsampled ("virtual") sizes; the forward and weight-gradient loads map a virtual source
  coordinate ``i`` to the stored pixel ``i // UP``; the input-gradient program of a stored
  pixel loops over the ``UP x UP`` virtual pixels that repeat it and sums their gathers in its
  accumulator, so no upsampled tensor (nor its gradient) is ever built.
* activation (``ACTIVATION`` = 1, relu): the forward clamps its accumulator in the store; both
  gradient kernels read ``grad_output`` through the mask ``output > 0`` (the forward's output,
  loaded with the same tile indices), so relu's backward costs no pass and no temporary.

NCHW, channels_last and other strided layouts are handled through strides (no copies); outputs
are written in ``input.suggest_memory_format()`` (the rule of ``F.conv2d``). float32 tiles are
multiplied with ``input_precision="ieee"`` (no TF32), so results meet float32 tolerances.

The ops ``stylize_fast::padded_conv2d_fwd_triton`` / ``..._bwd_triton`` have the schemas of the
compiled ``padded_conv2d_fwd`` / ``_bwd`` (csrc/ops.cpp) and the autograd of
``padded_conv.register_autograd``. On a GPU they are ``torch.library.triton_op``s (visible to
``torch.compile``); under ``TRITON_INTERPRET=1`` plain custom ops with an explicit fake, because
interpreted kernels need real data pointers and cannot be traced.

Bytes moved (activation-sized tensors, ``|x|`` input, ``|y|`` output, per call)
------------------------------------------------------------------------------
* eager forward ``F.pad`` + ``F.conv2d``: pad reads ``|x|`` and writes ``|x_pad|``, conv reads
  ``|x_pad|`` and writes ``|y|``: 2 launches, ~``3|x| + |y|`` (``|x_pad| ~ |x|``).
  This forward: 1 launch, reads ``|x|`` (through the cache, re-read per tap) and writes ``|y|``.
* eager backward: conv backward reads ``|gy|``, ``|x_pad|``, writes ``|g_x_pad|`` (plus a
  zero fill for stride > 1 in some libraries); pad backward zero-fills/reads ``|g_x_pad|`` and
  writes ``|gx|``: ~3-4 launches, ~``|gy| + 5|x|`` moved.
  This backward: 2 launches (input grad, weight grad) + one small host sum of the weight
  partials: the input-grad kernel reads ``|gy|`` and writes ``|gx|``; the weight-grad kernel
  reads ``|gy|`` and ``|x|``: ``2|gy| + 2|x|`` and no padded buffer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from .. import backends
from . import padded_conv
from .common import PaddingMode, output_memory_format
from .triton_op import define_op

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# --------------------------------------------------------------------------------------------
# Kernels


@triton.jit
def _source_index(i, size, MODE: tl.constexpr):
    """Padding index map: unpadded coordinate ``i`` -> (source index, valid)."""
    if MODE == 1:  # reflect (pad < size guaranteed by the caller)
        i = tl.where(i < 0, -i, i)
        i = tl.where(i >= size, 2 * size - 2 - i, i)
    if MODE == 2:  # replicate
        i = tl.minimum(tl.maximum(i, 0), size - 1)
    valid = (i >= 0) & (i < size)  # only zeros mode can be invalid
    return tl.where(valid, i, 0), valid


@triton.jit
def _variant(p, size, pad, v, MODE: tl.constexpr):
    """The ``v``-th unpadded coordinate mapped onto source pixel ``p`` by the index map:
    v = 0 is ``p`` itself; v = d in 1..pad the left border coordinate ``-d``; v = pad + d the
    right border coordinate ``size - 1 + d``. Returns (coordinate, whether it maps onto p)."""
    is_right = v > pad
    d = tl.where(is_right, v - pad, v)
    if MODE == 1:
        target = tl.where(is_right, size - 1 - d, d)
    else:
        target = tl.where(is_right, size - 1, 0)
    coord = tl.where(v == 0, p, tl.where(is_right, size - 1 + d, -d))
    return coord, (v == 0) | (p == target)


@triton.jit
def _relu_masked(g, o_ptr, offs, mask, ACTIVATION: tl.constexpr, UPCAST: tl.constexpr):
    """grad_output tile ``g`` through relu's mask: zero where the forward's output (read at
    ``o_ptr + offs``) is <= 0, as threshold_backward. UPCAST: see ``_mma``."""
    if ACTIVATION == 1:
        o = tl.load(o_ptr + offs, mask=mask, other=0.0)
        if UPCAST:
            o = o.to(tl.float32)
        g = tl.where(o <= 0, tl.zeros_like(g), g)
    return g


@triton.jit
def _mma(a, b, acc, UPCAST: tl.constexpr):
    """acc += a @ b. float32 without TF32. UPCAST multiplies in float32: Triton's interpreter
    stores bfloat16 as raw uint16 bits and its dot would multiply those."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision="ieee")


@triton.jit
def _tap_range(v, size, pad, K, STRIDE, OUT):
    """Taps ``range(lo, hi, step)`` worth visiting for variant ``v`` (see ``_variant``). A border
    variant reads one coordinate ``c`` for all its pixels, so exactly the taps ``k`` with
    ``c + pad - k = o * STRIDE``, ``0 <= o < OUT`` reach an output; the direct variant (v = 0)
    visits every tap and masks per pixel."""
    border = v > 0
    c = tl.where(v > pad, size - 1 + (v - pad), -v)
    lo = tl.maximum(c + pad - (OUT - 1) * STRIDE, 0)
    lo = lo + (c + pad - lo) % STRIDE
    hi = tl.minimum(c + pad, K - 1) + 1
    return tl.where(border, lo, 0), tl.where(border, hi, K), tl.where(border, STRIDE, 1)


@triton.jit
def _fwd_kernel(
    x_ptr, sxn, sxc, sxh, sxw,  # input (N, C_in, H, W)
    w_ptr, swo, swi, swh, sww,  # weight (C_out, C_in, KH, KW)
    b_ptr,  # bias (C_out,) or a dummy when HAS_BIAS is False
    y_ptr, syn, syc, syh, syw,  # output (N, C_out, OH, OW)
    N, C_in, H, W, C_out, OH, OW,
    STRIDE_H, STRIDE_W, PAD_H, PAD_W,
    KH: tl.constexpr, KW: tl.constexpr, MODE: tl.constexpr, HAS_BIAS: tl.constexpr,
    ACC_DTYPE: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ACTIVATION: tl.constexpr = 0,  # 1: relu in the store
    UP: tl.constexpr = 1,  # nearest upsampling folded into the loads (H, W: upsampled sizes)
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < N * OH * OW
    ow = offs_m % OW
    oh = (offs_m // OW) % OH
    n = (offs_m // (OW * OH)).to(tl.int64)
    co = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    co_mask = co < C_out
    offs_k = tl.arange(0, BLOCK_K)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for kh in range(KH):
        ih, vh = _source_index(oh * STRIDE_H + kh - PAD_H, H, MODE)
        if UP > 1:
            ih = ih // UP
        for kw in range(KW):
            iw, vw = _source_index(ow * STRIDE_W + kw - PAD_W, W, MODE)
            if UP > 1:
                iw = iw // UP
            row_mask = m_mask & vh & vw
            x_row = x_ptr + n * sxn + ih.to(tl.int64) * sxh + iw.to(tl.int64) * sxw
            w_tap = w_ptr + kh * swh + kw * sww
            for c0 in range(0, C_in, BLOCK_K):
                ci = c0 + offs_k
                ci_mask = ci < C_in
                a = tl.load(x_row[:, None] + ci[None, :] * sxc,
                            mask=row_mask[:, None] & ci_mask[None, :], other=0.0)
                b = tl.load(w_tap + ci[:, None] * swi + co[None, :] * swo,
                            mask=ci_mask[:, None] & co_mask[None, :], other=0.0)
                acc = _mma(a, b, acc, UPCAST)
    if HAS_BIAS:
        acc += tl.load(b_ptr + co, mask=co_mask, other=0.0).to(ACC_DTYPE)[None, :]
    if ACTIVATION == 1:
        acc = tl.where(acc < 0, 0.0, acc).to(ACC_DTYPE)  # NaN passes, as torch.relu
    y = y_ptr + n[:, None] * syn + co[None, :] * syc + (oh * syh + ow * syw)[:, None]
    tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=m_mask[:, None] & co_mask[None, :])


@triton.jit
def _bwd_input_kernel(
    gy_ptr, sgn, sgc, sgh, sgw,  # grad_output (N, C_out, OH, OW)
    w_ptr, swo, swi, swh, sww,  # weight (C_out, C_in, KH, KW)
    gx_ptr, sxn, sxc, sxh, sxw,  # grad_input (N, C_in, H, W)
    o_ptr, son, soc, soh, sow,  # forward output (N, C_out, OH, OW) when ACTIVATION, else dummy
    N, C_in, H, W, C_out, OH, OW,
    STRIDE_H, STRIDE_W, PAD_H, PAD_W,
    VARIANTS_H, VARIANTS_W,  # 1 + 2 * pad for reflect / replicate, 1 for zeros
    KH: tl.constexpr, KW: tl.constexpr, MODE: tl.constexpr, ACC_DTYPE: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ACTIVATION: tl.constexpr = 0,  # 1: grad_output read through relu's mask (output > 0)
    UP: tl.constexpr = 1,  # folded upsampling: H, W upsampled sizes; grad_input (H/UP, W/UP)
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    HS = H // UP
    WS = W // UP
    m_mask = offs_m < N * HS * WS
    ws = offs_m % WS  # the stored pixel this row of the tile computes
    hs = (offs_m // WS) % HS
    n = (offs_m // (WS * HS)).to(tl.int64)
    ci = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ci_mask = ci < C_in
    offs_k = tl.arange(0, BLOCK_K)
    gy_n = gy_ptr + n * sgn
    o_n = o_ptr + n * son

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    # The virtual pixels (h, w) that repeat it, each gathered as a pixel of the upsampled input.
    for sub in range(UP * UP):
        h = hs * UP + sub // UP
        w = ws * UP + sub % UP
        for v_h in range(VARIANTS_H):
            ih, ok_h = _variant(h, H, PAD_H, v_h, MODE)
            kh_lo, kh_hi, kh_step = _tap_range(v_h, H, PAD_H, KH, STRIDE_H, OH)
            for v_w in range(VARIANTS_W):
                iw, ok_w = _variant(w, W, PAD_W, v_w, MODE)
                kw_lo, kw_hi, kw_step = _tap_range(v_w, W, PAD_W, KW, STRIDE_W, OW)
                ok = m_mask & ok_h & ok_w
                # Border variants reach few pixels: skip the whole pass when none is in this tile.
                if tl.max(ok.to(tl.int32), axis=0) > 0:
                    for kh in range(kh_lo, kh_hi, kh_step):
                        th = ih + PAD_H - kh  # = oh * STRIDE_H when this tap reads coordinate ih
                        oh = th // STRIDE_H
                        ok_kh = (th >= 0) & (th % STRIDE_H == 0) & (oh < OH)
                        oh = tl.where(ok_kh, oh, 0)
                        for kw in range(kw_lo, kw_hi, kw_step):
                            tw = iw + PAD_W - kw
                            ow = tw // STRIDE_W
                            ok_kw = (tw >= 0) & (tw % STRIDE_W == 0) & (ow < OW)
                            ow = tl.where(ok_kw, ow, 0)
                            row_mask = ok & ok_kh & ok_kw
                            gy_row = gy_n + oh.to(tl.int64) * sgh + ow.to(tl.int64) * sgw
                            o_row = oh.to(tl.int64) * soh + ow.to(tl.int64) * sow
                            w_tap = w_ptr + kh * swh + kw * sww
                            for c0 in range(0, C_out, BLOCK_K):
                                co = c0 + offs_k
                                co_mask = co < C_out
                                a_mask = row_mask[:, None] & co_mask[None, :]
                                a = tl.load(gy_row[:, None] + co[None, :] * sgc, mask=a_mask,
                                            other=0.0)
                                a = _relu_masked(a, o_n[:, None],
                                                 o_row[:, None] + co[None, :] * soc, a_mask,
                                                 ACTIVATION, UPCAST)
                                b = tl.load(w_tap + co[:, None] * swo + ci[None, :] * swi,
                                            mask=co_mask[:, None] & ci_mask[None, :], other=0.0)
                                acc = _mma(a, b, acc, UPCAST)
    gx = gx_ptr + n[:, None] * sxn + ci[None, :] * sxc + (hs * sxh + ws * sxw)[:, None]
    tl.store(gx, acc.to(gx_ptr.dtype.element_ty), mask=m_mask[:, None] & ci_mask[None, :])


@triton.jit
def _bwd_weight_kernel(
    gy_ptr, sgn, sgc, sgh, sgw,  # grad_output (N, C_out, OH, OW)
    x_ptr, sxn, sxc, sxh, sxw,  # input (N, C_in, H, W)
    gw_ptr,  # weight partials (SPLIT, C_out, C_in, KH, KW), contiguous, ACC_DTYPE
    gb_ptr,  # bias partials (SPLIT, C_out), contiguous, ACC_DTYPE; dummy without BIAS_GRAD
    o_ptr, son, soc, soh, sow,  # forward output (N, C_out, OH, OW) when ACTIVATION, else dummy
    N, C_in, H, W, C_out, OH, OW,
    STRIDE_H, STRIDE_W, PAD_H, PAD_W,
    M_PER_SPLIT,  # rows of (n, oh, ow) reduced by one program, a multiple of BLOCK_K
    KH: tl.constexpr, KW: tl.constexpr, MODE: tl.constexpr, BIAS_GRAD: tl.constexpr,
    ACC_DTYPE: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ACTIVATION: tl.constexpr = 0,  # 1: grad_output read through relu's mask (output > 0)
    UP: tl.constexpr = 1,  # nearest upsampling folded into the loads (H, W: upsampled sizes)
):
    pid_co = tl.program_id(0)
    pid_1 = tl.program_id(1)  # (c_in tile, tap)
    pid_s = tl.program_id(2)
    tap = pid_1 % (KH * KW)
    kh = tap // KW
    kw = tap % KW
    co = pid_co * BLOCK_M + tl.arange(0, BLOCK_M)
    co_mask = co < C_out
    ci = (pid_1 // (KH * KW)) * BLOCK_N + tl.arange(0, BLOCK_N)
    ci_mask = ci < C_in
    total = N * OH * OW
    m_start = pid_s * M_PER_SPLIT
    m_end = tl.minimum(m_start + M_PER_SPLIT, total)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    bias_acc = tl.zeros((BLOCK_M,), dtype=ACC_DTYPE)
    for m0 in range(m_start, m_end, BLOCK_K):
        offs_m = m0 + tl.arange(0, BLOCK_K)
        m_mask = offs_m < m_end
        ow = offs_m % OW
        oh = (offs_m // OW) % OH
        n = (offs_m // (OW * OH)).to(tl.int64)
        gy_col = gy_ptr + n * sgn + oh.to(tl.int64) * sgh + ow.to(tl.int64) * sgw
        a_mask = co_mask[:, None] & m_mask[None, :]
        a = tl.load(gy_col[None, :] + co[:, None] * sgc, mask=a_mask, other=0.0)
        o_col = n * son + oh.to(tl.int64) * soh + ow.to(tl.int64) * sow
        a = _relu_masked(a, o_ptr, o_col[None, :] + co[:, None] * soc, a_mask, ACTIVATION, UPCAST)
        ih, vh = _source_index(oh * STRIDE_H + kh - PAD_H, H, MODE)
        iw, vw = _source_index(ow * STRIDE_W + kw - PAD_W, W, MODE)
        if UP > 1:
            ih = ih // UP
            iw = iw // UP
        x_row = x_ptr + n * sxn + ih.to(tl.int64) * sxh + iw.to(tl.int64) * sxw
        b = tl.load(x_row[:, None] + ci[None, :] * sxc,
                    mask=(m_mask & vh & vw)[:, None] & ci_mask[None, :], other=0.0)
        acc = _mma(a, b, acc, UPCAST)
        if BIAS_GRAD:
            bias_acc += tl.sum(a.to(ACC_DTYPE), axis=1)
    gw = (gw_ptr + (((pid_s * C_out + co[:, None]) * C_in + ci[None, :]) * KH + kh) * KW + kw)
    tl.store(gw, acc, mask=co_mask[:, None] & ci_mask[None, :])
    if BIAS_GRAD:
        # Every (c_in tile, tap) program saw the same grad_output; the first one writes.
        if pid_1 == 0:
            tl.store(gb_ptr + pid_s * C_out + co, bias_acc, mask=co_mask)


# --------------------------------------------------------------------------------------------
# Host side: shapes, block sizes, launches


def _pow2_block(size: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(int(size), 1))))


def _acc_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _upcast(dtype: torch.dtype) -> bool:
    return dtype == torch.bfloat16 and backends.triton_interpreted()


def _output_size(size: int, pad: int, k: int, stride: int) -> int:
    return (size + 2 * pad - k) // stride + 1


def supports(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
             stride: Sequence[int], padding: Sequence[int], padding_mode: int,
             upsample: int = 1) -> str | None:
    """Legality check for the ``triton`` backend: None if these kernels run this input (after
    ``upsample``, which ops/padded_conv.py applies first), else the reason. (Argument errors
    proper are raised by ``padded_conv.check_args`` before this.)"""
    if input.dtype not in _FLOAT_DTYPES:
        return f"dtype {input.dtype} is not supported (float16, bfloat16, float32, float64)"
    if weight.dtype != input.dtype or (bias is not None and bias.dtype != input.dtype):
        return "weight and bias must have the input's dtype"
    if input.dim() != 4 or weight.dim() != 4:
        return "input and weight must be 4-D"
    if weight.shape[1] != input.shape[1]:
        return "only groups=1 is supported (weight.shape[1] must equal input channels)"
    if input.device.type == "cpu" and not backends.triton_interpreted():
        return "CPU tensors need TRITON_INTERPRET=1"
    if weight.device != input.device or (bias is not None and bias.device != input.device):
        return "all tensors must be on the input's device"
    n, c, h, w = input.shape
    h, w = h * upsample, w * upsample
    oh = _output_size(h, int(padding[0]), weight.shape[2], int(stride[0]))
    ow = _output_size(w, int(padding[1]), weight.shape[3], int(stride[1]))
    # Pixel indices are int32 in the kernels (element offsets are int64).
    if max(n * c * h * w, weight.numel(), n * weight.shape[0] * oh * ow) >= 2**31:
        return "tensors of 2**31 or more elements are not supported"
    return None


def _geometry(input: torch.Tensor, weight: torch.Tensor, stride: Sequence[int],
              padding: Sequence[int], padding_mode: int, fn: str,
              upsample: int = 1) -> tuple[int, int, int, int]:
    """(stride_h, stride_w, pad_h, pad_w). The public arguments were checked, with user-facing
    messages, by padded_conv.check_args and the limits by :func:`supports`; this asserts only
    what the kernels rely on."""
    assert input.dim() == 4 and weight.dim() == 4 and weight.shape[1] == input.shape[1], \
        f"{fn}: input {tuple(input.shape)} and weight {tuple(weight.shape)} must be 4-D with " \
        f"weight.shape[1] equal to the input's channels"
    (sh, sw), (ph, pw), mode = (int(s) for s in stride), (int(p) for p in padding), int(padding_mode)
    assert sh >= 1 and sw >= 1 and ph >= 0 and pw >= 0, f"{fn}: stride {list(stride)}, padding " \
        f"{list(padding)}"
    assert mode in tuple(PaddingMode), f"{fn}: padding_mode must be a code, got {padding_mode}"
    assert int(upsample) >= 1, f"{fn}: upsample must be >= 1, got {upsample}"
    h, w = input.shape[2] * upsample, input.shape[3] * upsample
    assert mode != PaddingMode.REFLECT or (ph < h and pw < w), \
        f"{fn}: reflect padding {list(padding)} must be smaller than the input ({h}, {w})"
    assert h + 2 * ph >= weight.shape[2] and w + 2 * pw >= weight.shape[3], \
        f"{fn}: padded input ({h + 2 * ph}, {w + 2 * pw}) is smaller than the kernel"
    return sh, sw, ph, pw


def _activation(activation: int, fn: str) -> int:
    assert int(activation) in (0, 1), f"{fn}: activation must be 0 (none) or 1 (relu), got " \
        f"{activation}"
    return int(activation)


def _fwd_blocks(dtype: torch.dtype, c_in: int, c_out: int) -> tuple[int, int, int, int]:
    # tl.dot needs tiles >= 16 in every dimension; float64 tiles are halved in size to keep
    # registers in bounds.
    big = 32 if dtype == torch.float64 else 64
    return big, _pow2_block(c_out, 16, big), _pow2_block(c_in, 16, 32), 4


def _padded_conv2d_fwd(input: torch.Tensor, weight: torch.Tensor,
                             bias: torch.Tensor | None, stride: Sequence[int],
                             padding: Sequence[int], padding_mode: int,
                             activation: int = 0, upsample: int = 1) -> torch.Tensor:
    """input ``(N, C_in, H, W)``, weight ``(C_out, C_in, KH, KW)``, bias ``(C_out,)`` or None
    -> ``(N, C_out, OH, OW)`` in ``input.suggest_memory_format()``, relu'd for activation 1; the
    input upsampled ``upsample`` times (nearest) in the loads."""
    up = int(upsample)
    sh, sw, ph, pw = _geometry(input, weight, stride, padding, padding_mode,
                               "padded_conv2d_fwd_triton", up)
    n, c_in, h, w = input.shape
    h, w = h * up, w * up
    c_out, _, kh, kw = weight.shape
    oh, ow = _output_size(h, ph, kh, sh), _output_size(w, pw, kw, sw)
    out = torch.empty((n, c_out, oh, ow), dtype=input.dtype, device=input.device,
                      memory_format=output_memory_format(input))
    if out.numel() == 0:
        return out
    bm, bn, bk, warps = _fwd_blocks(input.dtype, c_in, c_out)
    grid = (triton.cdiv(n * oh * ow, bm), triton.cdiv(c_out, bn))
    torch.library.wrap_triton(_fwd_kernel)[grid](
        input, *input.stride(), weight, *weight.stride(),
        bias if bias is not None else weight,
        out, *out.stride(),
        n, c_in, h, w, c_out, oh, ow, sh, sw, ph, pw,
        KH=kh, KW=kw, MODE=int(padding_mode), HAS_BIAS=bias is not None,
        ACC_DTYPE=_acc_dtype(input.dtype), UPCAST=_upcast(input.dtype),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
        ACTIVATION=_activation(activation, "padded_conv2d_fwd_triton"), UP=up,
        num_warps=warps)
    return out


def _weight_splits(total: int, block_k: int, base_programs: int) -> int:
    """How many ranges of (n, oh, ow) the weight gradient is split into: enough programs to fill
    a GPU (~2 waves of 132 SMs), each reducing at least 4 tiles. Fixed by the shapes alone, so
    the reduction order (and result) is the same run to run."""
    tiles = triton.cdiv(total, block_k)
    want = max(1, triton.cdiv(264, base_programs))
    return max(1, min(want, triton.cdiv(tiles, 4), 256))


def _padded_conv2d_bwd(grad_output: torch.Tensor, input: torch.Tensor,
                             weight: torch.Tensor, stride: Sequence[int],
                             padding: Sequence[int], padding_mode: int,
                             output_mask: Sequence[bool], output: torch.Tensor | None = None,
                             activation: int = 0, upsample: int = 1
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """grad_output ``(N, C_out, OH, OW)`` -> (grad_input ``(N, C_in, H, W)``, grad_weight
    ``(C_out, C_in, KH, KW)``, grad_bias ``(C_out,)``); unrequested ones are empty ``(0,)``.
    With activation 1 (relu) grad_output is read through the mask ``output > 0`` in the
    kernels' loads (``output``: the forward's result). With ``upsample`` the input is read
    upsampled (nearest) and grad_input is the small input's."""
    fn = "padded_conv2d_bwd_triton"
    up = int(upsample)
    sh, sw, ph, pw = _geometry(input, weight, stride, padding, padding_mode, fn, up)
    n, c_in, h, w = input.shape
    h, w = h * up, w * up
    c_out, _, kh, kw = weight.shape
    oh, ow = _output_size(h, ph, kh, sh), _output_size(w, pw, kw, sw)
    assert tuple(grad_output.shape) == (n, c_out, oh, ow), \
        f"{fn}: grad_output must have shape {(n, c_out, oh, ow)}, got {tuple(grad_output.shape)}"
    assert len(output_mask) == 3, f"{fn}: output_mask must have 3 elements, got {list(output_mask)}"
    act = _activation(activation, fn)
    if act:
        assert output is not None and tuple(output.shape) == tuple(grad_output.shape), \
            f"{fn}: with an activation, output (the forward's result) of grad_output's shape " \
            f"{tuple(grad_output.shape)} is needed, got " \
            f"{None if output is None else tuple(output.shape)}"
    # Without an activation the kernels never read the output: any tensor stands in.
    out_t = output if act else grad_output
    mode = int(padding_mode)
    acc = _acc_dtype(input.dtype)
    acc_torch = torch.float64 if input.dtype == torch.float64 else torch.float32
    # Three distinct (0,) tensors: outputs of a custom op may not alias each other.
    grad_input, grad_weight, grad_bias = (input.new_empty((0,)) for _ in range(3))

    if output_mask[0]:
        grad_input = torch.empty_like(input, memory_format=output_memory_format(input))
        if grad_input.numel() > 0:
            bm, bn, bk, warps = _fwd_blocks(input.dtype, c_out, c_in)
            variants_h = 1 + 2 * ph if mode != PaddingMode.ZEROS else 1
            variants_w = 1 + 2 * pw if mode != PaddingMode.ZEROS else 1
            grid = (triton.cdiv(n * (h // up) * (w // up), bm), triton.cdiv(c_in, bn))
            torch.library.wrap_triton(_bwd_input_kernel)[grid](
                grad_output, *grad_output.stride(), weight, *weight.stride(),
                grad_input, *grad_input.stride(), out_t, *out_t.stride(),
                n, c_in, h, w, c_out, oh, ow, sh, sw, ph, pw, variants_h, variants_w,
                KH=kh, KW=kw, MODE=mode, ACC_DTYPE=acc, UPCAST=_upcast(input.dtype),
                BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, ACTIVATION=act, UP=up,
                num_warps=warps)

    if output_mask[1] or output_mask[2]:
        big = 32 if input.dtype == torch.float64 else 64
        bm, bn, bk = _pow2_block(c_out, 16, big), _pow2_block(c_in, 16, big), 32
        total = n * oh * ow
        base = triton.cdiv(c_out, bm) * triton.cdiv(c_in, bn) * kh * kw
        split = _weight_splits(total, bk, base) if total > 0 else 1
        m_per_split = triton.cdiv(triton.cdiv(max(total, 1), split), bk) * bk
        split = triton.cdiv(max(total, 1), m_per_split)
        weight_part = torch.empty((split, c_out, c_in, kh, kw), dtype=acc_torch,
                                  device=input.device)
        bias_part = torch.empty((split, c_out), dtype=acc_torch, device=input.device)
        grid = (triton.cdiv(c_out, bm), triton.cdiv(c_in, bn) * kh * kw, split)
        torch.library.wrap_triton(_bwd_weight_kernel)[grid](
            grad_output, *grad_output.stride(), input, *input.stride(),
            weight_part, bias_part, out_t, *out_t.stride(),
            n, c_in, h, w, c_out, oh, ow, sh, sw, ph, pw, m_per_split,
            KH=kh, KW=kw, MODE=mode, BIAS_GRAD=bool(output_mask[2]), ACC_DTYPE=acc,
            UPCAST=_upcast(input.dtype),
            BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, ACTIVATION=act, UP=up, num_warps=4)
        if output_mask[1]:
            grad_weight = weight_part.sum(0).to(weight.dtype)
        if output_mask[2]:
            grad_bias = bias_part.sum(0).to(weight.dtype)
    return grad_input, grad_weight, grad_bias


def compile_report(capability: int = 90,
                   dtypes: Sequence[torch.dtype] = _FLOAT_DTYPES,
                   modes: Sequence[int] = (PaddingMode.REFLECT,)) -> list[dict]:
    """Compile the three kernels ahead of time for ``sm_<capability>`` without a GPU (Triton's
    bundled ptxas) with the largest tiles the launchers pick (C_in, C_out >= 64) and a 3x3
    kernel, and return one row per kernel: registers, stack, local (spill) and shared bytes from
    ``cuobjdump -res-usage`` (``triton_compile_report``).

    Needs compiled (not interpreted) kernels: run it in a process without TRITON_INTERPRET=1.
    """
    from . import triton_compile_report as report

    report.require_compiled("compile_report")
    type_names = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16",
                  torch.float64: "fp64"}
    partial_ptrs = ("gw_ptr", "gb_ptr")  # weight / bias partials, in the accumulation type
    rows = []
    for dtype, mode in ((d, m) for d in dtypes for m in modes):
        io = type_names[dtype]
        acc = "fp64" if dtype == torch.float64 else "fp32"
        big = 32 if dtype == torch.float64 else 64
        bm, bn, bk, warps = _fwd_blocks(dtype, 1 << 16, 1 << 16)
        common = dict(KH=3, KW=3, MODE=int(mode), ACC_DTYPE=_acc_dtype(dtype), UPCAST=False,
                      BLOCK_N=bn, BLOCK_K=bk, ACTIVATION=0)
        kernels = [
            (_fwd_kernel, dict(common, BLOCK_M=bm, HAS_BIAS=True), warps),
            (_bwd_input_kernel, dict(common, BLOCK_M=bm), warps),
            (_bwd_weight_kernel, dict(common, BLOCK_M=big, BLOCK_N=big, BLOCK_K=32,
                                      BIAS_GRAD=True), 4),
        ]
        for kernel, constexprs, num_warps in kernels:
            sig = report.signature(
                kernel, constexprs,
                pointer_type=lambda name, io=io, acc=acc: acc if name in partial_ptrs else io)
            rows.append(dict(kernel=kernel.__name__, dtype=str(dtype).removeprefix("torch."),
                             mode=PaddingMode(mode).name.lower(), arch=f"sm_{capability}",
                             block=f"{constexprs['BLOCK_M']}x{constexprs['BLOCK_N']}x"
                                   f"{constexprs['BLOCK_K']}",
                             num_warps=num_warps,
                             **report.kernel_resources(kernel, sig, constexprs, capability,
                                                       num_warps)))
    return rows


# Schemas as declared for the compiled ops in csrc/ops.cpp.
_FWD_SCHEMA = ("(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, "
               "int padding_mode, int activation=0, int upsample=1) -> Tensor")
_BWD_SCHEMA = ("(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, int[2] padding, "
               "int padding_mode, bool[3] output_mask, Tensor? output=None, int activation=0, "
               "int upsample=1) -> (Tensor grad_input, Tensor grad_weight, Tensor grad_bias)")


padded_conv2d_fwd_triton = define_op("stylize_fast::padded_conv2d_fwd_triton",
                                     _padded_conv2d_fwd, padded_conv.fake_forward, _FWD_SCHEMA)
padded_conv2d_bwd_triton = define_op("stylize_fast::padded_conv2d_bwd_triton",
                                     _padded_conv2d_bwd, padded_conv.fake_backward, _BWD_SCHEMA)
padded_conv.register_autograd(padded_conv2d_fwd_triton, padded_conv2d_bwd_triton)
backends.register(padded_conv.OP, "triton", torch.ops.stylize_fast.padded_conv2d_fwd_triton,
                  devices=("cuda", "cpu"), supports=supports)
