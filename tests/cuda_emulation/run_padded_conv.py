"""Emulated CUDA padded-conv kernels (csrc/cuda/padded_conv_kernels.cu) vs the float64
reference (F.pad + F.conv2d): forward, input / weight / bias gradients; NCHW, channels_last and
strided inputs; strides 1 and 2; zeros / reflect / replicate padding; four dtypes; odd shapes,
more than one 64-wide tile along C_out and C_in, the weight gradient split over several blocks;
the relu epilogue (activation 1: relu in the forward's store, the backward's loads of grad_output
through the mask output > 0, output in a layout other than grad_output's too); nearest
upsampling folded into the loads (up 2 and 3: the reference upsamples first; the input gradient
is the stored input's)."""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch

from stylize_fast import testing
from stylize_fast.ops import padded_conv_reference as ref
from stylize_fast.ops.common import PADDING_MODE_NAMES

MODES = {int(code): name for name, code in PADDING_MODE_NAMES.items()}  # kernel code -> name


class Geometry(NamedTuple):
    name: str
    shape: tuple[int, int, int, int]  # input (N, C_in, H, W)
    c_out: int
    kernel: tuple[int, int]
    padding: tuple[int, int]


GEOMETRIES = [
    Geometry("odd 3x3", (2, 3, 7, 9), 5, (3, 3), (1, 1)),
    Geometry("rectangular kernel, one-sided padding", (1, 4, 6, 5), 3, (1, 3), (0, 1)),
    Geometry("pad = size - 1 (every border variant)", (1, 2, 5, 6), 3, (5, 5), (4, 4)),
    Geometry("C_out > 64: two column tiles", (2, 5, 5, 7), 70, (3, 3), (1, 1)),
    Geometry("C_in > 64: two input-gradient column tiles", (1, 66, 4, 5), 3, (3, 3), (1, 1)),
    Geometry("> 256 rows: weight gradient split", (2, 3, 17, 19), 4, (3, 3), (1, 1)),
]
LAYOUTS = ["contiguous", "channels_last"]
HALF_DTYPES = [torch.float16, torch.bfloat16, torch.float64]


class Case(NamedTuple):
    geometry: Geometry
    layout: str
    dtype: torch.dtype
    stride: int
    mode: int
    bias: bool
    activation: int = 0
    up: int = 1


def cases() -> list[Case]:
    """float32: every geometry x layout x stride x padding mode; the other dtypes on the first and
    the split geometry; strided (non-contiguous) input on the first. Bias on and off alternate."""
    out = []
    for i, (g, layout, stride, mode) in enumerate(
            itertools.product(GEOMETRIES, LAYOUTS, (1, 2), MODES)):
        out.append(Case(g, layout, torch.float32, stride, mode, bias=i % 3 != 2))
    for i, (g, dtype, stride, mode) in enumerate(
            itertools.product((GEOMETRIES[0], GEOMETRIES[5]), HALF_DTYPES, (1, 2), MODES)):
        out.append(Case(g, LAYOUTS[i % 2], dtype, stride, mode, bias=i % 4 != 3))
    out += [Case(GEOMETRIES[0], "strided", torch.float32, 1, mode, True) for mode in MODES]
    # relu epilogue: every geometry x layout x stride (padding modes in turn), and the other
    # dtypes on the first geometry.
    for i, (g, layout, stride) in enumerate(itertools.product(GEOMETRIES, LAYOUTS, (1, 2))):
        out.append(Case(g, layout, torch.float32, stride, list(MODES)[i % 3], i % 3 != 2, 1))
    for i, dtype in enumerate(HALF_DTYPES):
        out.append(Case(GEOMETRIES[0], LAYOUTS[i % 2], dtype, 1 + i % 2, list(MODES)[i % 3],
                        True, 1))
    # folded upsampling: every padding mode x up 2 / 3 on the odd 3x3 geometry (both layouts),
    # the two-tile and split geometries, stride 2, the relu epilogue, bfloat16 and float64.
    for i, (mode, up) in enumerate(itertools.product(MODES, (2, 3))):
        out.append(Case(GEOMETRIES[0], LAYOUTS[i % 2], torch.float32, 1, mode, i % 2 == 0, 0, up))
    out += [Case(GEOMETRIES[3], "channels_last", torch.float32, 1, 1, True, 1, 2),
            Case(GEOMETRIES[4], "contiguous", torch.float32, 1, 2, False, 0, 2),
            Case(GEOMETRIES[5], "contiguous", torch.float32, 2, 1, True, 0, 2),
            Case(GEOMETRIES[0], "channels_last", torch.bfloat16, 1, 1, True, 1, 2),
            Case(GEOMETRIES[0], "contiguous", torch.float64, 1, 0, True, 0, 2)]
    return out


