"""Tests specific to the library path of the CPU padded convolution (csrc/cpu/padded_conv_cpu.cpp,
"border fix-up"): oneDNN with zero padding over the whole input, then the output pixels within
reach of the border recomputed from their true-padded patches (one GEMM per chunk of pixels),
and in the backward the ring's input-gradient contributions folded onto their source pixels
and the weight-gradient corrections (G^T times the ring patches). Every call here runs with
STYLIZE_FAST_CONV_ALGO=library and asserts that the op really takes that path, then compares
with the float64 reference on fresh random inputs, outputs poisoned (NaN) beforehand.

Covered: the three padding modes, strides 1..3, kernels 1..9 square and rectangular, padding
larger than half the kernel, pad = size - 1, asymmetric padding, batches 1 and 3, enough border
pixels for several GEMM chunks (a sample split across chunks), every dtype, contiguous /
channels_last / strided inputs, every output mask, determinism.
Generic backend-parametrised tests live in test_padded_conv.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import stylize_fast as sf
from stylize_fast.ops import padded_conv
from stylize_fast.testing import (
    assert_all_written,
    assert_close,
    assert_half_close,
    make_input,
    poisoned_outputs,
    pytorch_padded_conv2d_grads,
)

pytestmark = pytest.mark.skipif(not sf.backends.available()["cpu"],
                                reason="C++ extension not built")

ops = torch.ops.stylize_fast
MODES = sf.ops.common.PADDING_MODE_NAMES  # name -> kernel code
# (atol relative to the largest reference value, rtol) per dtype; half dtypes are checked by the
# half-precision rule (stylize_fast.testing.assert_half_close).
TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (1e-5, 1e-5)}


@pytest.fixture(autouse=True)
def _library(monkeypatch):
    monkeypatch.setitem(sf.config.options, "conv_algo", "library")


def _params(o, c, kh, kw, dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(o, c, kh, kw, generator=g, dtype=torch.float64) * (c * kh * kw) ** -0.5
    b = torch.randn(o, generator=g, dtype=torch.float64)
    return w.to(dtype), b.to(dtype)


def _check(shape, o, kernel, stride, padding, mode, dtype=torch.float32, layout="contiguous",
           mask=(True, True, True)):
    kh, kw = kernel
    x = make_input(shape, dtype, layout, requires_grad=True)
    w, b = _params(o, shape[1], kh, kw, dtype)
    w.requires_grad_(True)
    b.requires_grad_(True)
    for part in ({}, {"input_grad": True}, {"weight_grad": True}):
        assert padded_conv.cpu_algorithm(x, w, stride, padding, MODES[mode], **part) == "library"
    with poisoned_outputs():
        y = ops.padded_conv2d_fwd(x, w, b, list(stride), list(padding), MODES[mode])
    assert_all_written(y)
    x64, w64, b64 = (t.detach().double().requires_grad_(True) for t in (x, w, b))
    ph, pw = padding
    ref = F.conv2d(F.pad(x64, (pw, pw, ph, ph), mode="constant" if mode == "zeros" else mode),
                   w64, b64, stride=stride)
    atol, rtol = TOL.get(dtype, (None, None))
    gy = torch.randn(ref.shape, generator=torch.Generator().manual_seed(7),
                     dtype=torch.float64).to(dtype)
    half = dtype in (torch.bfloat16, torch.float16)
    if half:  # the half-precision rule: within twice PyTorch's own F.pad + F.conv2d error
        torch_y, torch_grads = pytorch_padded_conv2d_grads(x, w, b, stride, padding, mode, gy)
        assert_half_close(y, ref, terms=shape[1] * kh * kw, baseline=torch_y)
    else:
        assert_close(y, ref, atol=atol * ref.abs().max().item(), rtol=rtol)
    with poisoned_outputs():
        got = ops.padded_conv2d_bwd(gy, x.detach(), w.detach(), list(stride), list(padding),
                                    MODES[mode], list(mask))
    want = torch.autograd.grad(ref, (x64, w64, b64), gy.double())
    for name, requested, a, e in zip(("input", "weight", "bias"), mask, got, want):
        if not requested:
            assert a.numel() == 0
            continue
        assert_all_written(a, name=f"grad_{name}")
        assert a.dtype == dtype and a.shape == e.shape
        if half:
            terms = o * kh * kw if name == "input" else ref[:, 0].numel()
            assert_half_close(a, e, terms=terms, baseline=torch_grads[("input", "weight",
                                                                       "bias").index(name)],
                              name=f"grad_{name}")
        else:
            assert_close(a, e, atol=atol * e.abs().max().item(), rtol=rtol, name=f"grad_{name}")
    return y, got


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("kernel", [(1, 1), (3, 3), (5, 5), (3, 5), (9, 9)], ids=str)
def test_modes_strides_kernels(mode, stride, kernel):
    padding = (kernel[0] // 2 + 1, kernel[1] // 2) if kernel != (1, 1) else (1, 1)
    _check((1, 3, 11, 13), 16, kernel, (stride, stride), padding, mode)


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
@pytest.mark.parametrize("shape,kernel,padding", [
    pytest.param((1, 2, 5, 6), (3, 3), (4, 5), id="pad=size-1"),
    pytest.param((3, 4, 7, 9), (3, 3), (2, 0), id="rows-only"),
    pytest.param((3, 4, 1, 9), (1, 3), (0, 1), id="one-row"),
    pytest.param((2, 5, 12, 8), (2, 4), (1, 3), id="even-kernel"),
])
def test_borders(mode, shape, kernel, padding):
    _check(shape, 12, kernel, (1, 1), padding, mode)
    _check(shape, 12, kernel, (2, 1), padding, mode)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64],
                         ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("stride", [1, 2])
def test_dtypes_and_layouts(dtype, layout, stride):
    _check((2, 16, 13, 11), 24, (3, 3), (stride, stride), (1, 1), "reflect", dtype, layout)


def test_several_chunks_and_samples_split_across_them():
    # 64 channels x 9 x 9 = 5184 patch values: ~200 pixels per 4 MB chunk against ~580 border
    # pixels per sample.
    _check((2, 64, 40, 38), 9, (9, 9), (1, 1), (4, 4), "reflect", layout="channels_last")


@pytest.mark.parametrize("mask", [(True, False, False), (False, True, False), (False, False, True),
                                  (True, True, False), (False, True, True)], ids=str)
def test_output_masks(mask):
    _check((2, 6, 10, 9), 16, (3, 3), (2, 2), (1, 1), "reflect", mask=mask)


def test_deterministic():
    # Two runs give the same bits (the fold has no atomics). Across thread counts the output
    # and the input gradient keep their bits; the weight gradient is a reduction oneDNN splits
    # by thread count, so only its value is compared there.
    x = make_input((3, 8, 33, 30), layout="channels_last")
    w, b = _params(16, 8, 3, 3, torch.float32)
    gy = torch.randn(3, 16, 17, 15).contiguous(memory_format=torch.channels_last)
    threads = torch.get_num_threads()
    results = []
    try:
        for t in (2, 2, 1, 3):
            torch.set_num_threads(t)
            y = ops.padded_conv2d_fwd(x, w, b, [2, 2], [1, 1], 1)
            results.append((y, *ops.padded_conv2d_bwd(gy, x, w, [2, 2], [1, 1], 1,
                                                      [True, True, True])))
    finally:
        torch.set_num_threads(threads)
    for a, e in zip(results[1], results[0]):
        assert torch.equal(a, e)
    for r in results[2:]:
        assert torch.equal(r[0], results[0][0]) and torch.equal(r[1], results[0][1])
        assert_close(r[2], results[0][2], atol=1e-5 * r[2].abs().max().item(), rtol=1e-5)
