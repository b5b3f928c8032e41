"""Triton kernels for fused instance norm + activation (forward and backward).

Layout of this file: ``@triton.jit`` kernels (and their ``@triton.jit`` helpers) first, then the
host functions :func:`instance_norm_forward` / :func:`instance_norm_backward` that allocate the
outputs, choose the schedule and launch, then the op registration
(``stylize_fast::instance_norm_fwd_triton`` / ``stylize_fast::instance_norm_bwd_triton``, same
arguments as the compiled ``instance_norm_fwd`` / ``instance_norm_bwd`` of csrc/ops.cpp).

Tiles. Every kernel works on 2-D tiles ``[BLOCK_HW, BLOCK_C]`` of one sample: ``BLOCK_HW``
spatial positions by ``BLOCK_C`` channels, addressed through the strides, so NCHW
(``BLOCK_C = 1``, a plane is contiguous) and channels_last (``BLOCK_C`` up to
``CHANNELS_LAST_BLOCK_C`` neighbouring channels, so a tile row is one contiguous run) are both
read coalesced without a layout copy. A "channel group" is the ``BLOCK_C`` planes one program
owns; there are ``N * cdiv(C, BLOCK_C)`` groups.

Schedules (:func:`choose_schedule`, thresholds are the module constants below):

* ``one_pass``: the whole group fits in registers (``next_pow2(H*W) * BLOCK_C <=
  ONE_PASS_MAX_ELEMENTS``): one program per group loads it once, computes centred statistics
  from registers and writes the output.
* ``looped``: larger planes, enough groups to fill the GPU (``>= SPLIT_BELOW_GROUPS``): one program
  per group; a statistics loop over chunks of ``LOOP_CHUNK_ELEMENTS`` (per-chunk centred moments
  merged with Chan et al.'s formula), then an apply loop.
* ``split``: larger planes and few groups (batch 1, C = 32, 1024^2): each plane is split into
  ``S`` segments, one program each (about ``SPLIT_TARGET_PROGRAMS`` in all, ``S <= SPLIT_MAX``):
  partial moments -> finalize (Chan merge of the ``S`` partials per (n, c)) -> apply.

Variance is always centred (chunk-local mean, then exact parallel merge), never E[x^2]-E[x]^2.

Bytes-moved model. ``A`` = one activation-sized tensor (N*C*H*W elements) read (R) or written
(W); statistics, partials, weight and bias are O(N*C) and not counted.

=========  ==================================  ==================================================
schedule   forward                             backward (dx, dgamma, dbeta)
=========  ==================================  ==================================================
one_pass   1 R (x) + 1 W (y); 1 launch          2 R (x, dy) + 1 W (dx); 1 launch
looped     2 R (x twice) + 1 W; 1 launch        4 R (x, dy twice) + 1 W; 1 launch
split      2 R + 1 W; 3 launches                4 R + 1 W; 2 launches + 1 O(N*C*S) torch sum
           (partial stats, finalize, apply)     (partial sums, [sum over S], dx)
=========  ==================================  ==================================================

dgamma/dbeta for a ``(C,)`` weight/bias add one O(N*C) ``torch.sum`` over the batch (fixed order,
no atomics). Without ``output_mask[0]`` the dx pass is skipped: backward is then 2 R, 0 W.

The eager sequence it replaces, ``F.instance_norm`` -> ``relu`` (-> ``ReflectionPad2d`` before
the next conv): instance_norm (batch_norm on a ``(1, N*C, H, W)`` view) reads x for the
statistics and again to normalise, writing y (2 R + 1 W), relu reads and writes it again
(1 R + 1 W) and the pad copies it once more (1 R + 1 W): 4 R + 3 W and >= 3 launches forward.
Backward: pad backward (1 R + 1 W), relu backward (2 R + 1 W), norm backward (x, dz for the
reductions and again for dx: 4 R + 1 W): about 7 R + 3 W. Here the activation is applied on the
way out of the normalisation and its mask is recomputed from x, mean, rstd, weight and bias on
the way back, so no activation-sized intermediate reaches memory; the padding belongs to the
following ``padded_conv2d``, which reads the unpadded tensor directly.

Under ``TRITON_INTERPRET=1`` (no GPU) the ops are plain ``torch.library.custom_op``s with an
explicit fake, because the interpreter's kernels cannot be traced into a graph
(``wrap_triton`` hands back the raw interpreted function, which needs real data pointers);
on a GPU they are ``torch.library.triton_op``s, visible to ``torch.compile``.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from .. import backends
from . import instance_norm as _instance_norm
from .common import (
    FLOATING_DTYPES,
    Activation,
    empty_output_like,
    output_memory_format,
    stats_dtype,
)
from .triton_op import define_op

# --------------------------------------------------------------------------------------------
# Schedule thresholds. Read at call time, so tests may monkeypatch them to reach every schedule
# with small shapes.

#: A channel group of at most this many (power-of-two padded) elements is kept in registers.
ONE_PASS_MAX_ELEMENTS = 8192
#: Elements per loop iteration (tile) of the looped and split kernels.
LOOP_CHUNK_ELEMENTS = 4096
#: Channels one channels_last program owns (a tile row of 16 fp32 = 64 contiguous bytes).
CHANNELS_LAST_BLOCK_C = 16
#: Below this many channel groups the looped schedule would leave most SMs idle (about two
#: programs per SM of a 132-SM H100), so large planes are split instead.
SPLIT_BELOW_GROUPS = 256
#: Programs the split schedule aims for in total (several waves on a large GPU).
SPLIT_TARGET_PROGRAMS = 1024
#: Most segments per plane; the finalize kernel merges them in one tile.
SPLIT_MAX = 64
#: From this many elements per sample on, in-sample offsets are computed in 64 bits.
INDEX_64_FROM = 2**31

SCHEDULES = ("one_pass", "looped", "split")


# --------------------------------------------------------------------------------------------
# Kernels. Activation-shaped tensors are addressed as (N, C, H*W) with strides
# (stride_n, stride_c, stride_hw): (C*HW, HW, 1) for NCHW, (HW*C, 1, C) for channels_last.


@triton.jit
def _widen(hi, lo, ACC: tl.constexpr):
    # Float kernel arguments arrive as fp32; a float64 kernel rebuilds the exact value from the
    # fp32 pair (hi, lo) the host split it into.
    return tl.cast(hi, ACC) + tl.cast(lo, ACC)


@triton.jit
def _group(pid, C, BLOCK_C: tl.constexpr):
    """Sample index and the BLOCK_C channel indices of channel group ``pid``."""
    groups_per_sample = tl.cdiv(C, BLOCK_C)
    n = pid // groups_per_sample
    c = (pid % groups_per_sample) * BLOCK_C + tl.arange(0, BLOCK_C)
    return n, c


@triton.jit
def _tile(hw_start, hw_end, c, C, stride_c, stride_hw, BLOCK_HW: tl.constexpr,
          INDEX_64: tl.constexpr):
    """Offsets [BLOCK_HW, BLOCK_C] of rows hw_start.. of channels c within one sample, and the
    mask of the rows < hw_end and channels < C."""
    hw = hw_start + tl.arange(0, BLOCK_HW)
    valid = (hw < hw_end)[:, None] & (c < C)[None, :]
    if INDEX_64:
        hw = hw.to(tl.int64)
        c = c.to(tl.int64)
    return hw[:, None] * stride_hw + c[None, :] * stride_c, valid


@triton.jit
def _scale_shift(rstd, n, c, C, w_ptr, stride_wn, b_ptr, stride_bn,
                 HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Per-channel (scale, shift) with y = (x - mean) * scale + shift: scale = rstd * weight."""
    scale = rstd
    shift = rstd * 0.0
    if HAS_WEIGHT:
        scale = scale * tl.load(w_ptr + n * stride_wn + c, mask=c < C, other=0.0)
    if HAS_BIAS:
        shift = tl.load(b_ptr + n * stride_bn + c, mask=c < C, other=0.0).to(shift.dtype)
    return scale, shift


