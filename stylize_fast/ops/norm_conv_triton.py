"""Triton kernels of the normalize-on-load convolution ``norm_conv2d`` (ops/norm_conv.py has the
contract) and of the instance-norm statistics it consumes (``instance_norm_stats``).

Forward (``_fwd_kernel``): the implicit GEMM of padded_conv_triton.py (``M = (oh, ow)`` pixels
of one image x ``N = c_out``, ``K = (kh, kw, c_in)``, the same padding index maps and folded
nearest upsampling ``UP``), with the normalisation done in the loader: every element gathered
from a real pixel (reflect / replicate padding included, as those repeat normalised pixels) is
read raw and mapped to ``act_in(x * scale[n, c] + shift[n, c])`` in the accumulation dtype
(float32; float64 for float64), then rounded to the input dtype for ``tl.dot`` -- what an
instance-norm layer would have stored. Elements of zero padding stay exactly 0: the padding pads
the normalised tensor. Epilogue: ``+ bias``, ``+ residual`` (any strides), relu, store in the
input's memory format.

Tiles never straddle images: the grid is ``(N * tiles_per_image, c_out tiles)``, each program's
``M`` rows being pixels of one image ``n`` (the last tile of an image is partly masked). So the
per-(n, c) ``scale`` / ``shift`` of a ``K`` block are one vector load, and the statistics
epilogue needs no per-row image masks.

Statistics (``stats_eps >= 0``): each program writes, per output channel of its tile, the tile's
mean and its M2 centred on that mean (of the values as stored, i.e. rounded to the output dtype:
the tensor the next layer normalises) into a partial buffer ``(N, T, C_out)``; the host merges
the ``T`` tiles of each image in float64 with Chan et al.'s parallel formula in its k-way form
(``mean = sum(n_t mean_t) / n``, ``M2 = sum(M2_t) + sum(n_t (mean_t - mean)^2)``) -- a fixed
reduction order, so the result is the same run to run. ``instance_norm_stats`` reuses the
partial layout with a kernel that only reads ``x``.

Backward: ``norm_conv.register_autograd`` with the Triton padded-convolution backward (the
normalised input is rebuilt once, as training stores it anyway).

Bytes moved (``|x|`` input, ``|y|`` output): the unfused chain instance_norm (reads ``x`` twice,
writes ``z``) -> activation (reads / writes ``z``) -> [upsample (writes ``UP^2 |z|``)] -> pad
-> conv moves ~``6|x| + |y|`` plus the upsampled copies; here one launch reads ``|x|`` (re-read
per tap through the cache), writes ``|y|`` and, with statistics, an ``N * T * C_out`` partial
(``T = cdiv(OH * OW, BLOCK_M)``), sparing the next layer's statistics pass over ``|y|``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from .. import backends
from . import norm_conv, padded_conv_triton
from .common import Activation, output_memory_format, stats_dtype
from .padded_conv_triton import (
    _acc_dtype,
    _activation,
    _geometry,
    _mma,
    _output_size,
    _pow2_block,
    _source_index,
    _upcast,
)
from .triton_op import define_op

# --------------------------------------------------------------------------------------------
# Kernels


@triton.jit
def _normalize(x, s, t, slope_ptr, ACC_DTYPE: tl.constexpr, IN_ACT: tl.constexpr):
    """``act_in(x * s + t)`` in ACC_DTYPE (s, t broadcast over rows)."""
    z = x.to(ACC_DTYPE) * s + t
    if IN_ACT == 1:
        z = tl.where(z < 0, 0.0, z).to(ACC_DTYPE)  # NaN passes, as torch.relu
    if IN_ACT == 2:
        # The slope is read from memory in ACC_DTYPE: a float scalar argument would be float32.
        z = tl.where(z < 0, z * tl.load(slope_ptr), z)
    return z


@triton.jit
def _fwd_kernel(
    x_ptr, sxn, sxc, sxh, sxw,  # input (N, C_in, H / UP, W / UP), raw (before the norm)
    scale_ptr, shift_ptr,  # (N, C_in), contiguous, ACC_DTYPE; dummies without HAS_NORM
    slope_ptr,  # (1,) ACC_DTYPE leaky_relu slope when IN_ACT == 2, else a dummy
    w_ptr, swo, swi, swh, sww,  # weight (C_out, C_in, KH, KW)
    b_ptr,  # bias (C_out,) or a dummy without HAS_BIAS
    r_ptr, srn, src, srh, srw,  # residual (N, C_out, OH, OW) or a dummy without HAS_RESIDUAL
    y_ptr, syn, syc, syh, syw,  # output (N, C_out, OH, OW)
    part_ptr,  # statistics partials (2, N, T, C_out) contiguous ACC_DTYPE: tile mean, tile M2
    N, C_in, H, W, C_out, OH, OW, T,  # H, W: upsampled sizes; T: tiles per image
    STRIDE_H, STRIDE_W, PAD_H, PAD_W,
    KH: tl.constexpr, KW: tl.constexpr, MODE: tl.constexpr,
    HAS_NORM: tl.constexpr, IN_ACT: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr, ACTIVATION: tl.constexpr, STATS: tl.constexpr,
    UP: tl.constexpr, ACC_DTYPE: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    n = pid_m // T  # this program's image (tiles never straddle images)
    tile = pid_m % T
    offs_m = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < OH * OW
    ow = offs_m % OW
    oh = offs_m // OW
    n64 = n.to(tl.int64)
    co = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    co_mask = co < C_out
    offs_k = tl.arange(0, BLOCK_K)
    x_n = x_ptr + n64 * sxn

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
            x_row = x_n + ih.to(tl.int64) * sxh + iw.to(tl.int64) * sxw
            w_tap = w_ptr + kh * swh + kw * sww
            for c0 in range(0, C_in, BLOCK_K):
                ci = c0 + offs_k
                ci_mask = ci < C_in
                a_mask = row_mask[:, None] & ci_mask[None, :]
                a = tl.load(x_row[:, None] + ci[None, :] * sxc, mask=a_mask, other=0.0)
                if HAS_NORM:
                    s = tl.load(scale_ptr + n64 * C_in + ci, mask=ci_mask, other=0.0)
                    t = tl.load(shift_ptr + n64 * C_in + ci, mask=ci_mask, other=0.0)
                    z = _normalize(a, s[None, :], t[None, :], slope_ptr, ACC_DTYPE, IN_ACT)
                    # Zero padding (and masked rows / channels) is 0 *after* the norm.
                    a = tl.where(a_mask, z, 0.0).to(x_ptr.dtype.element_ty)
                b = tl.load(w_tap + ci[:, None] * swi + co[None, :] * swo,
                            mask=ci_mask[:, None] & co_mask[None, :], other=0.0)
                acc = _mma(a, b, acc, UPCAST)

    out_mask = m_mask[:, None] & co_mask[None, :]
    if HAS_BIAS:
        acc += tl.load(b_ptr + co, mask=co_mask, other=0.0).to(ACC_DTYPE)[None, :]
    if HAS_RESIDUAL:
        r = tl.load(r_ptr + n64 * srn + co[None, :] * src + (oh * srh + ow * srw)[:, None],
                    mask=out_mask, other=0.0)
        acc += r.to(ACC_DTYPE)
    if ACTIVATION == 1:
        acc = tl.where(acc < 0, 0.0, acc).to(ACC_DTYPE)  # NaN passes, as torch.relu
    y = acc.to(y_ptr.dtype.element_ty)
    tl.store(y_ptr + n64 * syn + co[None, :] * syc + (oh * syh + ow * syw)[:, None], y,
             mask=out_mask)

    if STATS:
        # Moments of the stored values, centred on this tile's own mean.
        count = tl.minimum(OH * OW - tile * BLOCK_M, BLOCK_M).to(ACC_DTYPE)
        v = tl.where(out_mask, y.to(ACC_DTYPE), 0.0)
        mean = tl.sum(v, axis=0) / count
        d = tl.where(out_mask, v - mean[None, :], 0.0)
        m2 = tl.sum(d * d, axis=0)
        p = part_ptr + (n64 * T + tile) * C_out + co
        tl.store(p, mean, mask=co_mask)
        tl.store(p + N * T * C_out, m2, mask=co_mask)


@triton.jit
def _stats_kernel(
    x_ptr, sxn, sxc, sxh, sxw,  # input (N, C, H, W)
    part_ptr,  # partials (2, N, T, C) contiguous ACC_DTYPE: tile mean, tile M2
    N, C, H, W, T,
    ACC_DTYPE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_c = tl.program_id(1)
    n = (pid_m // T).to(tl.int64)
    tile = pid_m % T
    offs_m = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < H * W
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < C
    mask = m_mask[:, None] & c_mask[None, :]
    rows = (offs_m // W).to(tl.int64) * sxh + (offs_m % W).to(tl.int64) * sxw
    v = tl.load(x_ptr + n * sxn + c[None, :] * sxc + rows[:, None], mask=mask, other=0.0)
    v = v.to(ACC_DTYPE)
    count = tl.minimum(H * W - tile * BLOCK_M, BLOCK_M).to(ACC_DTYPE)
    mean = tl.sum(v, axis=0) / count
    d = tl.where(mask, v - mean[None, :], 0.0)
    m2 = tl.sum(d * d, axis=0)
    p = part_ptr + (n * T + tile) * C + c
    tl.store(p, mean, mask=c_mask)
    tl.store(p + N * T * C, m2, mask=c_mask)


# --------------------------------------------------------------------------------------------
# Host side


def _merge_partials(part: torch.Tensor, pixels: int, block_m: int, eps: float,
                    dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Partials ``(2, N, T, C)`` (tile means, tile M2s) of planes of ``pixels`` elements cut
    into tiles of ``block_m`` -> mean, rstd ``(N, C)`` in ``dtype``. Chan's parallel merge in
    float64, all tiles at once, in a fixed order."""
    tiles = part.shape[2]
    counts = torch.full((tiles,), float(block_m), dtype=torch.float64, device=part.device)
    counts[-1] = float(pixels - (tiles - 1) * block_m)
    counts = counts.reshape(1, tiles, 1)
    tile_mean, tile_m2 = part.to(torch.float64).unbind(0)
    mean = (tile_mean * counts).sum(1) / pixels
    m2 = tile_m2.sum(1) + (counts * (tile_mean - mean[:, None, :]).square()).sum(1)
    rstd = torch.rsqrt(m2 / pixels + eps)
    return mean.to(dtype), rstd.to(dtype)


