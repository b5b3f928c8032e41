"""Emulated CUDA normalize-on-load convolution (padded_conv_kernels.cu, the forward with its norm
flag on, and the merge of its output statistics) vs the float64 reference
(stylize_fast/ops/norm_conv_reference.py): the norm applied by the loads (no norm, and input
activations none / relu / leaky_relu), zeros / reflect / replicate padding, folded upsampling x2,
strides 1 and 2, bias and residual (its own layout) on and off, the relu epilogue, the per-tile
output statistics merged per image (tiles straddling images, images of one or several tiles, an
image ending exactly at a tile end or one row into the next, many images in one tile); NCHW,
channels_last and strided inputs; float32, float16, bfloat16 and float64; odd shapes, C_out > 64
and C_in > 64."""

from __future__ import annotations

from typing import NamedTuple

import torch

from stylize_fast import testing
from stylize_fast.ops import norm_conv_reference as ref
from stylize_fast.ops.common import PADDING_MODE_NAMES

MODES = {int(code): name for name, code in PADDING_MODE_NAMES.items()}  # kernel code -> name
NEGATIVE_SLOPE = 0.2
STATS_EPS = 1e-5
NO_NORM = -1  # Case.norm: no scale / shift (a plain convolution)


class Geometry(NamedTuple):
    name: str
    shape: tuple[int, int, int, int]  # input (N, C_in, H, W)
    c_out: int
    kernel: tuple[int, int]
    padding: tuple[int, int]


GEOMETRIES = [
    Geometry("odd 3x3, 63-pixel images: tiles straddle images", (2, 3, 7, 9), 5, (3, 3), (1, 1)),
    Geometry("C_out > 64: two column tiles", (2, 5, 5, 7), 70, (3, 3), (1, 1)),
    Geometry("64-pixel images: each ends at a tile end", (3, 3, 8, 8), 4, (3, 3), (1, 1)),
    Geometry("99-pixel images: several tiles per image", (2, 4, 9, 11), 6, (3, 3), (1, 1)),
    Geometry("65-pixel images: one row in the next tile", (2, 3, 5, 13), 4, (3, 3), (1, 1)),
    Geometry("6-pixel images: many images per tile", (12, 3, 3, 2), 4, (3, 3), (1, 1)),
    Geometry("pad = size - 1 (every border variant)", (1, 2, 5, 6), 3, (5, 5), (4, 4)),
    Geometry("rectangular kernel, one-sided padding", (1, 4, 6, 5), 3, (1, 3), (0, 1)),
    Geometry("C_in > 64: K = 594", (1, 66, 4, 5), 3, (3, 3), (1, 1)),
]
LAYOUTS = ["contiguous", "channels_last"]


class Case(NamedTuple):
    geometry: Geometry
    layout: str
    dtype: torch.dtype
    stride: int
    mode: int
    up: int
    norm: int  # input activation 0 / 1 / 2 with the norm, or NO_NORM
    bias: bool
    residual: str | None  # None, or the residual's layout
    activation: int
    stats: bool


def cases() -> list[Case]:
    """float32: every geometry x layout x padding mode, the other options in turn, with periods
    (4 norms; 5 of plain / upsample x2 / stride 2; 7 residuals; 11 activations; 13 statistics;
    17 biases) that let each meet every layout and padding mode; float16, bfloat16, float64 and
    strided inputs on a few geometries."""
    out = []
    for i, g in enumerate(GEOMETRIES):
        for j, (layout, mode) in enumerate((lay, m) for lay in LAYOUTS for m in MODES):
            k = 6 * i + j
            up, stride = ((1, 1), (2, 1), (1, 2), (1, 1), (2, 1))[k % 5]
            out.append(Case(g, layout, torch.float32, stride, mode, up,
                            norm=(0, 1, 2, NO_NORM)[k % 4], bias=k % 17 != 3,
                            residual=(None, "contiguous", "channels_last")[k % 7 % 3],
                            activation=k % 11 % 2, stats=k % 13 != 5))
    g0, g1, g2, g3, g4 = GEOMETRIES[:5]
    out += [
        Case(g0, "channels_last", torch.float16, 1, 1, 2, 2, True, "contiguous", 1, True),
        Case(g3, "contiguous", torch.float16, 2, 0, 1, 1, True, None, 0, True),
        Case(g1, "contiguous", torch.bfloat16, 1, 2, 1, 0, True, "channels_last", 0, True),
        Case(g4, "channels_last", torch.bfloat16, 1, 1, 2, 1, False, None, 1, True),
        Case(g0, "contiguous", torch.float64, 1, 1, 1, 2, True, "channels_last", 1, True),
        Case(g4, "channels_last", torch.float64, 1, 2, 2, 1, False, "contiguous", 0, True),
        Case(g2, "contiguous", torch.float64, 2, 0, 1, NO_NORM, True, None, 0, True),
        Case(g0, "strided", torch.float32, 1, 1, 1, 1, True, "strided", 0, True),
        Case(g3, "strided", torch.float32, 1, 2, 2, 2, False, None, 1, True),
    ]
    return out


