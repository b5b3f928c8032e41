"""The references every kernel test trusts (stylize_fast/ops/*_reference.py), checked against
independent formulas and PyTorch's own modules -- so that a wrong reference cannot make a wrong
kernel pass. Kernels are compared with the references elsewhere (test_instance_norm*.py,
test_padded_conv*.py); the reference backend is not compared with itself there."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stylize_fast.ops import instance_norm_reference, padded_conv_reference
from stylize_fast.ops.common import Activation, PaddingMode
from stylize_fast.testing import assert_close, assert_half_close, make_input

F64 = dict(atol=1e-12, rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# Instance norm


def _instance_norm_by_hand(x, w, b, eps, activation, slope):
    """Per (n, c) plane, in float64 and by definition: (x - mean) / sqrt(biased var + eps),
    times w, plus b ((C,) or per-sample (N, C)), then the activation by its formula."""
    x = x.double()
    n, c, h, wd = x.shape
    y = torch.empty_like(x)
    for i in range(n):
        for j in range(c):
            plane = x[i, j]
            mean = plane.sum() / (h * wd)
            var = ((plane - mean) ** 2).sum() / (h * wd)
            z = (plane - mean) / torch.sqrt(var + eps)
            if w is not None:
                z = z * (w[i, j] if w.dim() == 2 else w[j]).double()
            if b is not None:
                z = z + (b[i, j] if b.dim() == 2 else b[j]).double()
            if activation == Activation.RELU:
                z = torch.where(z > 0, z, torch.zeros_like(z))
            elif activation == Activation.LEAKY_RELU:
                z = torch.where(z > 0, z, z * slope)
            y[i, j] = z
    return y


def _affine(kind, n, c, dtype=torch.float64, seed=2):
    g = torch.Generator().manual_seed(seed)
    shape = (n, c) if kind == "sample" else (c,)
    w = (torch.rand(shape, generator=g, dtype=torch.float64) + 0.5).to(dtype)
    b = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    return (None, None) if kind == "none" else (w, b)


@pytest.mark.parametrize("affine", ["none", "channel", "sample"])
@pytest.mark.parametrize("activation", list(Activation), ids=lambda a: a.name.lower())
def test_instance_norm_reference_matches_formula_float64(affine, activation):
    x = make_input((3, 4, 5, 7), torch.float64, mean=1.5)
    w, b = _affine(affine, 3, 4)
    y, mean, rstd = instance_norm_reference.instance_norm_forward(x, w, b, 1e-3, activation, 0.2)
    assert_close(y, _instance_norm_by_hand(x, w, b, 1e-3, activation, 0.2), **F64)
    assert_close(mean, x.mean(dim=(2, 3)), **F64, name="mean")
    assert_close(rstd, 1 / (x.var(dim=(2, 3), unbiased=False) + 1e-3).sqrt(), **F64,
                 name="rstd")


@pytest.mark.parametrize("affine", ["none", "channel", "sample"])
def test_instance_norm_reference_gradients_match_formula(affine):
    # Autograd of the reference (what every gradient test compares with) against autograd of the
    # by-hand formula.
    x = make_input((2, 3, 4, 5), torch.float64, requires_grad=True)
    w, b = (t.requires_grad_() if t is not None else None for t in _affine(affine, 2, 3))
    leaves = [t for t in (x, w, b) if t is not None]
    gy = make_input(x.shape, torch.float64, mean=0.0, generator=torch.Generator().manual_seed(4))
    got = torch.autograd.grad(instance_norm_reference.instance_norm_forward(
        x, w, b, 1e-5, Activation.LEAKY_RELU, 0.1)[0], leaves, gy)
    want = torch.autograd.grad(_instance_norm_by_hand(x, w, b, 1e-5, Activation.LEAKY_RELU, 0.1),
                               leaves, gy)
    for a, e in zip(got, want):
        assert_close(a, e, **F64, name="gradient")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_instance_norm_reference_matches_nn_module(dtype):
    # nn.InstanceNorm2d (per-channel affine) in the same dtype. The reference accumulates in
    # float32 and rounds once: as accurate as PyTorch's own module (half-precision rule).
    x = make_input((2, 5, 6, 7), dtype)
    module = nn.InstanceNorm2d(5, affine=True, eps=1e-5).to(dtype)
    w, b = _affine("channel", 2, 5)
    with torch.no_grad():
        module.weight.copy_(w)
        module.bias.copy_(b)
    y = instance_norm_reference.instance_norm_forward(x, w.float(), b.float(), 1e-5,
                                                      Activation.NONE, 0.0)[0]
    exact = _instance_norm_by_hand(x, module.weight.double(), module.bias.double(), 1e-5,
                                   Activation.NONE, 0.0)
    expected = module(x)
    assert y.dtype == dtype
    if dtype == torch.float32:
        assert_close(y, expected, atol=1e-5, rtol=1e-5)
        assert_close(y, exact, atol=1e-5, rtol=1e-5)
    else:
        assert_half_close(y, exact, terms=42, baseline=expected)


def test_instance_norm_reference_per_sample_affine_matches_module_then_affine():
    # The (N, C) weight / bias: nn.InstanceNorm2d without affine, then a per-sample scale / shift.
    x = make_input((3, 4, 5, 6), torch.float64)
    w, b = _affine("sample", 3, 4)
    y = instance_norm_reference.instance_norm_forward(x, w, b, 1e-5, Activation.RELU, 0.0)[0]
    z = nn.InstanceNorm2d(4, affine=False, eps=1e-5)(x)
    assert_close(y, torch.relu(z * w[:, :, None, None] + b[:, :, None, None]), **F64)


def test_instance_norm_reference_eval_matches_nn_module():
    x = make_input((2, 4, 5, 6), torch.float64)
    module = nn.InstanceNorm2d(4, affine=True, track_running_stats=True).double()
    with torch.no_grad():
        module.running_mean.copy_(torch.randn(4, dtype=torch.float64))
        module.running_var.copy_(torch.rand(4, dtype=torch.float64) + 0.5)
        module.weight.copy_(torch.rand(4, dtype=torch.float64) + 0.5)
        module.bias.copy_(torch.randn(4, dtype=torch.float64))
    module.eval()
    y = instance_norm_reference.instance_norm_eval(x, module.running_mean, module.running_var,
                                                   module.weight, module.bias, module.eps,
                                                   Activation.LEAKY_RELU, 0.3)
    assert_close(y, torch.nn.functional.leaky_relu(module(x), 0.3), **F64)


# ---------------------------------------------------------------------------------------------
# Padded convolution


def _source_indices(size, pad, mode):
    """Source index of each padded coordinate, from the definitions: reflect mirrors about the
    edge pixel (not repeating it), replicate repeats the edge pixel, zeros has none (-1)."""
    out = []
    for i in range(-pad, size + pad):
        if 0 <= i < size:
            out.append(i)
        elif mode == PaddingMode.ZEROS:
            out.append(-1)
        elif mode == PaddingMode.REPLICATE:
            out.append(0 if i < 0 else size - 1)
        else:
            out.append(-i if i < 0 else 2 * (size - 1) - i)
    return out


def _padded_conv_by_hand(x, w, b, stride, padding, mode):
    """Pad by explicit index lists, then the convolution as a sum over kernel taps of strided
    slices times the weight (einsum), all in float64."""
    x = x.double()
    rows = _source_indices(x.shape[2], padding[0], mode)
    cols = _source_indices(x.shape[3], padding[1], mode)
    xz = torch.cat([x, torch.zeros_like(x[:, :, :1])], 2)  # index -1 reads a zero row
    xz = torch.cat([xz, torch.zeros_like(xz[:, :, :, :1])], 3)
    xp = xz[:, :, rows][:, :, :, cols]
    kh, kw = w.shape[2:]
    ho = (xp.shape[2] - kh) // stride[0] + 1
    wo = (xp.shape[3] - kw) // stride[1] + 1
    y = torch.zeros(x.shape[0], w.shape[0], ho, wo, dtype=torch.float64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + stride[0] * (ho - 1) + 1:stride[0],
                       j:j + stride[1] * (wo - 1) + 1:stride[1]]
            y = y + torch.einsum("nchw,oc->nohw", patch, w[:, :, i, j].double())
    if b is not None:
        y = y + b.double()[None, :, None, None]
    return y


@pytest.mark.parametrize("mode", list(PaddingMode), ids=lambda m: m.name.lower())
@pytest.mark.parametrize("stride,kernel,padding", [((1, 1), (3, 3), (1, 1)),
                                                   ((2, 1), (3, 5), (2, 1)),
                                                   ((2, 2), (9, 9), (4, 4)),
                                                   ((1, 2), (1, 1), (1, 0))])
def test_padded_conv_reference_matches_formula(mode, stride, kernel, padding):
    x = make_input((2, 3, 6, 7), torch.float64, requires_grad=True)
    w = make_input((4, 3, *kernel), torch.float64, mean=0.0, std=0.3, requires_grad=True)
    b = make_input((4,), torch.float64, requires_grad=True)
    y = padded_conv_reference.padded_conv2d_forward(x, w, b, stride, padding, mode)
    want = _padded_conv_by_hand(x, w, b, stride, padding, mode)
    assert_close(y, want, **F64)
    gy = make_input(y.shape, torch.float64, mean=0.0)
    for a, e in zip(torch.autograd.grad(y, (x, w, b), gy), torch.autograd.grad(want, (x, w, b),
                                                                                gy)):
        assert_close(a, e, **F64, name="gradient")


def test_padding_index_map_by_example():
    # The definitions above, spelled out on a 4-pixel row padded by 2 / 3.
    assert _source_indices(4, 2, PaddingMode.REFLECT) == [2, 1, 0, 1, 2, 3, 2, 1]
    assert _source_indices(4, 3, PaddingMode.REPLICATE) == [0, 0, 0, 0, 1, 2, 3, 3, 3, 3]
    assert _source_indices(4, 1, PaddingMode.ZEROS) == [-1, 0, 1, 2, 3, -1]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_padded_conv_reference_half_matches_formula(dtype):
    # The reference run in a half dtype (the fallback backend) is as accurate as F.pad + F.conv2d
    # on the same inputs -- it is that pair -- and within the half-precision rule of float64.
    x = make_input((2, 6, 9, 8), dtype)
    w = make_input((5, 6, 3, 3), dtype, mean=0.0, std=0.2)
    y = padded_conv_reference.padded_conv2d_forward(x, w, None, (1, 1), (1, 1),
                                                    PaddingMode.REFLECT)
    assert y.dtype == dtype
    assert_half_close(y, _padded_conv_by_hand(x, w, None, (1, 1), (1, 1), PaddingMode.REFLECT),
                      terms=6 * 9)
