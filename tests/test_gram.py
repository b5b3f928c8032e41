"""The bfloat16 Gram kernel (stylize_fast.ops.gram, csrc/cpu/gram_cpu.cpp): F F^T of channels-last
bfloat16 features in float32 and its backward M^T F, against float64 on the same bfloat16 values;
every instruction-set level (level 3: AVX512-BF16 dot products); odd channel counts and pixel
counts, several chunks; exact symmetry; the same bits for any thread count; poisoned outputs;
argument errors; opcheck; and the style loss using it under bfloat16 autocast."""

from __future__ import annotations

import pytest
import torch

import stylize_fast as sf
from stylize_fast.ops import gram
from stylize_fast.testing import (
    assert_all_written,
    assert_close,
    assert_half_close,
    poisoned_outputs,
    relative_error,
)
from stylize_fast.training.losses import gram_matrix

pytestmark = pytest.mark.skipif(not gram.available(), reason="the C++ extension is not built")

LEVELS = ["default", "avx2", "avx512", "avx512_bf16"]
# (N, C, H, W): tiny, C past a 64-column tile, odd pixel count over two chunks (C=64: 1024
# pixels a chunk), one pixel, VGG's widest layer.
SHAPES = [(2, 3, 5, 7), (1, 70, 9, 11), (2, 64, 33, 35), (3, 17, 1, 1), (1, 512, 8, 8)]


def _features(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) + 0.3
    return x.bfloat16().contiguous(memory_format=torch.channels_last)


def _gram64(x):
    n, c = x.shape[:2]
    f = x.double().reshape(n, c, -1)
    return torch.bmm(f, f.transpose(1, 2))


def _supported_levels():
    with sf.config.override(cpu_isa=None):
        best = torch.ops.stylize_fast.instance_norm_cpu_isa()
    return LEVELS[: LEVELS.index(best) + 1] if best in LEVELS else [best]


@pytest.fixture(params=LEVELS)
def level(request):
    if request.param not in _supported_levels():
        pytest.skip(f"this CPU does not run {request.param}")
    with sf.config.override(cpu_isa=request.param):
        yield request.param


# Products of bfloat16 values are exact in float32: what is left is float32 summation, a few
# units of 2^-24 times the square root of the terms, relative to the largest value.
def _sum_tolerance(terms):
    return 8 * 2.0 ** -24 * max(1, terms) ** 0.5


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_is_the_float32_gram(level, shape):
    x = _features(shape)
    g = torch.ops.stylize_fast.gram_bf16(x)
    assert g.dtype == torch.float32 and g.shape == (shape[0], shape[1], shape[1])
    want = _gram64(x)
    err = relative_error(g, want)
    assert err <= _sum_tolerance(shape[2] * shape[3]), err
    assert torch.equal(g, g.transpose(1, 2)), "not exactly symmetric"


def test_forward_tolerance_has_teeth():
    """A Gram rounded to bfloat16 (what torch's bfloat16 bmm returns), or one product dropped,
    fails the float32 bound above."""
    x = _features((2, 64, 33, 35))
    want = _gram64(x)
    tol = _sum_tolerance(33 * 35)
    assert relative_error(want.bfloat16(), want) > tol
    dropped = want - torch.einsum("nc,nd->ncd", x[:, :, 0, 0].double(), x[:, :, 0, 0].double())
    assert relative_error(dropped, want) > tol


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_backward(level, shape):
    """grad = M^T F rounded to bfloat16 once: the half-precision rule against float64 on the same
    values, and no worse than twice the float32-then-round path."""
    n, c = shape[:2]
    x = _features(shape)
    g = torch.Generator().manual_seed(1)
    m = torch.randn(n, c, c, generator=g)
    m = m + m.transpose(1, 2)
    with poisoned_outputs():
        d = torch.ops.stylize_fast.gram_bf16_backward(m, x)
    assert_all_written(d, "grad")
    assert d.dtype == torch.bfloat16 and d.is_contiguous(memory_format=torch.channels_last)
    want = torch.einsum("ncj,nchw->njhw", m.double(), x.double())
    baseline = torch.einsum("ncj,nchw->njhw", m, x.float()).bfloat16()
    assert_half_close(d, want, terms=c, baseline=baseline, name="grad")
    with pytest.raises(AssertionError):
        assert_half_close(d, want * 1.05, terms=c, baseline=baseline, name="grad")


def test_same_bits_for_any_thread_count():
    x = _features((4, 128, 12, 13))
    m = torch.randn(4, 128, 128)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = torch.ops.stylize_fast.gram_bf16(x), torch.ops.stylize_fast.gram_bf16_backward(m, x)
        torch.set_num_threads(max(2, threads))
        many = torch.ops.stylize_fast.gram_bf16(x), torch.ops.stylize_fast.gram_bf16_backward(m, x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], many[0]) and torch.equal(one[1], many[1])


def test_errors():
    x = _features((1, 4, 3, 3))
    with pytest.raises(RuntimeError, match="bfloat16"):
        torch.ops.stylize_fast.gram_bf16(x.float())
    with pytest.raises(RuntimeError, match="channels-last"):
        torch.ops.stylize_fast.gram_bf16(x.contiguous())
    with pytest.raises(RuntimeError, match="4 dimensions"):
        torch.ops.stylize_fast.gram_bf16(x[0])
    with pytest.raises(RuntimeError, match="m must be a float32"):
        torch.ops.stylize_fast.gram_bf16_backward(torch.zeros(1, 4, 5), x)
    with pytest.raises(ValueError, match="channels-last contiguous bfloat16"):
        gram.gram(x.float())
    assert not gram.supported(x.contiguous()) and gram.supported(x)


def test_opcheck():
    x = _features((2, 5, 3, 4))
    torch.library.opcheck(torch.ops.stylize_fast.gram_bf16.default, (x,))
    m = torch.randn(2, 5, 5)
    torch.library.opcheck(torch.ops.stylize_fast.gram_bf16_backward.default, (m, x))


def test_style_gram_under_autocast_uses_the_kernel():
    """gram_matrix of channels-last bfloat16 features (the loss network under bfloat16
    autocast) runs the kernel, equals the float32 Gram of the same values, and its gradient
    equals the float32 path's rounded to bfloat16."""
    x = _features((2, 64, 10, 9)).requires_grad_()
    with torch.profiler.profile() as prof:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            g = gram_matrix(x)
    assert "stylize_fast::gram_bf16" in {e.name for e in prof.events()}
    assert g.dtype == torch.float32
    xf = x.detach().float().requires_grad_()
    gf = gram_matrix(xf)
    assert_close(g, gf, atol=1e-7, rtol=1e-5)
    up = torch.randn_like(g)
    (dx,) = torch.autograd.grad(g, x, up)
    (dxf,) = torch.autograd.grad(gf, xf, up)
    assert dx.dtype == torch.bfloat16
    assert_half_close(dx, dxf.double(), terms=64, baseline=dxf.bfloat16())


def test_torch_compile():
    x = _features((1, 16, 6, 5))
    fn = torch.compile(lambda t: gram.gram(t, 0.5), backend="eager", fullgraph=True)
    assert_close(fn(x), torch.ops.stylize_fast.gram_bf16(x) * 0.5, atol=0, rtol=0)