def _tolerance(dtype: torch.dtype, gradient: bool) -> dict[str, float]:
    # As tests/test_padded_conv.py: outputs sum C * k * k products, gradients more.
    if not gradient:
        return testing.tolerance(dtype, 4.0)
    return testing.tolerance(dtype, 10.0 if dtype in (torch.float32, torch.float64) else 20.0)


def check_case(emu, case: Case) -> int:
    """Forward and backward vs the float64 reference; returns the weight-gradient split count."""
    g, dtype = case.geometry, case.dtype
    stride, padding = (case.stride, case.stride), g.padding
    x = testing.make_input(g.shape, dtype, case.layout)
    scale = (g.shape[1] * g.kernel[0] * g.kernel[1]) ** -0.5
    w = (torch.randn(g.c_out, g.shape[1], *g.kernel, dtype=torch.float64) * scale).to(dtype)
    b = torch.randn(g.c_out, dtype=torch.float64).to(dtype) if case.bias else None
    with testing.poisoned_outputs():
        y = emu.fwd(x, w, b, list(stride), list(padding), case.mode, case.activation, case.up)
    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    b64 = b.double().requires_grad_() if b is not None else None
    x64_read = x64 if case.up == 1 else torch.nn.functional.interpolate(
        x64, scale_factor=float(case.up), mode="nearest")
    y64 = ref.padded_conv2d_forward(x64_read, w64, b64, stride, padding, case.mode)
    testing.assert_all_written(y)
    if case.activation:
        clamped = (y64 < 0).double().mean().item()
        assert 0.1 < clamped < 0.9, f"{clamped:.0%} of the outputs negative: the mask is untested"
        testing.assert_close(y, torch.relu(y64), name="output", **_tolerance(dtype, False))
        assert (y[y64 < 0] <= 0).all() and not (y < 0).any(), "relu not applied"
    else:
        testing.assert_close(y, y64, name="output", **_tolerance(dtype, False))
    expected_format = torch.channels_last if case.layout == "channels_last" else torch.contiguous_format
    assert y.is_contiguous(memory_format=expected_format), "output not in the input's layout"

    gy = testing.make_input(y.shape, dtype, case.layout, mean=0.0, std=1.0)
    # The mask is read from an output in the other layout than grad_output's: its own strides.
    out = y.contiguous(memory_format=torch.contiguous_format if y.stride(1) == 1
                       else torch.channels_last)
    with testing.poisoned_outputs():
        gx, gw, gb, splits = emu.bwd(gy, x, w, list(stride), list(padding), case.mode, case.bias,
                                     out if case.activation else None, case.activation, case.up)
    wanted = [t for t in (x64, w64, b64) if t is not None]
    # relu's backward with the kernel's own output as the mask (what autograd hands it).
    gy64 = gy.double() * (y > 0) if case.activation else gy.double()
    expected = torch.autograd.grad(y64, wanted, gy64)
    got = [gx, gw] + ([gb] if case.bias else [])
    for a, e, name in zip(got, expected, ("grad_input", "grad_weight", "grad_bias")):
        testing.assert_all_written(a, name)
        assert a.shape == e.shape and a.dtype == dtype, f"{name}: {a.shape} {a.dtype}"
        testing.assert_close(a, e, name=name, **_tolerance(dtype, True))
    return splits


def run(emu) -> tuple[int, int]:
    """Runs every case on the emulated extension; returns (cases, failures)."""
    torch.manual_seed(0)
    failures = 0
    splits_seen = set()
    all_cases = cases()
    for case in all_cases:
        try:
            splits_seen.add(check_case(emu, case))
        except Exception as exc:  # noqa: BLE001 (report every failing case)
            failures += 1
            print(f"FAIL {case.geometry.name} {case.geometry.shape} {case.layout} {case.dtype} "
                  f"stride={case.stride} mode={MODES[case.mode]} bias={case.bias} "
                  f"activation={case.activation} up={case.up}: "
                  f"{type(exc).__name__}: {exc}"[:1500], flush=True)
    print(f"weight-gradient split counts reached: {sorted(splits_seen)}")
    print(f"cuda emulation, padded conv: {len(all_cases)} cases, {failures} failed", flush=True)
    return len(all_cases), failures