@triton.jit
def _pre_activation(x, mean, scale, shift):
    # Forward and backward both form z with this one expression, so the activation mask the
    # backward recomputes is bit-identical to the forward's.
    return (x - mean[None, :]) * scale[None, :] + shift[None, :]


@triton.jit
def _activation(z, slope, ACTIVATION: tl.constexpr):
    if ACTIVATION == 1:
        z = tl.where(z > 0, z, 0.0)
    elif ACTIVATION == 2:
        z = tl.where(z > 0, z, z * slope)
    return z


@triton.jit
def _activation_grad(dy, z, slope, ACTIVATION: tl.constexpr):
    # Matches torch's relu (threshold_backward on the output) and leaky_relu backward: the
    # derivative at z == 0 is taken from the negative side.
    if ACTIVATION == 1:
        dy = tl.where(z > 0, dy, 0.0)
    elif ACTIVATION == 2:
        dy = tl.where(z > 0, dy, dy * slope)
    return dy


@triton.jit
def _segment_moments(x_base, seg_start, seg_end, c, C, stride_c, stride_hw, ACC: tl.constexpr,
                     BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr, INDEX_64: tl.constexpr):
    """Mean and sum of squared deviations [BLOCK_C] of rows [seg_start, seg_end)."""
    mean = tl.zeros([BLOCK_C], dtype=ACC)
    m2 = tl.zeros([BLOCK_C], dtype=ACC)
    for start in range(seg_start, seg_end, BLOCK_HW):
        offs, valid = _tile(start, seg_end, c, C, stride_c, stride_hw, BLOCK_HW, INDEX_64)
        x = tl.load(x_base + offs, mask=valid, other=0.0).to(ACC)
        count_seen = tl.cast(start - seg_start, ACC)
        count_chunk = tl.cast(tl.minimum(seg_end - start, BLOCK_HW), ACC)
        chunk_mean = tl.sum(x, axis=0) / count_chunk
        diff = tl.where(valid, x - chunk_mean[None, :], 0.0)
        chunk_m2 = tl.sum(diff * diff, axis=0)
        # Chan, Golub & LeVeque: merge the chunk's centred moments into the running ones.
        delta = chunk_mean - mean
        frac = count_chunk / (count_seen + count_chunk)
        mean = mean + delta * frac
        m2 = m2 + chunk_m2 + delta * delta * count_seen * frac
    return mean, m2


@triton.jit
def _store_stats(mean_ptr, rstd_ptr, n, c, C, mean, rstd):
    tl.store(mean_ptr + n * C + c, mean, mask=c < C)
    tl.store(rstd_ptr + n * C + c, rstd, mask=c < C)


@triton.jit
def _segment_apply(x_base, stride_xc, stride_xhw, y_base, stride_yc, stride_yhw, seg_start,
                   seg_end, c, C, mean, scale, shift, slope, ACC: tl.constexpr,
                   ACTIVATION: tl.constexpr, BLOCK_HW: tl.constexpr, INDEX_64: tl.constexpr):
    """y = act((x - mean) * scale + shift) for rows [seg_start, seg_end)."""
    for start in range(seg_start, seg_end, BLOCK_HW):
        offs_x, valid = _tile(start, seg_end, c, C, stride_xc, stride_xhw, BLOCK_HW, INDEX_64)
        offs_y, _ = _tile(start, seg_end, c, C, stride_yc, stride_yhw, BLOCK_HW, INDEX_64)
        x = tl.load(x_base + offs_x, mask=valid, other=0.0).to(ACC)
        y = _activation(_pre_activation(x, mean, scale, shift), slope, ACTIVATION)
        tl.store(y_base + offs_y, y.to(y_base.dtype.element_ty), mask=valid)


@triton.jit
def _fwd_one_pass_kernel(
    x_ptr, stride_xn, stride_xc, stride_xhw,  # input (N, C, H*W)
    y_ptr, stride_yn, stride_yc, stride_yhw,  # output (N, C, H*W)
    w_ptr, stride_wn,  # weight (C,) [stride_wn = 0] or (N, C) [stride_wn = C]; stats dtype
    b_ptr, stride_bn,  # bias, as weight
    mean_ptr, rstd_ptr,  # (N, C) contiguous, statistics dtype
    C, HW, eps_hi, eps_lo, slope_hi, slope_lo,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
    BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr, INDEX_64: tl.constexpr,
):
    """One program per channel group; the group is read once into registers."""
    ACC: tl.constexpr = mean_ptr.dtype.element_ty
    n, c = _group(tl.program_id(0), C, BLOCK_C)
    offs_x, valid = _tile(0, HW, c, C, stride_xc, stride_xhw, BLOCK_HW, INDEX_64)
    x = tl.load(x_ptr + n.to(tl.int64) * stride_xn + offs_x, mask=valid, other=0.0).to(ACC)
    mean = tl.sum(x, axis=0) / HW
    diff = tl.where(valid, x - mean[None, :], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(diff * diff, axis=0) / HW + _widen(eps_hi, eps_lo, ACC))
    _store_stats(mean_ptr, rstd_ptr, n, c, C, mean, rstd)
    scale, shift = _scale_shift(rstd, n, c, C, w_ptr, stride_wn, b_ptr, stride_bn, HAS_WEIGHT,
                                HAS_BIAS)
    y = _activation(_pre_activation(x, mean, scale, shift), _widen(slope_hi, slope_lo, ACC),
                    ACTIVATION)
    offs_y, _ = _tile(0, HW, c, C, stride_yc, stride_yhw, BLOCK_HW, INDEX_64)
    tl.store(y_ptr + n.to(tl.int64) * stride_yn + offs_y, y.to(y_ptr.dtype.element_ty),
             mask=valid)