def _tolerance(dtype: torch.dtype) -> dict[str, float]:
    # As run_padded_conv.py's forward: outputs sum C * k * k products.
    return testing.tolerance(dtype, 4.0)


def _norm(x: torch.Tensor, stats_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """scale, shift of an instance norm of x with a random affine (normalised values O(1), both
    signs, so the input activations matter)."""
    n, c = x.shape[:2]
    var, mean = torch.var_mean(x.double(), dim=(2, 3), correction=0)
    gamma = torch.rand(n, c, dtype=torch.float64) + 0.5
    beta = torch.randn(n, c, dtype=torch.float64) * 0.5
    scale = gamma / torch.sqrt(var + 1e-5)
    return scale.to(stats_dtype).contiguous(), (beta - mean * scale).to(stats_dtype).contiguous()


def check_case(emu, case: Case) -> None:
    """Output, mean and rstd vs the float64 reference run on float64 copies of the same (rounded)
    arguments."""
    g, dtype = case.geometry, case.dtype
    stats_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    stride, padding = [case.stride] * 2, list(g.padding)
    x = testing.make_input(g.shape, dtype, case.layout)
    scale = shift = None
    in_act = 0
    if case.norm != NO_NORM:
        scale, shift = _norm(x, stats_dtype)
        in_act = case.norm
    fan_in = g.shape[1] * g.kernel[0] * g.kernel[1]
    w = (torch.randn(g.c_out, g.shape[1], *g.kernel, dtype=torch.float64) * fan_in ** -0.5)
    w = w.to(dtype)
    b = torch.randn(g.c_out, dtype=torch.float64).to(dtype) if case.bias else None
    oh = (g.shape[2] * case.up + 2 * padding[0] - g.kernel[0]) // case.stride + 1
    ow = (g.shape[3] * case.up + 2 * padding[1] - g.kernel[1]) // case.stride + 1
    res = None
    if case.residual is not None:
        res = testing.make_input((g.shape[0], g.c_out, oh, ow), dtype, case.residual,
                                 mean=0.0, std=1.0)
    eps = STATS_EPS if case.stats else -1.0
    with testing.poisoned_outputs():
        y, mean, rstd = emu.fwd(x, scale, shift, in_act, NEGATIVE_SLOPE, w, b, stride,
                                padding, case.mode, case.activation, case.up, res, eps)
    d64 = testing.float64_copy
    y64, mean64, rstd64 = ref.norm_conv2d_forward(
        d64(x), d64(scale), d64(shift), in_act, NEGATIVE_SLOPE, d64(w), d64(b), tuple(stride),
        tuple(padding), case.mode, case.activation, case.up, d64(res), eps)
    testing.assert_all_written(y)
    testing.assert_close(y, y64, name="output", **_tolerance(dtype))
    assert y.dtype == dtype, f"output dtype {y.dtype}"
    expected_format = (torch.channels_last if case.layout == "channels_last"
                       else torch.contiguous_format)
    assert y.is_contiguous(memory_format=expected_format), "output not in the input's layout"
    if case.activation:
        assert not (y < 0).any(), "relu not applied"
    if case.stats:
        for got, want, name in ((mean, mean64, "mean"), (rstd, rstd64, "rstd")):
            testing.assert_all_written(got, name)
            assert got.dtype == stats_dtype, f"{name}: dtype {got.dtype}"
            testing.assert_close(got, want, name=name, **_tolerance(dtype))
    else:
        assert mean.shape == (0,) and rstd.shape == (0,), "statistics without stats_eps"


def run(emu) -> tuple[int, int]:
    """Runs every case on the emulated extension; returns (cases, failures)."""
    torch.manual_seed(0)
    failures = 0
    all_cases = cases()
    for case in all_cases:
        try:
            check_case(emu, case)
        except Exception as exc:  # noqa: BLE001 (report every failing case)
            failures += 1
            print(f"FAIL {case.geometry.name} {case.geometry.shape} {case.layout} {case.dtype} "
                  f"stride={case.stride} mode={MODES[case.mode]} up={case.up} norm={case.norm} "
                  f"bias={case.bias} residual={case.residual} activation={case.activation} "
                  f"stats={case.stats}: {type(exc).__name__}: {exc}"[:1500], flush=True)
    print(f"cuda emulation, norm conv: {len(all_cases)} cases, {failures} failed", flush=True)
    return len(all_cases), failures