def _fwd_blocks(dtype: torch.dtype, pixels: int, c_in: int, c_out: int) -> tuple[int, int, int]:
    # tl.dot needs tiles >= 16 in every dimension; float64 tiles are halved (registers). BLOCK_M
    # shrinks with small images: a tile covers one image only, the rest would be masked.
    big = 32 if dtype == torch.float64 else 64
    return (_pow2_block(pixels, 16, big), _pow2_block(c_out, 16, big),
            _pow2_block(c_in, 16, 32))


def _norm_conv2d_fwd(input: torch.Tensor, scale: torch.Tensor | None,
                     shift: torch.Tensor | None, input_activation: int, negative_slope: float,
                     weight: torch.Tensor, bias: torch.Tensor | None, stride: Sequence[int],
                     padding: Sequence[int], padding_mode: int, activation: int, upsample: int,
                     residual: torch.Tensor | None, stats_eps: float
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input ``(N, C_in, H, W)`` raw, scale / shift ``(N, C_in)`` (statistics dtype) or None ->
    (output ``(N, C_out, OH, OW)`` in the input's memory format, mean, rstd ``(N, C_out)`` or
    empty ``(0,)`` when ``stats_eps < 0``)."""
    fn = "norm_conv2d_fwd_triton"
    up = int(upsample)
    sh, sw, ph, pw = _geometry(input, weight, stride, padding, padding_mode, fn, up)
    in_act = int(input_activation)
    assert in_act in tuple(Activation), f"{fn}: input_activation must be 0, 1 or 2, got {in_act}"
    assert (scale is None) == (shift is None), f"{fn}: give both scale and shift or neither"
    assert scale is not None or in_act == Activation.NONE, \
        f"{fn}: input_activation {in_act} needs scale and shift"
    assert up == 1 or (sh, sw) == (1, 1), f"{fn}: upsample needs stride 1"
    n, c_in, h, w = input.shape
    h, w = h * up, w * up
    c_out, _, kh, kw = weight.shape
    oh, ow = _output_size(h, ph, kh, sh), _output_size(w, pw, kw, sw)
    acc_torch = stats_dtype(input.dtype)
    if scale is not None:
        assert tuple(scale.shape) == (n, c_in) and tuple(shift.shape) == (n, c_in), \
            f"{fn}: scale and shift must have shape {(n, c_in)}, got {tuple(scale.shape)} and " \
            f"{tuple(shift.shape)}"
        scale, shift = scale.to(acc_torch).contiguous(), shift.to(acc_torch).contiguous()
    if residual is not None:
        assert tuple(residual.shape) == (n, c_out, oh, ow), \
            f"{fn}: residual must have shape {(n, c_out, oh, ow)}, got {tuple(residual.shape)}"
    stats = float(stats_eps) >= 0
    out = torch.empty((n, c_out, oh, ow), dtype=input.dtype, device=input.device,
                      memory_format=output_memory_format(input))
    bm, bn, bk = _fwd_blocks(input.dtype, oh * ow, c_in, c_out)
    tiles = triton.cdiv(oh * ow, bm)
    part = torch.empty((2, n, tiles, c_out) if stats else (1,), dtype=acc_torch,
                       device=input.device)
    slope = torch.full((1,), float(negative_slope), dtype=acc_torch, device=input.device) \
        if in_act == Activation.LEAKY_RELU else part
    if out.numel() > 0:
        res = residual if residual is not None else out
        grid = (n * tiles, triton.cdiv(c_out, bn))
        torch.library.wrap_triton(_fwd_kernel)[grid](
            input, *input.stride(),
            scale if scale is not None else part, shift if shift is not None else part, slope,
            weight, *weight.stride(),
            bias if bias is not None else weight,
            res, *res.stride(),
            out, *out.stride(),
            part,
            n, c_in, h, w, c_out, oh, ow, tiles, sh, sw, ph, pw,
            KH=kh, KW=kw, MODE=int(padding_mode), HAS_NORM=scale is not None, IN_ACT=in_act,
            HAS_BIAS=bias is not None, HAS_RESIDUAL=residual is not None,
            ACTIVATION=_activation(activation, fn), STATS=stats, UP=up,
            ACC_DTYPE=_acc_dtype(input.dtype), UPCAST=_upcast(input.dtype),
            BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=4)
    if not stats:
        # Two distinct (0,) tensors: outputs of a custom op may not alias each other.
        return out, input.new_empty((0,), dtype=acc_torch), input.new_empty((0,), dtype=acc_torch)
    mean, rstd = _merge_partials(part, oh * ow, bm, float(stats_eps), acc_torch)
    return out, mean, rstd


def _instance_norm_stats(input: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """input ``(N, C, H, W)``, any strides -> mean, rstd ``(N, C)`` in the statistics dtype."""
    n, c, h, w = input.shape
    acc_torch = stats_dtype(input.dtype)
    big = 32 if input.dtype == torch.float64 else 64
    bm = _pow2_block(h * w, 16, big * 4)
    bc = _pow2_block(c, 1, 16)
    tiles = triton.cdiv(h * w, bm)
    part = torch.empty((2, n, tiles, c), dtype=acc_torch, device=input.device)
    grid = (n * tiles, triton.cdiv(c, bc))
    torch.library.wrap_triton(_stats_kernel)[grid](
        input, *input.stride(), part, n, c, h, w, tiles,
        ACC_DTYPE=_acc_dtype(input.dtype), BLOCK_M=bm, BLOCK_C=bc, num_warps=4)
    return _merge_partials(part, h * w, bm, float(eps), acc_torch)


def supports(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
             stride: Sequence[int], padding: Sequence[int], padding_mode: int,
             upsample: int = 1) -> str | None:
    """Legality check of the ``triton`` backend (what ``backends.select`` passes): the padded
    convolution's. scale / shift / residual were checked by ``norm_conv.check_args``."""
    return padded_conv_triton.supports(input, weight, bias, stride, padding, padding_mode,
                                       upsample)


def supports_stats(input: torch.Tensor) -> str | None:
    if input.dtype not in padded_conv_triton._FLOAT_DTYPES:
        return f"dtype {input.dtype} is not supported (float16, bfloat16, float32, float64)"
    if input.device.type == "cpu" and not backends.triton_interpreted():
        return "CPU tensors need TRITON_INTERPRET=1"
    if input.numel() >= 2**31:
        return "tensors of 2**31 or more elements are not supported"
    return None


# Schemas as declared for the compiled ops in csrc/ops.cpp.
_FWD_SCHEMA = ("(Tensor input, Tensor? scale, Tensor? shift, int input_activation, "
               "float negative_slope, Tensor weight, Tensor? bias, int[2] stride, "
               "int[2] padding, int padding_mode, int activation, int upsample, "
               "Tensor? residual, float stats_eps) -> (Tensor output, Tensor mean, Tensor rstd)")
_STATS_SCHEMA = "(Tensor input, float eps) -> (Tensor mean, Tensor rstd)"

norm_conv2d_fwd_triton = define_op("stylize_fast::norm_conv2d_fwd_triton", _norm_conv2d_fwd,
                                   norm_conv.fake_forward, _FWD_SCHEMA)
norm_conv.register_autograd(norm_conv2d_fwd_triton,
                            torch.ops.stylize_fast.padded_conv2d_bwd_triton)
backends.register(norm_conv.OP, "triton", torch.ops.stylize_fast.norm_conv2d_fwd_triton,
                  devices=("cuda", "cpu"), supports=supports)

instance_norm_stats_triton = define_op("stylize_fast::instance_norm_stats_triton",
                                       _instance_norm_stats, norm_conv.fake_stats, _STATS_SCHEMA)
norm_conv.register_stats_autograd(instance_norm_stats_triton)
backends.register(norm_conv.STATS_OP, "triton",
                  torch.ops.stylize_fast.instance_norm_stats_triton, devices=("cuda", "cpu"),
                  supports=supports_stats)