@triton.jit
def _fwd_looped_kernel(
    x_ptr, stride_xn, stride_xc, stride_xhw,  # input (N, C, H*W)
    y_ptr, stride_yn, stride_yc, stride_yhw,  # output (N, C, H*W)
    w_ptr, stride_wn,  # weight (C,) [stride_wn = 0] or (N, C) [stride_wn = C]; stats dtype
    b_ptr, stride_bn,  # bias, as weight
    mean_ptr, rstd_ptr,  # (N, C) contiguous, statistics dtype
    C, HW, eps_hi, eps_lo, slope_hi, slope_lo,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
    BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr, INDEX_64: tl.constexpr,
):
    """One program per channel group: statistics loop, then apply loop."""
    ACC: tl.constexpr = mean_ptr.dtype.element_ty
    n, c = _group(tl.program_id(0), C, BLOCK_C)
    x_base = x_ptr + n.to(tl.int64) * stride_xn
    mean, m2 = _segment_moments(x_base, 0, HW, c, C, stride_xc, stride_xhw, ACC, BLOCK_HW,
                                BLOCK_C, INDEX_64)
    rstd = 1.0 / tl.sqrt(m2 / HW + _widen(eps_hi, eps_lo, ACC))
    _store_stats(mean_ptr, rstd_ptr, n, c, C, mean, rstd)
    scale, shift = _scale_shift(rstd, n, c, C, w_ptr, stride_wn, b_ptr, stride_bn, HAS_WEIGHT,
                                HAS_BIAS)
    _segment_apply(x_base, stride_xc, stride_xhw, y_ptr + n.to(tl.int64) * stride_yn, stride_yc,
                   stride_yhw, 0, HW, c, C, mean, scale, shift, _widen(slope_hi, slope_lo, ACC),
                   ACC, ACTIVATION, BLOCK_HW, INDEX_64)


@triton.jit
def _fwd_partial_stats_kernel(
    x_ptr, stride_xn, stride_xc, stride_xhw,  # input (N, C, H*W)
    pmean_ptr, stride_pn, stride_ps,  # partial means (N, S, C), channel stride 1; stats dtype
    pm2_ptr,  # partial sums of squared deviations (N, S, C), same strides as pmean
    C, HW, SEGMENT,
    BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr, INDEX_64: tl.constexpr,
):
    """Program (group, s): centred moments of rows [s * SEGMENT, (s + 1) * SEGMENT)."""
    ACC: tl.constexpr = pmean_ptr.dtype.element_ty
    n, c = _group(tl.program_id(0), C, BLOCK_C)
    s = tl.program_id(1)
    seg_start = s * SEGMENT
    seg_end = tl.minimum(seg_start + SEGMENT, HW)
    mean, m2 = _segment_moments(x_ptr + n.to(tl.int64) * stride_xn, seg_start, seg_end, c, C,
                                stride_xc, stride_xhw, ACC, BLOCK_HW, BLOCK_C, INDEX_64)
    offs = n * stride_pn + s * stride_ps + c
    tl.store(pmean_ptr + offs, mean, mask=c < C)
    tl.store(pm2_ptr + offs, m2, mask=c < C)


@triton.jit
def _fwd_finalize_stats_kernel(
    pmean_ptr, stride_pn, stride_ps,  # partial means (N, S, C), channel stride 1
    pm2_ptr,  # partial sums of squared deviations (N, S, C), same strides as pmean
    mean_ptr, rstd_ptr,  # (N, C) contiguous, statistics dtype
    C, HW, S, SEGMENT, eps_hi, eps_lo,
    BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Program per group: merge the S partial moments of each (n, c) (exact parallel formula)."""
    ACC: tl.constexpr = mean_ptr.dtype.element_ty
    n, c = _group(tl.program_id(0), C, BLOCK_C)
    s = tl.arange(0, BLOCK_S)
    valid = (s < S)[:, None] & (c < C)[None, :]
    offs = n * stride_pn + s[:, None] * stride_ps + c[None, :]
    part_mean = tl.load(pmean_ptr + offs, mask=valid, other=0.0)
    part_m2 = tl.load(pm2_ptr + offs, mask=valid, other=0.0)
    count = tl.where(s < S, tl.minimum(HW - s * SEGMENT, SEGMENT), 0).to(ACC)
    mean = tl.sum(part_mean * count[:, None], axis=0) / HW
    delta = tl.where(valid, part_mean - mean[None, :], 0.0)
    m2 = tl.sum(part_m2 + count[:, None] * delta * delta, axis=0)
    rstd = 1.0 / tl.sqrt(m2 / HW + _widen(eps_hi, eps_lo, ACC))
    _store_stats(mean_ptr, rstd_ptr, n, c, C, mean, rstd)


@triton.jit
def _fwd_apply_kernel(
    x_ptr, stride_xn, stride_xc, stride_xhw,  # input (N, C, H*W)
    y_ptr, stride_yn, stride_yc, stride_yhw,  # output (N, C, H*W)
    w_ptr, stride_wn,  # weight (C,) [stride_wn = 0] or (N, C) [stride_wn = C]; stats dtype
    b_ptr, stride_bn,  # bias, as weight
    mean_ptr, rstd_ptr,  # (N, C) contiguous, statistics dtype
    C, HW, SEGMENT, slope_hi, slope_lo,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
    BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr, INDEX_64: tl.constexpr,
):
    """Program (group, s): normalise rows [s * SEGMENT, (s + 1) * SEGMENT) with final stats."""
    ACC: tl.constexpr = mean_ptr.dtype.element_ty
    n, c = _group(tl.program_id(0), C, BLOCK_C)
    s = tl.program_id(1)
    mean = tl.load(mean_ptr + n * C + c, mask=c < C, other=0.0)
    rstd = tl.load(rstd_ptr + n * C + c, mask=c < C, other=0.0)
    scale, shift = _scale_shift(rstd, n, c, C, w_ptr, stride_wn, b_ptr, stride_bn, HAS_WEIGHT,
                                HAS_BIAS)
    seg_start = s * SEGMENT
    _segment_apply(x_ptr + n.to(tl.int64) * stride_xn, stride_xc, stride_xhw,
                   y_ptr + n.to(tl.int64) * stride_yn, stride_yc, stride_yhw, seg_start,
                   tl.minimum(seg_start + SEGMENT, HW), c, C, mean, scale, shift,
                   _widen(slope_hi, slope_lo, ACC), ACC, ACTIVATION, BLOCK_HW, INDEX_64)


# Backward. With z = xhat * w + b, xhat = (x - mean) * rstd, dz = dy * act'(z):
#   dbias = sum dz,  dweight = sum dz * xhat  (per (n, c), over H*W),
#   dx = rstd * w * (dz - mean(dz) - xhat * mean(dz * xhat)).


@triton.jit
def _grad_terms(x, dy, valid, mean, rstd, scale, shift, slope, ACTIVATION: tl.constexpr):
    """(xhat, dz) of a tile, zero outside ``valid``."""
    dz = _activation_grad(dy, _pre_activation(x, mean, scale, shift), slope, ACTIVATION)
    xhat = (x - mean[None, :]) * rstd[None, :]
    return tl.where(valid, xhat, 0.0), tl.where(valid, dz, 0.0)


@triton.jit
def _segment_grad_sums(x_base, stride_xc, stride_xhw, dy_base, stride_dyc, stride_dyhw,
                       seg_start, seg_end, c, C, mean, rstd, scale, shift, slope,
                       ACC: tl.constexpr, ACTIVATION: tl.constexpr, BLOCK_HW: tl.constexpr,
                       BLOCK_C: tl.constexpr, INDEX_64: tl.constexpr):
    """(sum dz, sum dz * xhat) [BLOCK_C] over rows [seg_start, seg_end)."""
    # Element-wise accumulators, reduced once at the end: shorter fp32 addition chains.
    sum_dz = tl.zeros([BLOCK_HW, BLOCK_C], dtype=ACC)
    sum_dz_xhat = tl.zeros([BLOCK_HW, BLOCK_C], dtype=ACC)
    for start in range(seg_start, seg_end, BLOCK_HW):
        offs_x, valid = _tile(start, seg_end, c, C, stride_xc, stride_xhw, BLOCK_HW, INDEX_64)
        offs_dy, _ = _tile(start, seg_end, c, C, stride_dyc, stride_dyhw, BLOCK_HW, INDEX_64)
        x = tl.load(x_base + offs_x, mask=valid, other=0.0).to(ACC)
        dy = tl.load(dy_base + offs_dy, mask=valid, other=0.0).to(ACC)
        xhat, dz = _grad_terms(x, dy, valid, mean, rstd, scale, shift, slope, ACTIVATION)
        sum_dz += dz
        sum_dz_xhat += dz * xhat
    return tl.sum(sum_dz, axis=0), tl.sum(sum_dz_xhat, axis=0)


@triton.jit
def _segment_grad_input(x_base, stride_xc, stride_xhw, dy_base, stride_dyc, stride_dyhw,
                        dx_base, stride_dxc, stride_dxhw, seg_start, seg_end, c, C, HW, mean,
                        rstd, scale, shift, sum_dz, sum_dz_xhat, slope, ACC: tl.constexpr,
                        ACTIVATION: tl.constexpr, BLOCK_HW: tl.constexpr,
                        INDEX_64: tl.constexpr):
    """dx for rows [seg_start, seg_end), given the plane's full sums."""
    mean_dz = sum_dz / HW
    mean_dz_xhat = sum_dz_xhat / HW
    for start in range(seg_start, seg_end, BLOCK_HW):
        offs_x, valid = _tile(start, seg_end, c, C, stride_xc, stride_xhw, BLOCK_HW, INDEX_64)
        offs_dy, _ = _tile(start, seg_end, c, C, stride_dyc, stride_dyhw, BLOCK_HW, INDEX_64)
        offs_dx, _ = _tile(start, seg_end, c, C, stride_dxc, stride_dxhw, BLOCK_HW, INDEX_64)
        x = tl.load(x_base + offs_x, mask=valid, other=0.0).to(ACC)
        dy = tl.load(dy_base + offs_dy, mask=valid, other=0.0).to(ACC)
        xhat, dz = _grad_terms(x, dy, valid, mean, rstd, scale, shift, slope, ACTIVATION)
        dx = scale[None, :] * (dz - mean_dz[None, :] - xhat * mean_dz_xhat[None, :])
        tl.store(dx_base + offs_dx, dx.to(dx_base.dtype.element_ty), mask=valid)


@triton.jit
def _bwd_one_pass_kernel(
    dy_ptr, stride_dyn, stride_dyc, stride_dyhw,  # grad_output (N, C, H*W)
    x_ptr, stride_xn, stride_xc, stride_xhw,  # input (N, C, H*W)
    dx_ptr, stride_dxn, stride_dxc, stride_dxhw,  # grad_input (N, C, H*W)
    w_ptr, stride_wn,  # weight (C,) [stride_wn = 0] or (N, C) [stride_wn = C]; stats dtype
    b_ptr, stride_bn,  # bias, as weight
    mean_ptr, rstd_ptr,  # (N, C) contiguous, statistics dtype
    sum_dz_ptr, sum_dz_xhat_ptr,  # (N, C) contiguous outputs, statistics dtype
    C, HW, slope_hi, slope_lo,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
    NEED_DX: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr,
    INDEX_64: tl.constexpr,
):
    """One program per channel group; x and dy are read once into registers."""
    ACC: tl.constexpr = mean_ptr.dtype.element_ty
    n, c = _group(tl.program_id(0), C, BLOCK_C)
    mean = tl.load(mean_ptr + n * C + c, mask=c < C, other=0.0)
    rstd = tl.load(rstd_ptr + n * C + c, mask=c < C, other=0.0)
    scale, shift = _scale_shift(rstd, n, c, C, w_ptr, stride_wn, b_ptr, stride_bn, HAS_WEIGHT,
                                HAS_BIAS)
    slope = _widen(slope_hi, slope_lo, ACC)
    offs_x, valid = _tile(0, HW, c, C, stride_xc, stride_xhw, BLOCK_HW, INDEX_64)
    offs_dy, _ = _tile(0, HW, c, C, stride_dyc, stride_dyhw, BLOCK_HW, INDEX_64)
    x = tl.load(x_ptr + n.to(tl.int64) * stride_xn + offs_x, mask=valid, other=0.0).to(ACC)
    dy = tl.load(dy_ptr + n.to(tl.int64) * stride_dyn + offs_dy, mask=valid, other=0.0).to(ACC)
    xhat, dz = _grad_terms(x, dy, valid, mean, rstd, scale, shift, slope, ACTIVATION)
    sum_dz = tl.sum(dz, axis=0)
    sum_dz_xhat = tl.sum(dz * xhat, axis=0)
    tl.store(sum_dz_ptr + n * C + c, sum_dz, mask=c < C)
    tl.store(sum_dz_xhat_ptr + n * C + c, sum_dz_xhat, mask=c < C)
    if NEED_DX:
        dx = scale[None, :] * (dz - (sum_dz / HW)[None, :] - xhat * (sum_dz_xhat / HW)[None, :])
        offs_dx, _ = _tile(0, HW, c, C, stride_dxc, stride_dxhw, BLOCK_HW, INDEX_64)
        tl.store(dx_ptr + n.to(tl.int64) * stride_dxn + offs_dx, dx.to(dx_ptr.dtype.element_ty),
                 mask=valid)


@triton.jit
def _bwd_looped_kernel(
    dy_ptr, stride_dyn, stride_dyc, stride_dyhw,  # grad_output (N, C, H*W)
    x_ptr, stride_xn, stride_xc, stride_xhw,  # input (N, C, H*W)
    dx_ptr, stride_dxn, stride_dxc, stride_dxhw,  # grad_input (N, C, H*W)
    w_ptr, stride_wn,  # weight (C,) [stride_wn = 0] or (N, C) [stride_wn = C]; stats dtype
    b_ptr, stride_bn,  # bias, as weight
    mean_ptr, rstd_ptr,  # (N, C) contiguous, statistics dtype
    sum_dz_ptr, sum_dz_xhat_ptr,  # (N, C) contiguous outputs, statistics dtype
    C, HW, slope_hi, slope_lo,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
    NEED_DX: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr,
    INDEX_64: tl.constexpr,
):
    """One program per channel group: reduction loop, then dx loop."""
    ACC: tl.constexpr = mean_ptr.dtype.element_ty
    n, c = _group(tl.program_id(0), C, BLOCK_C)
    mean = tl.load(mean_ptr + n * C + c, mask=c < C, other=0.0)
    rstd = tl.load(rstd_ptr + n * C + c, mask=c < C, other=0.0)
    scale, shift = _scale_shift(rstd, n, c, C, w_ptr, stride_wn, b_ptr, stride_bn, HAS_WEIGHT,
                                HAS_BIAS)
    slope = _widen(slope_hi, slope_lo, ACC)
    x_base = x_ptr + n.to(tl.int64) * stride_xn
    dy_base = dy_ptr + n.to(tl.int64) * stride_dyn
    sum_dz, sum_dz_xhat = _segment_grad_sums(
        x_base, stride_xc, stride_xhw, dy_base, stride_dyc, stride_dyhw, 0, HW, c, C, mean, rstd,
        scale, shift, slope, ACC, ACTIVATION, BLOCK_HW, BLOCK_C, INDEX_64)
    tl.store(sum_dz_ptr + n * C + c, sum_dz, mask=c < C)
    tl.store(sum_dz_xhat_ptr + n * C + c, sum_dz_xhat, mask=c < C)
    if NEED_DX:
        _segment_grad_input(x_base, stride_xc, stride_xhw, dy_base, stride_dyc, stride_dyhw,
                            dx_ptr + n.to(tl.int64) * stride_dxn, stride_dxc, stride_dxhw, 0, HW,
                            c, C, HW, mean, rstd, scale, shift, sum_dz, sum_dz_xhat, slope, ACC,
                            ACTIVATION, BLOCK_HW, INDEX_64)


@triton.jit
def _bwd_partial_sums_kernel(
    dy_ptr, stride_dyn, stride_dyc, stride_dyhw,  # grad_output (N, C, H*W)
    x_ptr, stride_xn, stride_xc, stride_xhw,  # input (N, C, H*W)
    w_ptr, stride_wn,  # weight (C,) [stride_wn = 0] or (N, C) [stride_wn = C]; stats dtype
    b_ptr, stride_bn,  # bias, as weight
    mean_ptr, rstd_ptr,  # (N, C) contiguous, statistics dtype
    psum_dz_ptr, stride_pn, stride_ps,  # partial sums of dz (N, S, C), channel stride 1
    psum_dz_xhat_ptr,  # partial sums of dz * xhat (N, S, C), same strides
    C, HW, SEGMENT, slope_hi, slope_lo,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
    BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr, INDEX_64: tl.constexpr,
):
    """Program (group, s): partial sums over rows [s * SEGMENT, (s + 1) * SEGMENT)."""
    ACC: tl.constexpr = mean_ptr.dtype.element_ty
    n, c = _group(tl.program_id(0), C, BLOCK_C)
    s = tl.program_id(1)
    mean = tl.load(mean_ptr + n * C + c, mask=c < C, other=0.0)
    rstd = tl.load(rstd_ptr + n * C + c, mask=c < C, other=0.0)
    scale, shift = _scale_shift(rstd, n, c, C, w_ptr, stride_wn, b_ptr, stride_bn, HAS_WEIGHT,
                                HAS_BIAS)
    seg_start = s * SEGMENT
    sum_dz, sum_dz_xhat = _segment_grad_sums(
        x_ptr + n.to(tl.int64) * stride_xn, stride_xc, stride_xhw,
        dy_ptr + n.to(tl.int64) * stride_dyn, stride_dyc, stride_dyhw, seg_start,
        tl.minimum(seg_start + SEGMENT, HW), c, C, mean, rstd, scale, shift,
        _widen(slope_hi, slope_lo, ACC), ACC, ACTIVATION, BLOCK_HW, BLOCK_C, INDEX_64)
    offs = n * stride_pn + s * stride_ps + c
    tl.store(psum_dz_ptr + offs, sum_dz, mask=c < C)
    tl.store(psum_dz_xhat_ptr + offs, sum_dz_xhat, mask=c < C)


@triton.jit
def _bwd_apply_kernel(
    dy_ptr, stride_dyn, stride_dyc, stride_dyhw,  # grad_output (N, C, H*W)
    x_ptr, stride_xn, stride_xc, stride_xhw,  # input (N, C, H*W)
    dx_ptr, stride_dxn, stride_dxc, stride_dxhw,  # grad_input (N, C, H*W)
    w_ptr, stride_wn,  # weight (C,) [stride_wn = 0] or (N, C) [stride_wn = C]; stats dtype
    b_ptr, stride_bn,  # bias, as weight
    mean_ptr, rstd_ptr,  # (N, C) contiguous, statistics dtype
    sum_dz_ptr, sum_dz_xhat_ptr,  # (N, C) contiguous, full-plane sums
    C, HW, SEGMENT, slope_hi, slope_lo,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
    BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr, INDEX_64: tl.constexpr,
):
    """Program (group, s): dx of rows [s * SEGMENT, (s + 1) * SEGMENT)."""
    ACC: tl.constexpr = mean_ptr.dtype.element_ty
    n, c = _group(tl.program_id(0), C, BLOCK_C)
    s = tl.program_id(1)
    mean = tl.load(mean_ptr + n * C + c, mask=c < C, other=0.0)
    rstd = tl.load(rstd_ptr + n * C + c, mask=c < C, other=0.0)
    sum_dz = tl.load(sum_dz_ptr + n * C + c, mask=c < C, other=0.0)
    sum_dz_xhat = tl.load(sum_dz_xhat_ptr + n * C + c, mask=c < C, other=0.0)
    scale, shift = _scale_shift(rstd, n, c, C, w_ptr, stride_wn, b_ptr, stride_bn, HAS_WEIGHT,
                                HAS_BIAS)
    seg_start = s * SEGMENT
    _segment_grad_input(x_ptr + n.to(tl.int64) * stride_xn, stride_xc, stride_xhw,
                        dy_ptr + n.to(tl.int64) * stride_dyn, stride_dyc, stride_dyhw,
                        dx_ptr + n.to(tl.int64) * stride_dxn, stride_dxc, stride_dxhw, seg_start,
                        tl.minimum(seg_start + SEGMENT, HW), c, C, HW, mean, rstd, scale, shift,
                        sum_dz, sum_dz_xhat, _widen(slope_hi, slope_lo, ACC), ACC, ACTIVATION,
                        BLOCK_HW, INDEX_64)


# --------------------------------------------------------------------------------------------
# Host side: schedule, checks, launches.


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How one call is launched.

    kind:      "one_pass", "looped" or "split".
    block_c:   channels per program (1 for NCHW).
    block_hw:  spatial positions per tile.
    splits:    programs per channel group (1 unless "split").
    segment:   spatial positions per split program (a multiple of block_hw; H*W otherwise).
    num_warps: warps per program.
    """

    kind: str
    block_c: int
    block_hw: int
    splits: int
    segment: int
    num_warps: int


def _num_warps(tile_elements: int) -> int:
    # About 16 elements per thread for the register-resident tiles, 2..16 warps.
    return min(16, max(2, triton.next_power_of_2(tile_elements // 512)))


def choose_schedule(n: int, c: int, hw: int, channels_last: bool) -> Schedule:
    """The schedule for an (N, C, H*W = hw) input, from the module thresholds (see the module
    docstring)."""
    block_c = min(triton.next_power_of_2(c), CHANNELS_LAST_BLOCK_C) if channels_last else 1
    groups = n * triton.cdiv(c, block_c)
    hw_block = triton.next_power_of_2(hw)
    if hw_block * block_c <= ONE_PASS_MAX_ELEMENTS:
        return Schedule("one_pass", block_c, hw_block, 1, hw, _num_warps(hw_block * block_c))
    block_hw = max(1, LOOP_CHUNK_ELEMENTS // block_c)
    warps = _num_warps(block_hw * block_c)
    if groups < SPLIT_BELOW_GROUPS:
        splits = min(SPLIT_MAX, triton.cdiv(SPLIT_TARGET_PROGRAMS, groups),
                     triton.cdiv(hw, block_hw))
        segment = triton.cdiv(triton.cdiv(hw, max(splits, 1)), block_hw) * block_hw
        splits = triton.cdiv(hw, segment)
        if splits > 1:
            return Schedule("split", block_c, block_hw, splits, segment, warps)
    return Schedule("looped", block_c, block_hw, 1, hw, warps)


def _split_float(value: float) -> tuple[float, float]:
    """(hi, lo) with hi the fp32 rounding of ``value`` and hi + lo == value to ~1e-16."""
    try:
        hi = struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        return value, 0.0
    return hi, value - hi if math.isfinite(hi) else 0.0


def _activation_strides(channels_last: bool, c: int, hw: int) -> tuple[int, int, int]:
    """(stride_n, stride_c, stride_hw) of a dense (N, C, H*W) tensor in the given layout."""
    return (hw * c, 1, c) if channels_last else (c * hw, hw, 1)


def _affine_args(t: torch.Tensor | None, dummy: torch.Tensor) -> tuple[torch.Tensor, int]:
    # (C,) weights are shared by every sample: stride 0 over n.
    if t is None:
        return dummy, 0
    return t, (t.shape[1] if t.dim() == 2 else 0)


# Public arguments are checked, with user-facing messages, by instance_norm.check_args before a
# backend is chosen; the host functions below only assert the contract the kernels rely on.


def _assert_affine(fn: str, name: str, t, input: torch.Tensor) -> None:
    if t is None:
        return
    n, c = input.shape[:2]
    assert tuple(t.shape) in ((c,), (n, c)), \
        f"{fn}: {name} must have shape (C,) = ({c},) or (N, C) = ({n}, {c}), got {tuple(t.shape)}"
    assert t.dtype == stats_dtype(input.dtype), \
        f"{fn}: {name} must have the statistics dtype for {input.dtype} input, got {t.dtype}"
    assert t.is_contiguous() and t.device == input.device, \
        f"{fn}: {name} must be contiguous and on the input's device"


def _assert_input(fn: str, input: torch.Tensor, activation: int) -> None:
    assert input.dim() == 4, f"{fn}: input must have 4 dimensions, got {tuple(input.shape)}"
    assert input.dtype in FLOATING_DTYPES, f"{fn}: input must be float, got {input.dtype}"
    assert activation in tuple(Activation), f"{fn}: activation must be a code, got {activation!r}"


def _assert_stats(fn: str, name: str, t: torch.Tensor, input: torch.Tensor) -> None:
    n, c = input.shape[:2]
    assert tuple(t.shape) == (n, c) and t.dtype == stats_dtype(input.dtype), \
        f"{fn}: {name} must be a ({n}, {c}) statistics tensor, got {tuple(t.shape)} {t.dtype}"


def instance_norm_forward(
    input: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    activation: int,
    negative_slope: float,
    *,
    schedule: Schedule | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fused instance norm + activation with Triton.

    Args:
        input: ``(N, C, H, W)``; NCHW and channels_last are read natively, any other layout is
            made contiguous in its suggested memory format first.
        weight, bias: ``(C,)`` or ``(N, C)``, contiguous, statistics dtype; or None.
        eps: added to the variance. activation: 0 none, 1 relu, 2 leaky_relu.
        schedule: override :func:`choose_schedule` (tests, benchmarks).

    Returns:
        ``(output, mean, rstd)``: output like ``input`` in its suggested memory format;
        mean, rstd ``(N, C)`` in float32 (float64 for float64 input).
    """
    fn = "instance_norm_fwd_triton"
    _assert_input(fn, input, activation)
    _assert_affine(fn, "weight", weight, input)
    _assert_affine(fn, "bias", bias, input)
    assert eps >= 0, f"{fn}: eps must be >= 0, got {eps!r}"
    n, c, h, w = (int(s) for s in input.shape)
    hw = h * w
    acc = stats_dtype(input.dtype)
    fmt = output_memory_format(input)
    channels_last = fmt == torch.channels_last
    x = input.contiguous(memory_format=fmt)
    y = empty_output_like(input)
    mean = input.new_empty((n, c), dtype=acc)
    rstd = input.new_empty((n, c), dtype=acc)
    if n * c == 0:
        return y, mean, rstd
    if hw == 0:  # the mean of an empty plane, as the reference: NaN
        return y, mean.fill_(math.nan), rstd.fill_(math.nan)
    sched = schedule or choose_schedule(n, c, hw, channels_last)
    strides = _activation_strides(channels_last, c, hw)
    # An absent weight/bias is never dereferenced; x stands in for its pointer (a read-only
    # input, so no aliasing with an output the kernel writes).
    w_arg, stride_wn = _affine_args(weight, x)
    b_arg, stride_bn = _affine_args(bias, x)
    eps_hi, eps_lo = _split_float(float(eps))
    slope_hi, slope_lo = _split_float(float(negative_slope))
    flags = dict(HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None,
                 ACTIVATION=int(activation), BLOCK_HW=sched.block_hw, BLOCK_C=sched.block_c,
                 INDEX_64=c * hw >= INDEX_64_FROM, num_warps=sched.num_warps)
    groups = n * triton.cdiv(c, sched.block_c)
    if sched.kind == "one_pass":
        wrap_triton(_fwd_one_pass_kernel)[(groups,)](
            x, *strides, y, *strides, w_arg, stride_wn, b_arg, stride_bn, mean, rstd,
            c, hw, eps_hi, eps_lo, slope_hi, slope_lo, **flags)
    elif sched.kind == "looped":
        wrap_triton(_fwd_looped_kernel)[(groups,)](
            x, *strides, y, *strides, w_arg, stride_wn, b_arg, stride_bn, mean, rstd,
            c, hw, eps_hi, eps_lo, slope_hi, slope_lo, **flags)
    elif sched.kind == "split":
        part_mean = input.new_empty((n, sched.splits, c), dtype=acc)
        part_m2 = input.new_empty((n, sched.splits, c), dtype=acc)
        wrap_triton(_fwd_partial_stats_kernel)[(groups, sched.splits)](
            x, *strides, part_mean, sched.splits * c, c, part_m2, c, hw, sched.segment,
            BLOCK_HW=sched.block_hw, BLOCK_C=sched.block_c, INDEX_64=flags["INDEX_64"],
            num_warps=sched.num_warps)
        wrap_triton(_fwd_finalize_stats_kernel)[(groups,)](
            part_mean, sched.splits * c, c, part_m2, mean, rstd, c, hw, sched.splits,
            sched.segment, eps_hi, eps_lo, BLOCK_S=triton.next_power_of_2(sched.splits),
            BLOCK_C=sched.block_c, num_warps=2)
        wrap_triton(_fwd_apply_kernel)[(groups, sched.splits)](
            x, *strides, y, *strides, w_arg, stride_wn, b_arg, stride_bn, mean, rstd,
            c, hw, sched.segment, slope_hi, slope_lo, **flags)
    else:
        raise ValueError(f"{fn}: schedule.kind must be one of {SCHEDULES}, got {sched.kind!r}")
    return y, mean, rstd


def _reduce_like(per_sample: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # (N, C) per-sample sums -> the parameter's shape; the sum over n runs in a fixed order.
    return per_sample.sum(0) if like.dim() == 1 else per_sample


def instance_norm_backward(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    activation: int,
    negative_slope: float,
    output_mask: Sequence[bool],
    *,
    schedule: Schedule | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of :func:`instance_norm_forward`.

    Args:
        grad_output: ``(N, C, H, W)``, any layout (read in the input's memory format).
        input, weight, bias, activation, negative_slope: as given to the forward.
        mean, rstd: ``(N, C)`` statistics returned by the forward.
        output_mask: which of (grad_input, grad_weight, grad_bias) to compute.

    Returns:
        ``(grad_input, grad_weight, grad_bias)``: grad_input like ``input`` (its suggested
        memory format), grad_weight/grad_bias in the shape of weight/bias; a gradient not asked
        for (or of a None parameter) is an empty ``(0,)`` tensor.
    """
    fn = "instance_norm_bwd_triton"
    _assert_input(fn, input, activation)
    assert grad_output.shape == input.shape and grad_output.dtype == input.dtype, \
        f"{fn}: grad_output must match input ({tuple(input.shape)}, {input.dtype}), got " \
        f"{(tuple(grad_output.shape), grad_output.dtype)}"
    _assert_affine(fn, "weight", weight, input)
    _assert_affine(fn, "bias", bias, input)
    _assert_stats(fn, "mean", mean, input)
    _assert_stats(fn, "rstd", rstd, input)
    assert len(output_mask) == 3, f"{fn}: output_mask must have 3 entries, got {list(output_mask)}"
    need_dx, need_dw, need_db = (bool(m) for m in output_mask)
    need_dw = need_dw and weight is not None
    need_db = need_db and bias is not None
    n, c, h, w = (int(s) for s in input.shape)
    hw = h * w
    acc = stats_dtype(input.dtype)
    fmt = output_memory_format(input)
    channels_last = fmt == torch.channels_last
    grad_input = empty_output_like(input) if need_dx else input.new_empty((0,))
    if not (need_dx or need_dw or need_db):
        return grad_input, input.new_empty((0,)), input.new_empty((0,))
    x = input.contiguous(memory_format=fmt)
    dy = grad_output.contiguous(memory_format=fmt)
    mean, rstd = mean.contiguous(), rstd.contiguous()
    sum_dz = input.new_empty((n, c), dtype=acc)
    sum_dz_xhat = input.new_empty((n, c), dtype=acc)
    if input.numel() == 0:
        sum_dz.zero_()
        sum_dz_xhat.zero_()
    else:
        sched = schedule or choose_schedule(n, c, hw, channels_last)
        strides = _activation_strides(channels_last, c, hw)
        dx_arg = grad_input if need_dx else x
        w_arg, stride_wn = _affine_args(weight, mean)
        b_arg, stride_bn = _affine_args(bias, mean)
        slope_hi, slope_lo = _split_float(float(negative_slope))
        flags = dict(HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None,
                     ACTIVATION=int(activation), BLOCK_HW=sched.block_hw,
                     BLOCK_C=sched.block_c, INDEX_64=c * hw >= INDEX_64_FROM,
                     num_warps=sched.num_warps)
        groups = n * triton.cdiv(c, sched.block_c)
        if sched.kind == "one_pass":
            wrap_triton(_bwd_one_pass_kernel)[(groups,)](
                dy, *strides, x, *strides, dx_arg, *strides, w_arg, stride_wn, b_arg, stride_bn,
                mean, rstd, sum_dz, sum_dz_xhat, c, hw, slope_hi, slope_lo, NEED_DX=need_dx,
                **flags)
        elif sched.kind == "looped":
            wrap_triton(_bwd_looped_kernel)[(groups,)](
                dy, *strides, x, *strides, dx_arg, *strides, w_arg, stride_wn, b_arg, stride_bn,
                mean, rstd, sum_dz, sum_dz_xhat, c, hw, slope_hi, slope_lo, NEED_DX=need_dx,
                **flags)
        elif sched.kind == "split":
            part_dz = input.new_empty((n, sched.splits, c), dtype=acc)
            part_dz_xhat = input.new_empty((n, sched.splits, c), dtype=acc)
            wrap_triton(_bwd_partial_sums_kernel)[(groups, sched.splits)](
                dy, *strides, x, *strides, w_arg, stride_wn, b_arg, stride_bn, mean, rstd,
                part_dz, sched.splits * c, c, part_dz_xhat, c, hw, sched.segment, slope_hi,
                slope_lo, **flags)
            # Fixed-order reduction over the S segments (deterministic, no atomics).
            sum_dz = part_dz.sum(1)
            sum_dz_xhat = part_dz_xhat.sum(1)
            if need_dx:
                wrap_triton(_bwd_apply_kernel)[(groups, sched.splits)](
                    dy, *strides, x, *strides, grad_input, *strides, w_arg, stride_wn, b_arg,
                    stride_bn, mean, rstd, sum_dz, sum_dz_xhat, c, hw, sched.segment, slope_hi,
                    slope_lo, **flags)
        else:
            raise ValueError(f"{fn}: schedule.kind must be one of {SCHEDULES}, got "
                             f"{sched.kind!r}")
    grad_weight = _reduce_like(sum_dz_xhat, weight) if need_dw else input.new_empty((0,))
    grad_bias = _reduce_like(sum_dz, bias) if need_db else input.new_empty((0,))
    return grad_input, grad_weight, grad_bias


def compile_report(capability: int = 90,
                   dtypes: Sequence[torch.dtype] = (torch.float32, torch.bfloat16,
                                                    torch.float16, torch.float64)) -> list[dict]:
    """Compile every kernel ahead of time for ``sm_<capability>`` without a GPU (Triton's bundled
    ptxas) at the default thresholds' largest tiles, NCHW and channels_last, and return one row
    per kernel: registers, stack, local (spill) and shared bytes from ``cuobjdump -res-usage``
    (``triton_compile_report``).

    Needs compiled (not interpreted) kernels: run it in a process without TRITON_INTERPRET=1.
    """
    from . import triton_compile_report as report

    report.require_compiled("compile_report")
    type_names = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16",
                  torch.float64: "fp64"}
    activation_ptrs = ("x_ptr", "y_ptr", "dy_ptr", "dx_ptr")
    rows = []
    for dtype in dtypes:
        io, acc = type_names[dtype], type_names[stats_dtype(dtype)]
        for block_c in (1, CHANNELS_LAST_BLOCK_C):
            one_pass = dict(HAS_WEIGHT=True, HAS_BIAS=True, ACTIVATION=2, BLOCK_C=block_c,
                            INDEX_64=False, BLOCK_HW=ONE_PASS_MAX_ELEMENTS // block_c)
            chunked = dict(one_pass, BLOCK_HW=LOOP_CHUNK_ELEMENTS // block_c)
            stats_only = dict(BLOCK_HW=chunked["BLOCK_HW"], BLOCK_C=block_c, INDEX_64=False)
            kernels = [
                (_fwd_one_pass_kernel, one_pass, ONE_PASS_MAX_ELEMENTS),
                (_bwd_one_pass_kernel, dict(one_pass, NEED_DX=True), ONE_PASS_MAX_ELEMENTS),
                (_fwd_looped_kernel, chunked, LOOP_CHUNK_ELEMENTS),
                (_bwd_looped_kernel, dict(chunked, NEED_DX=True), LOOP_CHUNK_ELEMENTS),
                (_fwd_partial_stats_kernel, stats_only, LOOP_CHUNK_ELEMENTS),
                (_fwd_finalize_stats_kernel, dict(BLOCK_S=SPLIT_MAX, BLOCK_C=block_c), 0),
                (_fwd_apply_kernel, chunked, LOOP_CHUNK_ELEMENTS),
                (_bwd_partial_sums_kernel, chunked, LOOP_CHUNK_ELEMENTS),
                (_bwd_apply_kernel, chunked, LOOP_CHUNK_ELEMENTS),
            ]
            for kernel, constexprs, tile in kernels:
                sig = report.signature(
                    kernel, constexprs,
                    pointer_type=lambda name, io=io, acc=acc: io if name in activation_ptrs else acc,
                    scalar_type=lambda name: "fp32" if name.startswith(("eps_", "slope_")) else "i32")
                warps = _num_warps(tile) if tile else 2
                rows.append(dict(kernel=kernel.__name__, dtype=str(dtype).removeprefix("torch."),
                                 arch=f"sm_{capability}", block_c=block_c, num_warps=warps,
                                 **report.kernel_resources(kernel, sig, constexprs, capability,
                                                           warps)))
    return rows


# --------------------------------------------------------------------------------------------
# Op registration: torch.library ops with the compiled ops' arguments, autograd, backend table.

FWD_OP = "stylize_fast::instance_norm_fwd_triton"
BWD_OP = "stylize_fast::instance_norm_bwd_triton"


def _instance_norm_fwd_triton(
    input: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
    activation: int,
    negative_slope: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return instance_norm_forward(input, weight, bias, eps, activation, negative_slope)


def _instance_norm_bwd_triton(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    activation: int,
    negative_slope: float,
    output_mask: Sequence[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return instance_norm_backward(grad_output, input, weight, bias, mean, rstd, activation,
                                  negative_slope, output_mask)


def supports(input: torch.Tensor, weight: torch.Tensor | None = None,
             bias: torch.Tensor | None = None) -> str | None:
    """Legality check for the backend registry: None if the Triton kernels can run ``input``,
    else the reason."""
    if input.dtype not in FLOATING_DTYPES:
        return f"dtype {input.dtype} is not supported (float16, bfloat16, float32, float64)"
    if input.device.type == "cpu" and not backends.triton_interpreted():
        return "Triton runs on CPU tensors only in its interpreter (set TRITON_INTERPRET=1)"
    if input.device.type not in ("cpu", "cuda"):
        return f"Triton kernels run on CUDA tensors, got a {input.device.type} tensor"
    return None


instance_norm_fwd_triton = define_op(FWD_OP, _instance_norm_fwd_triton,
                                     _instance_norm.fake_forward)
instance_norm_bwd_triton = define_op(BWD_OP, _instance_norm_bwd_triton,
                                     _instance_norm.fake_backward)
_instance_norm.register_autograd(FWD_OP, torch.ops.stylize_fast.instance_norm_bwd_triton)
backends.register(_instance_norm.OP, "triton", torch.ops.stylize_fast.instance_norm_fwd_triton,
                  devices=("cuda", "cpu"), supports=supports)
